//! `bty-lab restore FILE [DEST]`: check the whole archive into a staging
//! dir next to the data before anything else ([`Staged::check`]: every
//! member's sha256, the schemas against this build's), check the stack can
//! be stopped and started ([`Stack::reach`]: engine down = refused, exit
//! 4), fail the flash cycles the snapshot caught open, then stop, move the
//! current files aside, move the restored ones in, start, wait healthy.
//! Any failure after the move puts the previous files back and starts the
//! previous stack. The moved-aside files are kept (said where): they are
//! the way back if the restored state is not what the operator wanted.
//!
//! Upgrade's rollback uses [`databases_from`]: the same check and move,
//! databases only, with the stack already stopped.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bty_web::backup::{self as archive, Kind, Manifest as Contents, Member};

use super::{latest_schema, stamp, Place, Target, BTY_DB, DEPLOY_MANIFEST};
use crate::cli::RestoreArgs;
use crate::engine::{self, Bollard, ContainerEngine};
use crate::images::Wanted;
use crate::manifest::Manifest;
use crate::quadlet::{self, Systemd as _};
use crate::{cmd, containers, deploydir, exit, health, ui};

/// Why a cycle open in the snapshot is failed: its agent's reports went
/// to a server whose state is now gone, and the machine's next PXE boot
/// must flash it again rather than boot a half-written disk.
pub const REASON: &str =
    "restored from a backup taken during this flash; it runs again on the next boot";

/// `bty-lab restore`.
pub async fn run(a: RestoreArgs) -> Result<()> {
    let target = Target::find(&a.dest, "restore")?;
    let file = deploydir::absolute(&a.file)?;
    let mut steps = ui::Steps::new(5);
    steps.step(format!("checking {}", file.display()));
    let staged = Staged::check(&target, &file, |_| true)?;
    ui::detail(format!(
        "made by {} (bty {}) on {}; every member matches its sha256",
        staged.contents.made_by, staged.contents.bty_version, staged.contents.created
    ));
    for (name, why) in &staged.left {
        ui::detail(format!("left as is: {name} ({why})"));
    }
    if staged.takes(BTY_DB) {
        target.refuse_postgres("restore")?;
    }
    steps.step("checking the stack can be stopped and started again");
    let stack = Stack::reach(&target, &a).await?;
    let (moved, failed) = apply(&target, &staged, &stack, &mut steps).await?;
    report(&target, &staged, &moved, failed);
    Ok(())
}

/// Fail the open cycles, stop, move in, start; on any failure after the
/// stop, the previous files and stack are back. What was moved aside and
/// how many cycles were failed.
async fn apply<E: ContainerEngine>(
    target: &Target,
    staged: &Staged,
    stack: &Stack<E>,
    steps: &mut ui::Steps,
) -> Result<(Vec<Moved>, usize)> {
    let failed = staged.fail_open_cycles()?;
    steps.step(stack.stopping());
    stack.stop().await?;
    steps.step("putting the backup in place");
    let moved = match swap_in(target, staged, &stamp()) {
        Ok(m) => m,
        Err(e) => {
            let back = stack.start().await;
            return Err(undone(e, back, "nothing was replaced"));
        }
    };
    steps.step(stack.starting());
    if let Err(e) = stack.start().await {
        ui::warn(format!("the restored stack failed: {e:#}"));
        eprintln!("putting the previous state back");
        let _ = stack.stop().await;
        put_back(target, &moved)?;
        let back = stack.start().await;
        return Err(undone(e, back, "the previous files are back in place"));
    }
    Ok((moved, failed))
}

/// The error of a restore that was undone: the cause, and whether the
/// previous stack runs again.
fn undone(cause: anyhow::Error, back: Result<()>, what: &str) -> anyhow::Error {
    match back {
        Ok(()) => exit::reword(
            &cause,
            format!("restore failed; {what} and the previous stack runs. Cause:\n{cause:#}"),
        ),
        Err(e) => exit::reword(
            &cause,
            format!(
                "restore failed; {what}, but the previous stack did not start again: {e:#}\n\
                 Cause of the failure:\n{cause:#}"
            ),
        ),
    }
}

fn report(target: &Target, staged: &Staged, moved: &[Moved], failed: usize) {
    let names: Vec<&str> = staged.take.iter().map(|p| p.name).collect();
    eprintln!(
        "\nrestored {} into {}",
        names.join(", "),
        target.root().display()
    );
    if failed > 0 {
        ui::detail(format!(
            "{failed} flash cycle(s) open in the backup marked failed; those machines flash \
             again on their next PXE boot"
        ));
    }
    report_kept(moved);
    if let Target::Serve(d) = target {
        ui::detail(format!(
            "start it again: bty-lab serve --data-dir {}",
            d.display()
        ));
    }
}

/// Where the replaced files are kept.
fn report_kept(moved: &[Moved]) {
    let mut kept = moved.iter().filter_map(|m| m.aside.as_ref()).peekable();
    if kept.peek().is_some() {
        ui::detail("the files it replaced are kept (remove them once satisfied):");
        for k in kept {
            ui::detail(format!("  {}", k.display()));
        }
    }
}

/// An archive checked and extracted next to the data, and what of it
/// goes where.
pub struct Staged {
    dir: tempfile::TempDir,
    /// The archive's manifest.
    pub contents: Contents,
    /// The members restored, with where they go.
    pub take: Vec<Place>,
    /// Members left as they are, and why.
    pub left: Vec<Left>,
}

impl Staged {
    /// Verify `file` into a staging dir in `target`'s data dir (the same
    /// filesystem, so moving a member in is a rename) and decide what it
    /// restores; only members `wanted` says yes to are taken. Refused,
    /// nothing changed: a damaged or altered archive, a member this bty
    /// does not know, a database newer than this bty.
    pub fn check(target: &Target, file: &Path, wanted: impl Fn(&Place) -> bool) -> Result<Staged> {
        let (dir, contents) = verify_into_staging(target, file)?;
        for m in &contents.members {
            known_kind_and_schema(file, &contents, m)?;
        }
        let (take, left) = sort_members(target, file, &contents, wanted)?;
        if take.is_empty() {
            return Err(exit::refused(format!(
                "{} holds nothing to restore into {}; nothing was changed",
                file.display(),
                target.root().display()
            )));
        }
        Ok(Staged {
            dir,
            contents,
            take,
            left,
        })
    }

    /// Does it restore `name`?
    pub fn takes(&self, name: &str) -> bool {
        self.take.iter().any(|p| p.name == name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fail the flash cycles open in the staged bty database ([`REASON`]);
    /// how many.
    pub fn fail_open_cycles(&self) -> Result<usize> {
        if !self.takes(BTY_DB) {
            return Ok(0);
        }
        let path = self.path(BTY_DB);
        let c = rusqlite::Connection::open(&path)
            .with_context(|| format!("opening the restored {}", path.display()))?;
        let conn = bty_web::db::sql::Conn::sqlite(c);
        bty_web::db::cycles::fail_open(&conn, REASON, &bty_web::db::now())
            .with_context(|| format!("failing the open flash cycles in {}", path.display()))
    }
}

/// Verify `file` into a fresh staging dir in `target`'s data dir.
fn verify_into_staging(target: &Target, file: &Path) -> Result<(tempfile::TempDir, Contents)> {
    if !file.is_file() {
        return Err(exit::refused(format!(
            "{} is not a file; nothing was changed",
            file.display()
        )));
    }
    let root = target.data_root();
    let dir = tempfile::Builder::new()
        .prefix(".bty-restore-")
        .tempdir_in(root)
        .with_context(|| format!("creating a staging dir in {}", root.display()))?;
    let contents = archive::verify(file, dir.path()).map_err(|e| match e {
        archive::Error::Refused(why) => exit::refused(why),
        other => anyhow!(other),
    })?;
    Ok((dir, contents))
}

/// A database member must be one this bty keeps under that name, at a
/// schema it can run; a file member must not sit where a database goes.
fn known_kind_and_schema(file: &Path, contents: &Contents, m: &Member) -> Result<()> {
    match (m.kind, latest_schema(&m.name)) {
        (Kind::Sqlite { schema }, Some(latest)) if schema > latest => Err(exit::refused(format!(
            "{}: {} is at schema {schema}, made by bty {}, newer than this bty ({}, schema \
             {latest}); upgrade bty-lab first, then restore. Nothing was changed",
            file.display(),
            m.name,
            contents.bty_version,
            env!("CARGO_PKG_VERSION")
        ))),
        (Kind::Sqlite { .. }, None) | (Kind::File, Some(_)) => Err(exit::refused(format!(
            "{}: {} is not what this bty keeps under that name (made by bty {}); nothing was \
             changed",
            file.display(),
            m.name,
            contents.bty_version
        ))),
        _ => Ok(()),
    }
}

/// A member left as it is, and why.
type Left = (String, String);

/// Which members are restored here and which are left, with why.
fn sort_members(
    target: &Target,
    file: &Path,
    contents: &Contents,
    wanted: impl Fn(&Place) -> bool,
) -> Result<(Vec<Place>, Vec<Left>)> {
    let places = target.places();
    let (mut take, mut left) = (Vec::new(), Vec::new());
    for m in &contents.members {
        if m.name == DEPLOY_MANIFEST && matches!(target, Target::Deploy(_)) {
            let why = "this deploy's own settings (paths, engine, ports) stay: a restore puts \
                       state back, it does not move a deploy";
            left.push((m.name.clone(), why.to_string()));
            continue;
        }
        match places.iter().find(|p| p.name == m.name) {
            Some(p) if wanted(p) => take.push(p.clone()),
            Some(_) => left.push((m.name.clone(), "not restored here".into())),
            None if super::known(&m.name) => left.push((
                m.name.clone(),
                "a serve data dir keeps none: serve writes its own configuration on every start"
                    .to_string(),
            )),
            None => {
                return Err(exit::refused(format!(
                    "{}: {} is not a member this bty knows (made by bty {}); restore it with \
                     that bty or newer. Nothing was changed",
                    file.display(),
                    m.name,
                    contents.bty_version
                )))
            }
        }
    }
    for p in &places {
        if !contents.members.iter().any(|m| m.name == p.name) {
            left.push((p.name.to_string(), "not in the archive".into()));
        }
    }
    Ok((take, left))
}

/// What DEST runs on, reached before anything is stopped.
enum Stack<E> {
    /// Containers through the engine API, recreated from the images that
    /// ran.
    Engine {
        engine: E,
        m: Manifest,
        previous: Vec<Wanted>,
        timeout: Duration,
    },
    /// Quadlet units, health through the engine.
    Quadlet {
        engine: E,
        m: Manifest,
        timeout: Duration,
    },
    /// A serve data dir: its serve must not be running.
    Serve,
}

impl Stack<Bollard> {
    async fn reach(target: &Target, a: &RestoreArgs) -> Result<Stack<Bollard>> {
        let timeout = Duration::from_secs(a.timeout);
        match target {
            Target::Deploy(m) => {
                if m.quadlet {
                    cmd::Host::this().require_systemd()?;
                }
                let engine =
                    engine::connect_for(a.engine.engine, m.engine.as_ref(), &m.path()).await?;
                if m.quadlet {
                    return Ok(Stack::Quadlet {
                        engine,
                        m: m.clone(),
                        timeout,
                    });
                }
                let previous = cmd::upgrade::running_images(&engine, m).await?;
                Ok(Stack::Engine {
                    engine,
                    m: m.clone(),
                    previous,
                    timeout,
                })
            }
            Target::Serve(dir) => {
                refuse_running_serve(dir)?;
                Ok(Stack::Serve)
            }
        }
    }
}

impl<E: ContainerEngine> Stack<E> {
    fn stopping(&self) -> &'static str {
        match self {
            Stack::Serve => "serve is stopped: nothing to stop",
            _ => "stopping the stack",
        }
    }

    fn starting(&self) -> &'static str {
        match self {
            Stack::Serve => "checking the restored files (serve starts them)",
            _ => "starting the stack and waiting until it is healthy",
        }
    }

    async fn stop(&self) -> Result<()> {
        match self {
            Stack::Engine { engine, m, .. } => stop_containers(engine, m).await,
            Stack::Quadlet { m, .. } => {
                for svc in m.services().iter().rev() {
                    quadlet::Host.systemctl(&["stop", &quadlet::service_unit(m, svc)])?;
                }
                Ok(())
            }
            Stack::Serve => Ok(()),
        }
    }

    async fn start(&self) -> Result<()> {
        match self {
            Stack::Engine {
                engine,
                m,
                previous,
                timeout,
            } => {
                let env = cmd::files::service_env(m)?;
                for (svc, image) in previous {
                    let env = env.get(svc.name).cloned().unwrap_or_default();
                    containers::run_service(engine, m, svc, image, &m.version, env).await?;
                }
                health::require_healthy(engine, m, *timeout).await
            }
            Stack::Quadlet { engine, m, timeout } => {
                for svc in m.services() {
                    quadlet::Host.systemctl(&["start", &quadlet::service_unit(m, &svc)])?;
                }
                health::require_healthy(engine, m, *timeout).await
            }
            Stack::Serve => Ok(()),
        }
    }
}

/// Remove the deploy's containers (restore and rollback create them again
/// from the images that ran); absent ones are fine.
pub async fn stop_containers(engine: &impl ContainerEngine, m: &Manifest) -> Result<()> {
    for svc in m.services().iter().rev() {
        let name = m.container(svc);
        match containers::force_remove(engine, &name).await {
            Err(e) if !e.not_found => return Err(anyhow!("removing container {name}: {e}")),
            _ => {}
        }
    }
    Ok(())
}

/// A serve that runs on `dir` has its bty-web answering at the address
/// its bty.toml names (serve rewrites that file on every start): refuse
/// while it answers, since it holds the databases open.
fn refuse_running_serve(dir: &Path) -> Result<()> {
    let toml = dir.join(super::BTY_TOML);
    let Ok(text) = fs::read_to_string(&toml) else {
        return Ok(());
    };
    let listen = toml::from_str::<toml::Value>(&text)
        .ok()
        .and_then(|v| v.get("server")?.get("listen")?.as_str().map(String::from));
    let Some(mut addr) = listen.and_then(|l| l.parse::<SocketAddr>().ok()) else {
        return Ok(());
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Err(exit::refused(format!(
            "a `bty-lab serve` runs on {} (its bty-web answers at {addr}, as {} says); stop it \
             (Ctrl-C) and run restore again, then start it. Nothing was changed",
            dir.display(),
            toml.display()
        )));
    }
    Ok(())
}

/// A file moved aside for a restored one.
#[derive(Debug)]
pub struct Moved {
    path: PathBuf,
    /// Where the previous file went (None: there was none).
    pub aside: Option<PathBuf>,
    /// A database's -wal/-shm files, moved aside with it.
    sidecars: Vec<(PathBuf, PathBuf)>,
}

/// Where the file at `p` goes aside: beside itself for a database (its
/// data dir, the same filesystem), `DEST/backups/pre-restore-TS/` for a
/// configuration file (DEST holds only files bty-lab writes).
fn aside_for(target: &Target, p: &Place, ts: &str) -> Result<PathBuf> {
    if p.db {
        let name = p.path.file_name().context("a database without a name")?;
        let mut n = name.to_os_string();
        n.push(format!(".pre-restore-{ts}"));
        return Ok(p.path.with_file_name(n));
    }
    let dir = target.backups_dir().join(format!("pre-restore-{ts}"));
    super::make_private_dir(&target.backups_dir())?;
    super::make_private_dir(&dir)?;
    Ok(dir.join(p.name))
}

/// Move the previous files aside and the staged ones in, with the owner
/// and mode of the file each replaces. On error what was moved is put
/// back before returning.
fn swap_in(target: &Target, staged: &Staged, ts: &str) -> Result<Vec<Moved>> {
    let mut moved = Vec::new();
    for p in &staged.take {
        if let Err(e) = swap_one(target, staged, p, ts, &mut moved) {
            put_back(target, &moved)?;
            return Err(e);
        }
    }
    rewrite_env_files(target, staged.takes(super::ENVVARS))?;
    Ok(moved)
}

fn swap_one(
    target: &Target,
    staged: &Staged,
    p: &Place,
    ts: &str,
    moved: &mut Vec<Moved>,
) -> Result<()> {
    crate::safefs::refuse_link(&p.path)?;
    let old = fs::metadata(&p.path).ok();
    let aside = aside_for(target, p, ts)?;
    let mut m = Moved {
        path: p.path.clone(),
        aside: None,
        sidecars: Vec::new(),
    };
    if p.db {
        // A WAL left beside the restored database would be replayed into it.
        for sfx in ["-wal", "-shm"] {
            let (from, to) = (suffixed(&p.path, sfx), suffixed(&aside, sfx));
            if from.exists() {
                move_file(&from, &to)?;
                m.sidecars.push((from, to));
            }
        }
    }
    if old.is_some() {
        move_file(&p.path, &aside)?;
        m.aside = Some(aside);
    }
    moved.push(m);
    if let Some(dir) = p.path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    move_file(&staged.path(p.name), &p.path)?;
    let (uid, gid, mode) = match (&old, p.owner) {
        (Some(o), _) => (Some(o.uid()), Some(o.gid()), o.mode() & 0o7777),
        (None, Some(u)) => (Some(u), Some(u), 0o640),
        (None, None) => (None, None, 0o600),
    };
    std::os::unix::fs::chown(&p.path, uid, gid)
        .with_context(|| format!("giving {} its owner", p.path.display()))?;
    fs::set_permissions(&p.path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", p.path.display()))?;
    Ok(())
}

/// Put the previous files back (the restored ones removed).
fn put_back(target: &Target, moved: &[Moved]) -> Result<()> {
    let mut envvars = false;
    for m in moved.iter().rev() {
        let _ = fs::remove_file(&m.path);
        if m.path.ends_with(super::ENVVARS) {
            envvars = true;
        }
        if let Some(a) = &m.aside {
            move_file(a, &m.path)?;
        }
        for (orig, aside) in &m.sidecars {
            move_file(aside, orig)?;
        }
    }
    rewrite_env_files(target, envvars)
}

/// A deploy's env/ files follow envvars.
fn rewrite_env_files(target: &Target, envvars: bool) -> Result<()> {
    match target {
        Target::Deploy(m) if envvars => cmd::files::write_env_files(m),
        _ => Ok(()),
    }
}

fn suffixed(p: &Path, sfx: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(sfx);
    PathBuf::from(s)
}

/// Rename; across filesystems (DEST and its data dir apart) copy, sync,
/// then remove.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::copy(from, to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            fs::File::open(to)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", to.display()))?;
            fs::remove_file(from).with_context(|| format!("removing {}", from.display()))
        }
        Err(e) => Err(e).with_context(|| format!("moving {} to {}", from.display(), to.display())),
    }
}

/// Upgrade's rollback: the databases of `m`'s deploy from the snapshot
/// at `file` (the stack is stopped by the caller). The migrated databases
/// are kept beside them (`.pre-restore-TS`); their paths are returned.
pub fn databases_from(m: &Manifest, file: &Path) -> Result<Vec<PathBuf>> {
    let target = Target::Deploy(m.clone());
    let staged = Staged::check(&target, file, |p| p.db)?;
    staged.fail_open_cycles()?;
    let moved = swap_in(&target, &staged, &stamp())?;
    Ok(moved.into_iter().filter_map(|m| m.aside).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::testkit::{self, TIMEOUT};
    use crate::engine::fake::Fake;
    use crate::engine::Kind;
    use crate::stack;

    /// A bty database holding `marker` and one cycle in `state`: a
    /// stand-in with the table restore touches, as the fake engine runs
    /// no bty-web to make a real one.
    fn bty_db(path: &Path, marker: &str, state: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE cycles (id INTEGER PRIMARY KEY, state TEXT, ok INTEGER, \
             reason TEXT, finished_at TEXT); CREATE TABLE marker (v TEXT);",
        )
        .unwrap();
        c.execute("INSERT INTO marker VALUES (?1)", [marker])
            .unwrap();
        c.execute("INSERT INTO cycles (state) VALUES (?1)", [state])
            .unwrap();
    }

    fn read(path: &Path) -> (String, String, Option<String>) {
        let c = rusqlite::Connection::open(path).unwrap();
        let m = c
            .query_row("SELECT v FROM marker", [], |r| r.get(0))
            .unwrap();
        let (st, why) = c
            .query_row("SELECT state, reason FROM cycles", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        (m, st, why)
    }

    /// A deploy running on the fake, its current database, and an archive
    /// with another database (a cycle open in it) and other envvars.
    async fn deployed() -> (tempfile::TempDir, Manifest, Fake, PathBuf) {
        let (t, m) = testkit::lab();
        let f = testkit::engine_with_images(Kind::Docker, &m);
        cmd::deploy::start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
            .await
            .unwrap();
        bty_db(&m.data_dir.join("bty/state.db"), "current", "done");
        let src = t.path().join("backup.db");
        bty_db(&src, "from the backup", "flashing");
        let env = t.path().join("envvars");
        fs::write(&env, "BTY_ADMIN_PASSWORD_HASH='restored-hash'\n").unwrap();
        let archive = t.path().join("b.tar.zst");
        let mut w = bty_web::backup::Writer::create(&archive, "test").unwrap();
        w.add_sqlite(BTY_DB, &src, t.path(), &mut |_, _| {})
            .unwrap();
        w.add_file(super::super::ENVVARS, &env).unwrap();
        w.finish().unwrap();
        (t, m, f, archive)
    }

    fn web_env(f: &Fake, m: &Manifest) -> Vec<String> {
        f.container(&m.container(&stack::WEB)).unwrap().spec.env
    }

    async fn restore(f: Fake, m: &Manifest, archive: &Path) -> (Fake, Result<Vec<Moved>>) {
        let target = Target::Deploy(m.clone());
        let staged = Staged::check(&target, archive, |_| true).unwrap();
        let previous = cmd::upgrade::running_images(&f, m).await.unwrap();
        let stack = Stack::Engine {
            engine: f,
            m: m.clone(),
            previous,
            timeout: TIMEOUT,
        };
        let r = apply(&target, &staged, &stack, &mut testkit::steps()).await;
        let Stack::Engine { engine, .. } = stack else {
            unreachable!()
        };
        (engine, r.map(|(moved, _)| moved))
    }

    #[tokio::test]
    async fn a_restore_puts_the_backup_in_fails_open_cycles_and_recreates_the_containers() {
        let (_t, m, f, archive) = deployed().await;
        assert!(web_env(&f, &m).contains(&"BTY_ADMIN_PASSWORD_HASH=web-hash".to_string()));
        let (f, r) = restore(f, &m, &archive).await;
        let moved = r.unwrap();
        let (marker, state, why) = read(&m.data_dir.join("bty/state.db"));
        assert_eq!(
            (marker.as_str(), state.as_str()),
            ("from the backup", "failed")
        );
        assert_eq!(why.as_deref(), Some(REASON));
        // The containers run with the restored envvars.
        let env = web_env(&f, &m);
        assert!(
            env.contains(&"BTY_ADMIN_PASSWORD_HASH=restored-hash".to_string()),
            "{env:?}"
        );
        // What it replaced is kept: the database beside itself, envvars
        // under DEST/backups.
        let aside: Vec<_> = moved.iter().filter_map(|m| m.aside.clone()).collect();
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert_eq!(read(&aside[0]).0, "current");
        assert!(aside[1].starts_with(m.dest.join("backups")), "{aside:?}");
        assert!(fs::read_to_string(&aside[1]).unwrap().contains("web-hash"));
        assert!(crate::deploydir::foreign_entries(&m.dest)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_restored_stack_that_does_not_start_puts_the_previous_state_back() {
        let (_t, m, f, archive) = deployed().await;
        // The first start after the swap fails for good (three broken
        // pipes: the start gives up after two retries); the rollback's
        // starts work.
        f.broken_pipe_starts(3);
        let (f, r) = restore(f, &m, &archive).await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.starts_with(
                "restore failed; the previous files are back in place and the previous stack runs"
            ),
            "{e}"
        );
        assert!(e.contains("broken pipe"), "{e}");
        let (marker, state, why) = read(&m.data_dir.join("bty/state.db"));
        assert_eq!(
            (marker.as_str(), state.as_str(), why),
            ("current", "done", None)
        );
        assert!(fs::read_to_string(m.dest.join("envvars"))
            .unwrap()
            .contains("web-hash"));
        let env = web_env(&f, &m);
        assert!(
            env.contains(&"BTY_ADMIN_PASSWORD_HASH=web-hash".to_string()),
            "{env:?}"
        );
        let left: Vec<_> = fs::read_dir(m.data_dir.join("bty"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            ["state.db"],
            "only the database, nothing aside or staged"
        );
        assert!(!m.data_dir.read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".bty-restore-")));
    }
}
