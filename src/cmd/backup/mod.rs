//! `bty-lab backup`: one archive (bty-web's archive format,
//! [`bty_web::backup`]) with consistent snapshots of bty-web's database and
//! withcache's catalog, and DEST's configuration, taken while the stack
//! runs. [`restore`] puts one back; `upgrade` writes one before a version
//! whose schema migrates ([`pre_upgrade`]).
//!
//! DEST is a deploy dir ([`Target::Deploy`]) or a `bty-lab serve` data
//! dir ([`Target::Serve`]); [`Target::places`] says where each archive
//! member lives on disk for either. withcache's blobs are never archived:
//! they are fetched again from their origins on first use.

pub mod restore;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use bty_web::backup::{self as archive, Manifest as Contents, Writer};

use crate::cli::BackupArgs;
use crate::manifest::{self, Manifest};
use crate::{deploydir, exit, stack, ui};

/// Member names: the same bty-web's scheduled backups write.
pub const BTY_DB: &str = "bty/state.db";
/// withcache's catalog database (not its blobs).
pub const CACHE_DB: &str = "withcache/withcache.db";
/// bty-web's configuration.
pub const BTY_TOML: &str = "bty.toml";
/// The deploy manifest.
pub const DEPLOY_MANIFEST: &str = manifest::FILE;
/// The deploy's secrets and settings for the containers.
pub const ENVVARS: &str = "envvars";

/// Is `name` one of the members above?
pub fn known(name: &str) -> bool {
    [BTY_DB, CACHE_DB, BTY_TOML, DEPLOY_MANIFEST, ENVVARS].contains(&name)
}

/// What DEST is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A deploy dir (it has `.bty-lab.toml`).
    Deploy(Manifest),
    /// A `bty-lab serve --data-dir` (web/ and withcache/ in it).
    Serve(PathBuf),
}

/// Where one archive member lives on disk.
#[derive(Debug, Clone)]
pub struct Place {
    /// Its member name.
    pub name: &'static str,
    /// Its file.
    pub path: PathBuf,
    /// A SQLite database (snapshot, never copied live).
    pub db: bool,
    /// The owner a file gets when restore creates it where none was: the
    /// uid the service's container runs as, for its data dir.
    pub owner: Option<u32>,
}

impl Place {
    fn db(name: &'static str, path: PathBuf, owner: Option<u32>) -> Place {
        Place {
            name,
            path,
            db: true,
            owner,
        }
    }

    fn file(name: &'static str, path: PathBuf) -> Place {
        Place {
            name,
            path,
            db: false,
            owner: None,
        }
    }
}

impl Target {
    /// DEST as a deploy dir or a serve data dir; neither is refused.
    pub fn find(dest: &Path, cmd: &str) -> Result<Target> {
        let dest = deploydir::absolute(dest)?;
        if dest.join(manifest::FILE).exists() {
            return Ok(Target::Deploy(crate::cmd::files::manifest(&dest, cmd)?));
        }
        if dest.join("web").is_dir() || dest.join("withcache").is_dir() {
            return Ok(Target::Serve(dest));
        }
        Err(exit::refused(format!(
            "{} is neither a bty-lab deploy (no {}) nor a `bty-lab serve` data dir (no web/ \
             or withcache/ in it); pass the right DEST to `bty-lab {cmd}`",
            dest.display(),
            manifest::FILE
        )))
    }

    /// DEST.
    pub fn root(&self) -> &Path {
        match self {
            Target::Deploy(m) => &m.dest,
            Target::Serve(d) => d,
        }
    }

    /// The directory holding the services' data.
    pub fn data_root(&self) -> &Path {
        match self {
            Target::Deploy(m) => &m.data_dir,
            Target::Serve(d) => d,
        }
    }

    /// `DEST/backups`, where archives go unless `--out` says otherwise.
    pub fn backups_dir(&self) -> PathBuf {
        self.root().join("backups")
    }

    /// Every member this kind of DEST has, where it lives. A serve dir
    /// has only the databases: serve rewrites its bty.toml on every start
    /// and keeps no envvars or manifest.
    pub fn places(&self) -> Vec<Place> {
        let data = |sub: &str, file: &str| self.data_root().join(sub).join(file);
        match self {
            Target::Deploy(m) => {
                let owner = |name: &str| {
                    m.services()
                        .iter()
                        .any(|s| s.name == name && s.non_root)
                        .then_some(stack::SERVICE_UID)
                };
                let file = |name| Place::file(name, m.dest.join(name));
                vec![
                    Place::db(BTY_DB, data("bty", "state.db"), owner(stack::WEB.name)),
                    Place::db(
                        CACHE_DB,
                        data("withcache", "withcache.db"),
                        owner(stack::CACHE.name),
                    ),
                    file(BTY_TOML),
                    file(DEPLOY_MANIFEST),
                    file(ENVVARS),
                ]
            }
            Target::Serve(_) => vec![
                Place::db(BTY_DB, data("web", "state.db"), None),
                Place::db(CACHE_DB, data("withcache", "withcache.db"), None),
            ],
        }
    }

    /// Refuse a deploy whose bty-web keeps its state in PostgreSQL
    /// (`[server] database`): its database is not a file here.
    pub fn refuse_postgres(&self, doing: &str) -> Result<()> {
        let toml = self.root().join(BTY_TOML);
        let Ok(text) = std::fs::read_to_string(&toml) else {
            return Ok(());
        };
        let v: toml::Value = toml::from_str(&text)
            .with_context(|| format!("parsing {} (is it bty-web's?)", toml.display()))?;
        let db = v
            .get("server")
            .and_then(|s| s.get("database"))
            .and_then(|d| d.as_str())
            .unwrap_or("");
        if db.trim().is_empty() {
            return Ok(());
        }
        Err(exit::refused(format!(
            "{} keeps bty-web's state in PostgreSQL ([server] database in {}): {doing} it \
             with PostgreSQL's own tools (pg_dump / pg_restore); bty-lab backs up only SQLite \
             state. Nothing was written",
            self.root().display(),
            toml.display()
        )))
    }
}

/// `bty-lab backup`.
pub fn run(a: BackupArgs) -> Result<()> {
    let target = Target::find(&a.dest, "backup")?;
    target.refuse_postgres("back up")?;
    let out = match &a.out {
        Some(o) => deploydir::absolute(o)?,
        None => {
            let dir = target.backups_dir();
            make_private_dir(&dir)?;
            dir.join(format!("bty-{}.tar.zst", stamp()))
        }
    };
    eprintln!(
        "backing up {} (withcache's blobs are not included: they are fetched again from \
         their origins when first asked for)",
        target.root().display()
    );
    let contents = write(&target, &out, "bty-lab backup")?;
    report(&out, &contents);
    Ok(())
}

/// Write the archive of `target`'s members to `out` (made_by goes into
/// its manifest). Databases that do not exist yet are left out, said.
pub fn write(target: &Target, out: &Path, made_by: &str) -> Result<Contents> {
    let scratch = out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut w = Writer::create(out, made_by)?;
    let mut any = false;
    for p in target.places() {
        if !p.path.exists() {
            ui::detail(format!("{} not there; left out", p.path.display()));
            continue;
        }
        add(&mut w, &p, &scratch)?;
        any = true;
    }
    if !any {
        anyhow::bail!(
            "{} holds nothing to back up yet (no database, no configuration)",
            target.root().display()
        );
    }
    Ok(w.finish()?)
}

/// Add one member: a database as a snapshot, with progress, a file as is.
fn add(w: &mut Writer, p: &Place, scratch: &Path) -> Result<()> {
    if !p.db {
        return Ok(w.add_file(p.name, &p.path)?);
    }
    let mut progress = Progress::new(p.name);
    keep_owner(&p.path, || {
        w.add_sqlite(p.name, &p.path, scratch, &mut |d, t| progress.tick(d, t))
    })?;
    progress.finish();
    Ok(())
}

/// The lines that end a backup: where, how big, what is in it.
fn report(out: &Path, c: &Contents) {
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "\nbackup written: {} ({}, mode 0600)",
        out.display(),
        indicatif::HumanBytes(size)
    );
    for m in &c.members {
        let schema = match m.kind {
            archive::Kind::Sqlite { schema } => format!(", schema {schema}"),
            archive::Kind::File => String::new(),
        };
        ui::detail(format!(
            "{} ({}{schema})",
            m.name,
            indicatif::HumanBytes(m.size)
        ));
    }
}

/// A database copy's progress: a bar on a terminal, else a line at each
/// quarter (logs and CI get a few lines, not a bar's redraws).
struct Progress {
    name: &'static str,
    bar: Option<indicatif::ProgressBar>,
    quarter: u64,
}

impl Progress {
    fn new(name: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("      {msg} [{bar:30}] {pos}/{len} pages")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(format!("copying {name}"));
            b
        });
        Progress {
            name,
            bar,
            quarter: 0,
        }
    }

    fn tick(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            return;
        }
        let q = (done * 4).checked_div(total).unwrap_or(4);
        if q > self.quarter && q < 4 {
            self.quarter = q;
            ui::detail(format!("copying {}: {done} of {total} pages", self.name));
        }
    }

    fn finish(self) {
        match self.bar {
            Some(b) => b.finish_and_clear(),
            None => ui::detail(format!("copied {} (consistent snapshot)", self.name)),
        }
    }
}

/// Run `f`, which opens the database at `db`, then give any `-wal`/`-shm`
/// file beside it to the database's owner. Opening a WAL database whose
/// service is stopped makes them, as root; the service (uid 65532 in the
/// containers) could then not open its own database.
fn keep_owner<T, E>(db: &Path, f: impl FnOnce() -> Result<T, E>) -> Result<T>
where
    anyhow::Error: From<E>,
{
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::metadata(db).map(|m| (m.uid(), m.gid())).ok();
    let r = f();
    if let Some((uid, gid)) = owner {
        for sfx in ["-wal", "-shm"] {
            let mut side = db.as_os_str().to_owned();
            side.push(sfx);
            let side = PathBuf::from(side);
            if std::fs::metadata(&side).is_ok_and(|m| m.uid() != uid || m.gid() != gid) {
                std::os::unix::fs::chown(&side, Some(uid), Some(gid))
                    .with_context(|| format!("giving {} back to uid {uid}", side.display()))?;
            }
        }
    }
    Ok(r?)
}

/// A directory only root (or the operator) reads: backups hold password
/// hashes and the service token.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    crate::safefs::refuse_link(dir)?;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// UTC now, for file names: `20261206T230109Z`.
pub fn stamp() -> String {
    let now = bty_web::db::now();
    let secs = now.split('.').next().unwrap_or(&now).trim_end_matches('Z');
    let mut s: String = secs.chars().filter(char::is_ascii_alphanumeric).collect();
    s.push('Z');
    s
}

/// The schema versions this build migrates to, per database member.
pub fn latest_schema(name: &str) -> Option<u32> {
    match name {
        BTY_DB => Some(bty_web::db::schema::LATEST),
        CACHE_DB => Some(withcache::db::LATEST),
        _ => None,
    }
}

/// Before an upgrade: when a database of `m`'s deploy is at an older
/// schema than this build migrates it to, write a backup to
/// `DEST/backups/pre-upgrade-<from>-to-<to>-<ts>.tar.zst` and say where.
/// None when nothing migrates (or bty-web is on PostgreSQL: said).
pub fn pre_upgrade(m: &Manifest, to: &str) -> Result<Option<PathBuf>> {
    let target = Target::Deploy(m.clone());
    if target.refuse_postgres("back up").is_err() {
        ui::warn(
            "bty-web keeps its state in PostgreSQL: no snapshot before the upgrade; take one \
             with pg_dump first if the schema migrates",
        );
        return Ok(None);
    }
    let mut migrates = Vec::new();
    for p in target
        .places()
        .into_iter()
        .filter(|p| p.db && p.path.exists())
    {
        let now = archive::sqlite_schema(&p.path)?;
        let latest = latest_schema(p.name).unwrap_or(now);
        if now < latest {
            migrates.push(format!("{} schema {now} -> {latest}", p.name));
        }
    }
    if migrates.is_empty() {
        return Ok(None);
    }
    let dir = target.backups_dir();
    make_private_dir(&dir)?;
    let out = dir.join(format!(
        "pre-upgrade-{}-to-{to}-{}.tar.zst",
        m.version,
        stamp()
    ));
    ui::detail(format!(
        "the databases migrate ({}): snapshot first",
        migrates.join(", ")
    ));
    write(&target, &out, "bty-lab upgrade")?;
    ui::detail(format!(
        "snapshot written: {} (a rollback restores the databases from it)",
        out.display()
    ));
    Ok(Some(out))
}
