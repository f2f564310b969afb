//! Scheduled backups: bty-web snapshots its own SQLite database (and the
//! `bty.toml` it was started with) into [`crate::backup`] archives every
//! `[backup] every`, keeps the newest `[backup] keep`, and lists them for
//! the Settings page and `GET /api/backups`. No cron needed.
//!
//! Archives are `bty-YYYYMMDDTHHMMSSZ.tar.zst` in `[backup] dir` (created
//! 0700; archives are 0600), with the members `bty-lab backup` writes, so
//! `bty-lab restore` takes either. Pruning and listing only ever look at
//! names of exactly that pattern: other files in the directory are left
//! alone and never served.
//!
//! On PostgreSQL the schedule is off: the archive holds SQLite snapshots,
//! and the database has its own tool (`pg_dump`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::backup;
use crate::config::Config;
use crate::domain::Domain;
use crate::metrics::Metrics;

/// `made_by` in the manifest of a scheduled (or "back up now") archive.
pub const MADE_BY: &str = "bty-web";
/// The database's member name, as `bty-lab backup` names it.
pub const DB_MEMBER: &str = "bty/state.db";
/// The configuration file's member name, as `bty-lab backup` names it.
pub const CONFIG_MEMBER: &str = "bty.toml";
/// Why there is no schedule on PostgreSQL (shown on the Settings page).
pub const POSTGRES_OFF: &str =
    "PostgreSQL: back up with pg_dump (bty-web's archives are SQLite snapshots)";

const PREFIX: &str = "bty-";
const SUFFIX: &str = ".tar.zst";
/// `YYYYMMDDTHHMMSSZ`.
const STAMP: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
/// With no archive yet, the first one is made this soon after start (or
/// one interval, if shorter): a server restarted more often than `every`
/// still gets backed up, and a short-lived one (a test) writes nothing.
const FIRST_GRACE: Duration = Duration::from_secs(60);

/// What went wrong making or reading a backup; the message says what to
/// do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// bty-web makes no archives here: its database is PostgreSQL.
    /// (`every = "off"` only stops the schedule; "back up now" still works.)
    #[error("{0}")]
    Off(String),
    /// The configuration makes backing up unsafe; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The archive could not be written.
    #[error("{0}")]
    Archive(#[from] backup::Error),
    /// The backup directory could not be created or read.
    #[error("{what}: {source}; check that bty-web may write there ([backup] dir)")]
    Dir {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The blocking task died (a panic in the archive code).
    #[error("the backup task failed: {0}")]
    Task(String),
}

/// One archive in the backup directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Archive {
    /// Its file name, `bty-YYYYMMDDTHHMMSSZ.tar.zst`.
    pub name: String,
    /// When it was made (RFC 3339, UTC; from its name).
    pub created: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A backup that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Why, and what to do.
    pub reason: String,
}

/// The schedule as configured.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// `[backup] every` as written; `None` when there is no schedule.
    pub every: Option<String>,
    /// Why there is no schedule (`every = "off"`, PostgreSQL).
    pub off: Option<String>,
    /// `[backup] keep`.
    pub keep: u32,
    /// The backup directory.
    pub dir: PathBuf,
}

/// What `GET /api/backups` answers and the Settings page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The schedule.
    pub schedule: Schedule,
    /// The archives, newest first.
    pub archives: Vec<Archive>,
    /// The last backup that failed, unless one succeeded since.
    pub last_failure: Option<Failure>,
    /// When the last backup of this process succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// Why the directory could not be listed, if it could not.
    pub list_error: Option<String>,
}

#[derive(Default)]
struct Status {
    last_failure: Option<Failure>,
    last_success: Option<String>,
}

/// bty-web's backups: the schedule, the directory and what happened last.
pub struct Backups {
    interval: Option<Duration>,
    schedule: Schedule,
    /// `None` on PostgreSQL.
    db_path: Option<PathBuf>,
    config_file: Option<PathBuf>,
    boot_dir: PathBuf,
    status: Mutex<Status>,
    /// One backup at a time (the schedule and "back up now"): names are
    /// per second, and pruning must not race a writer.
    running: tokio::sync::Mutex<()>,
}

impl Backups {
    /// The backups of a bty-web started with `cfg` (already validated);
    /// warns when PostgreSQL turns the schedule off.
    pub fn new(cfg: &Config) -> Backups {
        let interval = cfg.backup.interval().unwrap_or(None);
        let postgres = cfg.server.database.is_some();
        let off = if postgres {
            if interval.is_some() {
                tracing::warn!("[backup] is ignored: {POSTGRES_OFF}");
            }
            Some(POSTGRES_OFF.to_string())
        } else if interval.is_none() {
            Some("[backup] every = \"off\"".to_string())
        } else {
            None
        };
        Backups {
            interval: if postgres { None } else { interval },
            schedule: Schedule {
                every: off.is_none().then(|| cfg.backup.every.trim().to_string()),
                off,
                keep: cfg.backup.keep.max(1),
                dir: cfg.backup_dir(),
            },
            db_path: (!postgres).then(|| cfg.db_path()),
            config_file: cfg.file.clone(),
            boot_dir: cfg.boot_dir(),
            status: Mutex::default(),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The backup directory.
    pub fn dir(&self) -> &Path {
        &self.schedule.dir
    }

    /// The schedule, the archives and the last failure.
    pub fn overview(&self) -> Overview {
        let (archives, list_error) = match self.list() {
            Ok(a) => (a, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let (last_failure, last_success) = match self.status.lock() {
            Ok(s) => (s.last_failure.clone(), s.last_success.clone()),
            Err(_) => (None, None),
        };
        Overview {
            schedule: self.schedule.clone(),
            archives,
            last_failure,
            last_success,
            list_error,
        }
    }

    /// The archives in the directory, newest first (none when it does not
    /// exist yet). Only regular files named like an archive count.
    pub fn list(&self) -> Result<Vec<Archive>, Error> {
        list_dir(self.dir())
    }

    /// The path of the archive called `name`, if it is one [`Backups::list`]
    /// shows (anything else, `../x` included, is `None`).
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        archive_time(name)?;
        let list = self.list().ok()?;
        list.iter()
            .any(|a| a.name == name)
            .then(|| self.dir().join(name))
    }

    /// Make an archive now (waiting for one under way), prune to `keep`,
    /// and record the outcome: a failure is logged, counted, recorded as
    /// a `backup.failed` event and shown until a backup succeeds.
    pub async fn run(&self, domain: &Domain, metrics: &Metrics) -> Result<Archive, Error> {
        let Some(db) = self.db_path.clone() else {
            return Err(Error::Off(POSTGRES_OFF.into()));
        };
        let _one = self.running.lock().await;
        let job = Job {
            db,
            config_file: self.config_file.clone(),
            dir: self.schedule.dir.clone(),
            boot_dir: self.boot_dir.clone(),
            keep: self.schedule.keep,
        };
        let result = tokio::task::spawn_blocking(move || job.make())
            .await
            .unwrap_or_else(|e| Err(Error::Task(e.to_string())));
        let now = time::OffsetDateTime::now_utc();
        match &result {
            Ok(a) => {
                tracing::info!("backup {} written ({} bytes)", a.name, a.size);
                metrics.backups_made.fetch_add(1, Relaxed);
                metrics
                    .backup_last_success
                    .store(u64::try_from(now.unix_timestamp()).unwrap_or(0), Relaxed);
                if let Ok(mut s) = self.status.lock() {
                    s.last_failure = None;
                    s.last_success = Some(rfc3339(now));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!("backup failed: {reason}");
                metrics.backups_failed.fetch_add(1, Relaxed);
                if let Ok(mut s) = self.status.lock() {
                    s.last_failure = Some(Failure {
                        at: rfc3339(now),
                        reason: reason.clone(),
                    });
                }
                let dir = self.schedule.dir.display().to_string();
                if let Err(e) = domain
                    .note(
                        "backup.failed",
                        format!("backup failed: {reason}"),
                        serde_json::json!({"dir": dir, "reason": reason}),
                    )
                    .await
                {
                    tracing::error!("recording the failed backup as an event: {e}");
                }
            }
        }
        result
    }

    /// Run the schedule until `stop` flips; `None` when there is none. A
    /// backup under way when it stops is finished (its partial file would
    /// be removed anyway, but a finished one is worth more).
    pub fn spawn(
        self: &Arc<Self>,
        domain: Domain,
        metrics: Arc<Metrics>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.interval?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut wait = me.first_wait(every);
            loop {
                tracing::debug!("next backup in {wait:?}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                // The error is logged, counted and shown by `run`.
                let _ = me.run(&domain, &metrics).await;
                if *stop.borrow() {
                    return;
                }
                wait = every;
            }
        }))
    }

    /// How long after start the first backup is due: right away when the
    /// newest archive is older than `every` (frequent restarts lose no
    /// backup), when it falls due otherwise, and soon when there is none.
    fn first_wait(&self, every: Duration) -> Duration {
        let newest = self
            .list()
            .ok()
            .and_then(|l| l.first().and_then(|a| archive_time(&a.name)));
        match newest {
            Some(t) => {
                let age = time::OffsetDateTime::now_utc() - t;
                let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
                every.saturating_sub(age)
            }
            None => every.min(FIRST_GRACE),
        }
    }
}

/// One backup, on a blocking thread.
struct Job {
    db: PathBuf,
    config_file: Option<PathBuf>,
    dir: PathBuf,
    boot_dir: PathBuf,
    keep: u32,
}

impl Job {
    fn make(&self) -> Result<Archive, Error> {
        let dir_err = |what: String| move |source| Error::Dir { what, source };
        // `/boot/` serves every file of the boot directory to the LAN:
        // checked before anything is created there.
        if let Ok(boot) = std::fs::canonicalize(&self.boot_dir) {
            let real = resolve(&self.dir);
            if real.starts_with(&boot) {
                return Err(Error::Refused(format!(
                    "[backup] dir {} is in the boot directory {}, which /boot/ serves to anyone: \
                     point [backup] dir elsewhere (the default is <state_dir>/backups)",
                    real.display(),
                    boot.display()
                )));
            }
        }
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(dir_err(format!("creating {}", self.dir.display())))?;
        let (name, created) = self.fresh_name()?;
        let out = self.dir.join(&name);
        let mut w = backup::Writer::create(&out, MADE_BY)?;
        w.add_sqlite(DB_MEMBER, &self.db, &self.dir, &mut |_, _| {})?;
        if let Some(f) = &self.config_file {
            w.add_file(CONFIG_MEMBER, f)?;
        }
        w.finish()?;
        let size = std::fs::metadata(&out)
            .map_err(dir_err(format!("reading {}", out.display())))?
            .len();
        self.prune();
        Ok(Archive {
            name,
            created: rfc3339(created),
            size,
        })
    }

    /// A name no archive has yet: archives are named by the second, so a
    /// second backup within the same second waits for the next.
    fn fresh_name(&self) -> Result<(String, time::OffsetDateTime), Error> {
        for _ in 0..30 {
            let now = time::OffsetDateTime::now_utc();
            let name = archive_name(now);
            if !self.dir.join(&name).exists() {
                return Ok((name, now));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Task(
            "no free archive name for 3 seconds; is the clock stuck?".into(),
        ))
    }

    /// Remove all but the newest `keep` archives (by name; nothing else),
    /// and what a backup cut short by a crash left (see [`leftovers`]).
    fn prune(&self) {
        for p in leftovers(&self.dir, Duration::from_secs(3600)) {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::info!("removed {}, left by an interrupted backup", p.display()),
                Err(e) => tracing::warn!("removing {}: {e}", p.display()),
            }
        }
        let Ok(list) = list_dir(&self.dir) else {
            return;
        };
        let keep = usize::try_from(self.keep).unwrap_or(usize::MAX);
        for old in list.iter().skip(keep) {
            let p = self.dir.join(&old.name);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!("backup {} pruned ([backup] keep = {})", old.name, self.keep)
                }
                Err(e) => tracing::warn!("pruning {}: {e}", p.display()),
            }
        }
    }
}

/// What an interrupted backup (bty-web killed mid-write) leaves in `dir`:
/// an archive's `.partial` file and the snapshot waiting to go in, older
/// than `age` (a backup under way is never that old: one runs at a time).
fn leftovers(dir: &Path, age: Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with(".bty-snapshot-")
                || name
                    .strip_suffix(".partial")
                    .is_some_and(|a| archive_time(a).is_some());
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|d| d > age);
            ours && old && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| e.path())
        .collect()
}

/// The archives in `dir`, newest first (none when it does not exist).
fn list_dir(dir: &Path) -> Result<Vec<Archive>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Dir {
                what: format!("listing {}", dir.display()),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(created) = archive_time(&name) else {
            continue;
        };
        // Not `metadata()`: a symlink planted here is not followed.
        match entry.metadata() {
            Ok(m) if m.file_type().is_file() => out.push(Archive {
                name,
                created: rfc3339(created),
                size: m.len(),
            }),
            _ => {}
        }
    }
    // The stamp sorts as the time does.
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(out)
}

/// `p` with symlinks resolved as far as it exists (the rest appended as
/// written), so a directory yet to be created can be compared.
fn resolve(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// `bty-YYYYMMDDTHHMMSSZ.tar.zst` of `t`.
pub fn archive_name(t: time::OffsetDateTime) -> String {
    let stamp = t
        .to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .unwrap_or_default();
    format!("{PREFIX}{stamp}{SUFFIX}")
}

/// The time in an archive's name, `None` when `name` is not exactly an
/// archive name (so `../x`, `bty-x.tar.zst` and the like are not).
pub fn archive_time(name: &str) -> Option<time::OffsetDateTime> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if stamp.len() != 16 || !stamp.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    time::PrimitiveDateTime::parse(stamp, STAMP)
        .ok()
        .map(|t| t.assume_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_leftovers_of_interrupted_backups_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        let put = |name: &str, aged: bool| {
            let p = dir.path().join(name);
            let f = std::fs::File::create(&p).unwrap();
            if aged {
                f.set_modified(old).unwrap();
            }
        };
        put("bty-20261206T230509Z.tar.zst.partial", true);
        put(".bty-snapshot-Ab12Cd", true);
        put("bty-20261206T230510Z.tar.zst.partial", false); // under way
        put("bty-20261206T230511Z.tar.zst", true); // an archive: prune's
        put("notes.txt.partial", true); // not ours
        let mut got: Vec<String> = leftovers(dir.path(), Duration::from_secs(3600))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ".bty-snapshot-Ab12Cd",
                "bty-20261206T230509Z.tar.zst.partial"
            ]
        );
        assert!(leftovers(&dir.path().join("absent"), Duration::ZERO).is_empty());
    }

    #[test]
    fn names_round_trip_and_nothing_else_is_an_archive() {
        let t = time::macros::datetime!(2026-12-06 23:05:09 UTC);
        let n = archive_name(t);
        assert_eq!(n, "bty-20261206T230509Z.tar.zst");
        assert_eq!(archive_time(&n), Some(t));
        for bad in [
            "bty-x.tar.zst",
            "../bty-20261206T230509Z.tar.zst",
            "bty-20261206T230509Z.tar.zst.partial",
            "bty-20261306T230509Z.tar.zst",
            "bty-2026120 T230509Z.tar.zst",
            "bty-20261206T230509Z.tar.gz",
            "xbty-20261206T230509Z.tar.zst",
            "",
        ] {
            assert_eq!(archive_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn postgres_turns_the_schedule_off() {
        let cfg = Config::from_toml_str(
            "[server]\ndatabase = \"postgres://u:p@127.0.0.1:1/db\"\nsession_secret = \"s\"\n",
        )
        .unwrap();
        let b = Backups::new(&cfg);
        assert_eq!(b.interval, None);
        assert_eq!(b.schedule.off.as_deref(), Some(POSTGRES_OFF));
        assert_eq!(b.schedule.every, None);
        assert!(b.db_path.is_none(), "nothing to snapshot");
        let on = Backups::new(&Config::from_toml_str("").unwrap());
        assert_eq!(on.schedule.every.as_deref(), Some("24h"));
        assert_eq!(on.schedule.off, None);
    }

    #[test]
    fn the_first_backup_follows_the_newest_archive() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml_str(&format!(
            "[server]\nstate_dir = {:?}\n",
            d.path().display().to_string()
        ))
        .unwrap();
        let b = Backups::new(&cfg);
        let day = Duration::from_secs(86_400);
        assert_eq!(b.first_wait(day), FIRST_GRACE, "none yet: soon");
        assert_eq!(b.first_wait(Duration::from_secs(5)), Duration::from_secs(5));
        std::fs::create_dir_all(b.dir()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let old = archive_name(now - time::Duration::days(2));
        std::fs::write(b.dir().join(&old), b"x").unwrap();
        assert_eq!(b.first_wait(day), Duration::ZERO, "overdue: at once");
        let recent = archive_name(now - time::Duration::hours(1));
        std::fs::write(b.dir().join(&recent), b"x").unwrap();
        let w = b.first_wait(day);
        assert!(
            w > Duration::from_secs(22 * 3600) && w <= Duration::from_secs(23 * 3600),
            "{w:?}"
        );
        assert_eq!(
            b.list().unwrap().first().unwrap().name,
            recent,
            "newest first"
        );
    }
}
