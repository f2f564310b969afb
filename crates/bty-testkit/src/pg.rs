//! A private PostgreSQL 15 for the tests of one process (feature `pg`).
//!
//! The first [`fresh_database`] starts Debian's `postgresql-15` binaries
//! (`/usr/lib/postgresql/15/bin`) on a new data dir under the temp dir, on
//! a free 127.0.0.1 port with a private Unix socket dir and `fsync=off`
//! (test data need not survive a power cut). Every later call only creates
//! a new empty database on it. Run as root, `initdb` and the server run as
//! the `postgres` user (PostgreSQL refuses root).
//!
//! The server goes away with the test process: at exit an `atexit` handler
//! stops it (fast shutdown) and removes its directory, and should the
//! process be killed instead, the kernel kills the server too (it is
//! started with a parent-death signal, from a thread that lives as long as
//! the process). Only a killed process leaves its data dir behind.
//!
//! Missing PostgreSQL: [`available`] skips (prints and returns false), or
//! fails under `BTY_REQUIRE_TOOLS=1`, like [`crate::tools`].
//!
//! ```no_run
//! if !bty_testkit::pg::available() {
//!     return;
//! }
//! let url = bty_testkit::pg::fresh_database();
//! ```

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-15` puts its server binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The Debian package that has them.
pub const PACKAGE: &str = "postgresql-15";

/// Whether PostgreSQL 15 is installed. When it is not: panics under
/// `BTY_REQUIRE_TOOLS=1`, otherwise prints `skipping: ...` and returns
/// false, and the caller returns.
pub fn available() -> bool {
    crate::tools::have_file(&format!("{BIN}/postgres"), PACKAGE)
        && crate::tools::have_file(&format!("{BIN}/initdb"), PACKAGE)
}

/// Whether bty-web's tests run on PostgreSQL: `BTY_TEST_DB=postgres`
/// (unset, empty or `sqlite`: SQLite, as always). Then PostgreSQL must be
/// there: a missing one fails the test (it was asked for), it does not
/// skip.
pub fn selected() -> bool {
    match std::env::var("BTY_TEST_DB").as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => {
            assert!(
                std::path::Path::new(&format!("{BIN}/postgres")).exists(),
                "BTY_TEST_DB=postgres but PostgreSQL 15 is not installed: \
                 apt-get install -y {PACKAGE}"
            );
            true
        }
        Ok(other) => panic!("BTY_TEST_DB={other}: use sqlite or postgres"),
    }
}

/// For a test that is about SQLite itself (its files, its migrations from
/// old releases): under `BTY_TEST_DB=postgres` prints why it skips and
/// returns true, and the caller returns.
pub fn skip_on_postgres(why: &str) -> bool {
    let skip = selected();
    if skip {
        eprintln!("skipping on PostgreSQL: {why}");
    }
    skip
}

/// A new, empty database on this process's server (started on first use);
/// its URL, `postgres://postgres@127.0.0.1:PORT/NAME`. Panics when the
/// server cannot start (check [`available`] first to skip without it).
pub fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("bty_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    // The sync client drives its own tokio runtime, which cannot start on a
    // thread already running async code (the tests call this from
    // `#[tokio::test]`): start the server and talk to it from a plain
    // thread.
    let db = name.clone();
    let made = std::thread::spawn(move || -> Result<u16, postgres::Error> {
        let port = server().port;
        let mut c = postgres::Client::connect(&admin_url(port), postgres::NoTls)?;
        c.batch_execute(&format!("CREATE DATABASE {db}"))?;
        Ok(port)
    })
    .join();
    let port = match made {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => panic!("creating test database {name}: {e:?}"),
        Err(p) => std::panic::resume_unwind(p),
    };
    format!("postgres://postgres@127.0.0.1:{port}/{name}")
}

/// The server's port (started by the first [`fresh_database`]).
pub fn port() -> u16 {
    started().port
}

/// The directory of the server's Unix socket (started by the first
/// [`fresh_database`]).
pub fn socket_dir() -> &'static Path {
    &started().sock
}

fn started() -> &'static Server {
    match SERVER.get() {
        Some(Ok(s)) => s,
        _ => panic!("no PostgreSQL running: call pg::fresh_database() first"),
    }
}

struct Server {
    port: u16,
    sock: PathBuf,
}

/// The running server's process and directory, for the exit handler.
static RUNNING: Mutex<Option<(Child, PathBuf)>> = Mutex::new(None);

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The server, started on first use; a failed start is remembered (every
/// later test fails with its message, none starts another). Blocks (and
/// cannot run on a thread that runs async code, see [`fresh_database`]).
fn server() -> &'static Server {
    match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) => panic!("starting a private PostgreSQL ({PACKAGE}) for the tests: {e}"),
    }
}

fn admin_url(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5")
}

/// The `postgres` user's uid and gid when we are root (the server refuses
/// to run as root), `None` when we are not (it runs as us).
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: `name` is a valid C string; getpwnam's result is read at
    // once, before any other getpw* call on this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "running as root and there is no `postgres` user to run the server as \
             (apt-get install -y {PACKAGE} creates it)"
        ));
    }
    // SAFETY: non-null, points at getpwnam's static passwd entry.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn command(bin: &str, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut c = Command::new(format!("{BIN}/{bin}"));
    // The server's user may not be able to read our working directory.
    c.current_dir(cwd);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

fn start() -> Result<Server, String> {
    let res = try_start();
    if res.is_err() {
        stop();
    }
    res
}

fn try_start() -> Result<Server, String> {
    let user = run_as()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let base = std::env::temp_dir().join(format!("bty-pg-{}-{nanos}", std::process::id()));
    let sock = base.join("sock");
    std::fs::create_dir_all(&sock).map_err(|e| format!("creating {}: {e}", sock.display()))?;
    if let Some((uid, gid)) = user {
        for d in [&base, &sock] {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", d.display()))?;
        }
    }
    // From here on the exit handler removes `base`, whatever happens.
    register_exit(&base);
    let data = base.join("data");
    let out = command("initdb", user, &base)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
        .args(["--no-sync", "--no-instructions"])
        .output()
        .map_err(|e| format!("running {BIN}/initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // A port that was free a moment ago may be taken by the time the
    // server binds it: try a few.
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let log = base.join(format!("server-{port}.log"));
        let child = spawn_server(user, &base, &data, &sock, port, &log)?;
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some((child, base.clone()));
        match wait_ready(port) {
            Ok(()) => {
                return Ok(Server {
                    port,
                    sock: sock.clone(),
                })
            }
            Err(e) => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                last = format!("{e}; server log:\n{log}");
                if let Some((mut c, _)) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
    Err(last)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn spawn_server(
    user: Option<(u32, u32)>,
    base: &Path,
    data: &Path,
    sock: &Path,
    port: u16,
    log: &Path,
) -> Result<Child, String> {
    let log = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = command("postgres", user, base);
    cmd.arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", sock.display()))
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: prctl is async-signal-safe; it runs in the child after the
    // uid change (which would clear the parent-death signal) and before
    // exec (which keeps it).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The parent-death signal fires when the *thread* that forked the
    // child ends, so fork from one that never does.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bty-testkit-pg".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("starting the PostgreSQL parent thread: {e}"))?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("running {BIN}/postgres: {e}"))
}

fn wait_ready(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((c, _)) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("the server exited at start ({status})"));
            }
        }
        match postgres::Client::connect(&admin_url(port), postgres::NoTls) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "the server did not accept connections in 60 s: {e}"
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The server's directory, removed at exit.
static BASE: Mutex<Option<PathBuf>> = Mutex::new(None);

fn register_exit(base: &Path) {
    *BASE.lock().unwrap_or_else(|p| p.into_inner()) = Some(base.to_path_buf());
    extern "C" fn at_exit() {
        stop();
    }
    // SAFETY: registering a plain `extern "C"` function; it runs once at
    // process exit (only one start is ever tried per process).
    unsafe {
        libc::atexit(at_exit);
    }
}

/// Stop the server (fast shutdown, then SIGKILL after 10 s) and remove its
/// directory. Runs at process exit.
fn stop() {
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((mut child, _)) = running {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling our own child, which we have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(base) = BASE.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = std::fs::remove_dir_all(base);
    }
}
