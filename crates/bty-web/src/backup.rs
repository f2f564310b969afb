//! The backup archive: what `bty-lab backup` and bty-web's scheduled
//! backups write, and what `bty-lab restore` and `upgrade`'s rollback read.
//!
//! An archive is a zstd-compressed tar of members followed by
//! [`MANIFEST`], a JSON [`Manifest`] naming every member with its size
//! and sha256. The manifest goes last because its digests are known only
//! once the members are written; [`verify`] therefore reads the whole
//! archive, and it must: a restore trusts nothing it has not checked.
//!
//! Databases are never copied as live files: [`Writer::add_sqlite`] takes
//! a consistent snapshot with SQLite's online backup API inside one read
//! transaction (WAL: the services keep writing meanwhile), in steps so it
//! can report progress. Blobs (withcache's cached images) are not backed
//! up: they are fetched again from their origins on first use.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The archive format this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// The manifest's name inside the archive, always the last member.
pub const MANIFEST: &str = "MANIFEST.json";

/// Pages copied per backup step: small enough for progress on large
/// databases, large enough that the per-step overhead does not matter.
const PAGES_PER_STEP: i32 = 1024;

/// What went wrong reading or writing an archive; the message says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// SQLite failed while taking a snapshot or reading one.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The archive is not one this build can restore: truncated, tampered
    /// with, not a bty backup, or from a newer format.
    #[error("{0}")]
    Refused(String),
}

/// This module's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn sql_err(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
    let what = what.into();
    move |source| Error::Sqlite { what, source }
}

/// The archive's table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// When the archive was written (RFC 3339, UTC).
    pub created: String,
    /// The bty version that wrote it.
    pub bty_version: String,
    /// Who wrote it: `bty-lab backup`, `bty-lab upgrade`, `bty-web` (a
    /// scheduled backup).
    pub made_by: String,
    /// Every member but the manifest, in archive order.
    pub members: Vec<Member>,
}

impl Manifest {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its relative path in the archive (`/`-separated, no `..`).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Its length in bytes.
    pub size: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// What a member holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Kind {
    /// A SQLite database snapshot at this `PRAGMA user_version`.
    Sqlite {
        /// Its schema version.
        schema: u32,
    },
    /// A plain file (configuration, envvars).
    File,
}

/// Writes an archive to `<out>.partial` (mode 0600: it holds password
/// hashes and secrets) and renames it to `out` in [`Writer::finish`]; a
/// writer dropped before that removes the partial file.
pub struct Writer {
    out: PathBuf,
    partial: PathBuf,
    tar: Option<tar::Builder<zstd::Encoder<'static, BufWriter<File>>>>,
    made_by: String,
    members: Vec<Member>,
}

impl Writer {
    /// Start an archive at `out`; `made_by` goes into the manifest.
    pub fn create(out: &Path, made_by: &str) -> Result<Writer> {
        let partial = partial_path(out);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_err(format!("creating {}", partial.display())))?;
        // The mode only applies to a new file; an old partial kept its own.
        fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(io_err(format!("restricting {}", partial.display())))?;
        let zst = zstd::Encoder::new(BufWriter::new(file), 3)
            .map_err(io_err("starting zstd compression"))?;
        let mut tar = tar::Builder::new(zst);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Writer {
            out: out.to_owned(),
            partial,
            tar: Some(tar),
            made_by: made_by.to_owned(),
            members: Vec::new(),
        })
    }

    /// Add a consistent snapshot of the SQLite database at `db` (which may
    /// be in use) as `name`. `progress(done, total)` is called in pages
    /// while it copies. `scratch` is a directory for the snapshot before it
    /// goes into the archive (the archive's own directory will do).
    pub fn add_sqlite(
        &mut self,
        name: &str,
        db: &Path,
        scratch: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let snap = tempfile::Builder::new()
            .prefix(".bty-snapshot-")
            .tempfile_in(scratch)
            .map_err(io_err(format!(
                "creating a snapshot file in {}",
                scratch.display()
            )))?;
        snapshot_sqlite(db, snap.path(), progress)?;
        let schema = sqlite_schema(snap.path())?;
        self.add(name, Kind::Sqlite { schema }, snap.path())
    }

    /// Add the file at `path` as `name`.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<()> {
        self.add(name, Kind::File, path)
    }

    fn add(&mut self, name: &str, kind: Kind, path: &Path) -> Result<()> {
        check_name(name)?;
        if self.members.iter().any(|m| m.name == name) {
            return Err(Error::Refused(format!("{name} is in the archive twice")));
        }
        let mut file = File::open(path).map_err(io_err(format!("reading {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(io_err(format!("reading {}", path.display())))?
            .len();
        let mut reader = Hashing::new(&mut file);
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar()?
            .append_data(&mut header, name, (&mut reader).take(size))
            .map_err(io_err(format!("writing {name} into the archive")))?;
        if reader.len != size {
            return Err(Error::Refused(format!(
                "{} changed size while it was archived; run the backup again",
                path.display()
            )));
        }
        self.members.push(Member {
            name: name.to_owned(),
            kind,
            size,
            sha256: reader.hex(),
        });
        Ok(())
    }

    fn tar(&mut self) -> Result<&mut tar::Builder<zstd::Encoder<'static, BufWriter<File>>>> {
        self.tar
            .as_mut()
            .ok_or_else(|| Error::Refused("the archive is already finished".into()))
    }

    /// Write the manifest, flush everything to disk and move the archive
    /// to its name. Returns the manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        let manifest = Manifest {
            format: FORMAT,
            created: now(),
            bty_version: env!("CARGO_PKG_VERSION").to_owned(),
            made_by: self.made_by.clone(),
            members: std::mem::take(&mut self.members),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Refused(format!("encoding the manifest: {e}")))?;
        let mut tar = self
            .tar
            .take()
            .ok_or_else(|| Error::Refused("the archive is already finished".into()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, MANIFEST, json.as_slice())
            .map_err(io_err("writing the manifest"))?;
        let zst = tar.into_inner().map_err(io_err("finishing the archive"))?;
        let buf = zst.finish().map_err(io_err("finishing zstd compression"))?;
        let file = buf
            .into_inner()
            .map_err(|e| io_err("flushing the archive")(e.into_error()))?;
        file.sync_all()
            .map_err(io_err(format!("syncing {}", self.partial.display())))?;
        fs::rename(&self.partial, &self.out).map_err(io_err(format!(
            "moving the archive to {}",
            self.out.display()
        )))?;
        if let Some(dir) = self.out.parent() {
            // The rename is durable once the directory is synced.
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(manifest)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.tar.is_some() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

/// RFC 3339 UTC, like every timestamp bty stores.
fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Copy the SQLite database at `src` (possibly in use by other processes)
/// to a new database at `dest`, consistently: the copy runs inside one
/// read transaction on `src`, so writers carry on (WAL) and the copy is
/// the database as of its start. `progress(done, total)` in pages.
pub fn snapshot_sqlite(src: &Path, dest: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    use rusqlite::OpenFlags;
    if !src.is_file() {
        return Err(Error::Refused(format!(
            "{} does not exist: is this the right directory?",
            src.display()
        )));
    }
    let from = rusqlite::Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(format!("opening {}", src.display())))?;
    from.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql_err("setting a busy timeout"))?;
    // The read transaction pins one snapshot for every step below; without
    // it each step would see a newer database and the copy would restart.
    from.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .map_err(sql_err(format!(
            "starting a read transaction on {}",
            src.display()
        )))?;
    let mut to = rusqlite::Connection::open(dest)
        .map_err(sql_err(format!("creating {}", dest.display())))?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to)
            .map_err(sql_err(format!("starting the backup of {}", src.display())))?;
        loop {
            let step = backup
                .step(PAGES_PER_STEP)
                .map_err(sql_err(format!("copying {}", src.display())))?;
            let p = backup.progress();
            let total = u64::try_from(p.pagecount).unwrap_or(0);
            let left = u64::try_from(p.remaining).unwrap_or(0);
            progress(total.saturating_sub(left), total);
            match step {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More => {}
                // Busy/locked: the source is not ours to block; try again.
                _ => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
    from.execute_batch("COMMIT")
        .map_err(sql_err("ending the read transaction"))?;
    // A snapshot stands alone: no WAL beside it.
    to.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sql_err(format!("finishing {}", dest.display())))?;
    let ok: String = to
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql_err(format!("checking {}", dest.display())))?;
    if ok != "ok" {
        return Err(Error::Refused(format!(
            "the snapshot of {} fails SQLite's check ({ok}); the database itself may be damaged",
            src.display()
        )));
    }
    Ok(())
}

/// The `PRAGMA user_version` of the SQLite database at `path`.
pub fn sqlite_schema(path: &Path) -> Result<u32> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql_err(format!("opening {}", path.display())))?;
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err(format!(
            "reading the schema version of {}",
            path.display()
        )))
}

/// Check the archive at `archive` and extract it into `into` (an empty
/// directory): every member must be named by the manifest with its size
/// and sha256, nothing else may be there, and the format must be one this
/// build reads. On error `into` may hold partial files; the caller owns
/// (and removes) it. Nothing outside `into` is written.
pub fn verify(archive: &Path, into: &Path) -> Result<Manifest> {
    let (seen, manifest) = extract(archive, into)?;
    let manifest = manifest.ok_or_else(|| {
        Error::Refused(format!(
            "{} has no manifest: it is truncated or not a bty backup; nothing was changed",
            archive.display()
        ))
    })?;
    if manifest.format > FORMAT {
        return Err(Error::Refused(format!(
            "{} is format {} from bty {}; this bty reads format {FORMAT}: restore it with bty {} or newer",
            archive.display(),
            manifest.format,
            manifest.bty_version,
            manifest.bty_version
        )));
    }
    for m in &manifest.members {
        let Some((_, len, sha)) = seen.iter().find(|(n, ..)| *n == m.name) else {
            return Err(Error::Refused(format!(
                "{}: {} is in the manifest but not in the archive; nothing was changed",
                archive.display(),
                m.name
            )));
        };
        if *len != m.size || *sha != m.sha256 {
            return Err(Error::Refused(format!(
                "{}: {} does not match its manifest entry (sha256 {sha}, expected {}): the archive was altered; nothing was changed",
                archive.display(),
                m.name,
                m.sha256
            )));
        }
    }
    if let Some((extra, ..)) = seen.iter().find(|(n, ..)| manifest.member(n).is_none()) {
        return Err(Error::Refused(format!(
            "{}: {extra} is not in the manifest: the archive was altered; nothing was changed",
            archive.display()
        )));
    }
    Ok(manifest)
}

/// A member as extracted: its name, length and sha256.
type Seen = (String, u64, String);

/// Extract every member of `archive` into `into`, hashing each; the
/// manifest if one came last.
fn extract(archive: &Path, into: &Path) -> Result<(Vec<Seen>, Option<Manifest>)> {
    let file = File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let damaged = |e: io::Error| {
        Error::Refused(format!(
            "{} is truncated or damaged ({e}); nothing was changed",
            archive.display()
        ))
    };
    let zst = zstd::Decoder::new(file).map_err(damaged)?;
    let mut tar = tar::Archive::new(zst);
    let mut seen: Vec<Seen> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::Refused(format!("{}: a member name is not UTF-8", archive.display()))
            })?;
        if manifest.is_some() {
            return Err(Error::Refused(format!(
                "{}: {name} follows the manifest; this is not an archive bty wrote",
                archive.display()
            )));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::Refused(format!(
                "{}: {name} is not a regular file; this is not an archive bty wrote",
                archive.display()
            )));
        }
        if name == MANIFEST {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(damaged)?;
            let m: Manifest = serde_json::from_slice(&json).map_err(|e| {
                Error::Refused(format!(
                    "{}: the manifest is not readable: {e}",
                    archive.display()
                ))
            })?;
            manifest = Some(m);
            continue;
        }
        check_name(&name)?;
        if seen.iter().any(|(n, ..)| *n == name) {
            return Err(Error::Refused(format!(
                "{}: {name} is in it twice",
                archive.display()
            )));
        }
        let dest = into.join(&name);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io_err(format!("creating {}", dest.display())))?;
        let mut reader = Hashing::new(&mut entry);
        io::copy(&mut reader, &mut out).map_err(damaged)?;
        out.sync_all()
            .map_err(io_err(format!("syncing {}", dest.display())))?;
        seen.push((name, reader.len, reader.hex()));
    }
    Ok((seen, manifest))
}

/// A member name must stay inside the directory it is extracted to.
fn check_name(name: &str) -> Result<()> {
    let p = Path::new(name);
    let ok = !name.is_empty()
        && name != MANIFEST
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{name:?} is not a member name bty writes; this is not an archive bty wrote"
        )))
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    len: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    fn hex(&self) -> String {
        hex::encode(self.sha.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        self.sha.update(got);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn db_with_rows(path: &Path, rows: u32) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA user_version = 7;
             CREATE TABLE t (n INTEGER, pad TEXT);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for n in 0..rows {
            tx.execute("INSERT INTO t VALUES (?1, ?2)", (n, "x".repeat(200)))
                .unwrap();
        }
        tx.commit().unwrap();
        c
    }

    fn archive(dir: &Path) -> PathBuf {
        let db = dir.join("state.db");
        let _keep = db_with_rows(&db, 5000);
        fs::write(dir.join("bty.toml"), "[server]\n").unwrap();
        let out = dir.join("backup.tar.zst");
        let mut w = Writer::create(&out, "test").unwrap();
        w.add_sqlite("bty/state.db", &db, dir, &mut |_, _| {})
            .unwrap();
        w.add_file("bty.toml", &dir.join("bty.toml")).unwrap();
        w.finish().unwrap();
        out
    }

    /// An archive written by hand, for what [`Writer`] never writes.
    fn craft(out: &Path, entries: &[(&str, &[u8])]) {
        let zst = zstd::Encoder::new(File::create(out).unwrap(), 1).unwrap();
        let mut tar = tar::Builder::new(zst);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name as a hostile tool would.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    fn manifest_for(members: &[(&str, &[u8])], format: u32) -> Vec<u8> {
        let m = Manifest {
            format,
            created: now(),
            bty_version: "9.9.9".into(),
            made_by: "test".into(),
            members: members
                .iter()
                .map(|(n, d)| Member {
                    name: (*n).into(),
                    kind: Kind::File,
                    size: d.len() as u64,
                    sha256: hex::encode(Sha256::digest(d)),
                })
                .collect(),
        };
        serde_json::to_vec(&m).unwrap()
    }

    fn refused(archive: &Path) -> String {
        let into = tempfile::tempdir().unwrap();
        match verify(archive, into.path()) {
            Err(Error::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_archive_round_trips_with_digests_schema_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let out = archive(dir.path());
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!partial_path(&out).exists());
        let into = tempfile::tempdir().unwrap();
        let m = verify(&out, into.path()).unwrap();
        assert_eq!(m.format, FORMAT);
        assert_eq!(m.made_by, "test");
        let names: Vec<_> = m.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["bty/state.db", "bty.toml"]);
        assert_eq!(m.members[0].kind, Kind::Sqlite { schema: 7 });
        let restored = into.path().join("bty/state.db");
        let c = rusqlite::Connection::open(&restored).unwrap();
        let n: u32 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5000);
        assert_eq!(
            fs::read(into.path().join("bty.toml")).unwrap(),
            b"[server]\n"
        );
        assert_eq!(
            m.members[1].sha256,
            hex::encode(Sha256::digest(b"[server]\n"))
        );
    }

    #[test]
    fn a_snapshot_under_constant_writes_is_consistent_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        drop(db_with_rows(&db, 20_000));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(&db).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                let mut writes = 0u32;
                // Two rows per transaction: a torn copy would hold an odd count.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.execute_batch(
                        "BEGIN; INSERT INTO t VALUES (-1, 'a'); INSERT INTO t VALUES (-2, 'b'); COMMIT;",
                    )
                    .unwrap();
                    writes += 1;
                }
                writes
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        let snap = dir.path().join("snap.db");
        let mut calls = Vec::new();
        snapshot_sqlite(&db, &snap, &mut |d, t| calls.push((d, t))).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0, "the writer never wrote");
        assert!(calls.len() > 1, "{calls:?}");
        let (done, total) = *calls.last().unwrap();
        assert_eq!(done, total);
        let c = rusqlite::Connection::open(&snap).unwrap();
        let n: u32 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert!(n >= 20_000 && n % 2 == 0, "{n}");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }

    #[test]
    fn a_missing_database_is_refused_and_a_dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.tar.zst");
        let mut w = Writer::create(&out, "test").unwrap();
        let e = w
            .add_sqlite(
                "bty/state.db",
                &dir.path().join("nope.db"),
                dir.path(),
                &mut |_, _| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(partial_path(&out).exists());
        drop(w);
        assert!(!partial_path(&out).exists());
        assert!(!out.exists());
    }

    #[test]
    fn truncated_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = archive(dir.path());
        let whole = fs::read(&out).unwrap();
        for keep in [whole.len() - 10, whole.len() / 2, 100, 0] {
            let cut = dir.path().join(format!("cut-{keep}"));
            fs::write(&cut, &whole[..keep]).unwrap();
            let why = refused(&cut);
            assert!(
                why.contains("truncated") || why.contains("damaged"),
                "{keep}: {why}"
            );
        }
    }

    #[test]
    fn a_tampered_member_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let good: &[(&str, &[u8])] = &[("bty.toml", b"[server]\n")];
        let out = dir.path().join("t.tar.zst");
        craft(
            &out,
            &[
                ("bty.toml", b"[server]\nevil = 1\n"),
                (MANIFEST, &manifest_for(good, 1)),
            ],
        );
        let why = refused(&out);
        assert!(why.contains("bty.toml") && why.contains("altered"), "{why}");
        // The same bytes with an honest manifest are fine.
        craft(
            &out,
            &[
                ("bty.toml", b"[server]\n"),
                (MANIFEST, &manifest_for(good, 1)),
            ],
        );
        let into = tempfile::tempdir().unwrap();
        verify(&out, into.path()).unwrap();
    }

    #[test]
    fn extra_missing_escaping_and_newer_format_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a: &[(&str, &[u8])] = &[("a", b"1")];
        let out = dir.path().join("x.tar.zst");
        craft(
            &out,
            &[("a", b"1"), ("b", b"2"), (MANIFEST, &manifest_for(a, 1))],
        );
        assert!(refused(&out).contains("b is not in the manifest"));
        craft(&out, &[(MANIFEST, &manifest_for(a, 1))]);
        assert!(refused(&out).contains("a is in the manifest but not in the archive"));
        craft(&out, &[("../evil", b"1"), (MANIFEST, &manifest_for(a, 1))]);
        assert!(refused(&out).contains("not a member name"));
        assert!(!dir.path().join("evil").exists());
        craft(
            &out,
            &[("a", b"1"), (MANIFEST, &manifest_for(a, FORMAT + 1))],
        );
        let why = refused(&out);
        assert!(why.contains("9.9.9") && why.contains("format"), "{why}");
        craft(&out, &[("a", b"1")]);
        assert!(refused(&out).contains("no manifest"));
        let mut f = File::create(&out).unwrap();
        f.write_all(b"not an archive at all").unwrap();
        assert!(refused(&out).contains("damaged"));
    }
}
