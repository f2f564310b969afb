//! Fixtures: a temp dir per test and the real bty-lab binary run in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The bty-lab under test. Engine tests need a static one (it becomes the
/// images' entrypoint): BTY_LAB_STATIC_BIN points at it.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bty-lab"))
}

/// A unique temporary directory, removed on drop.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("bty-lab-it")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Run `exe args`, stdin closed; returns the output.
pub fn run_with(exe: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawning bty-lab");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Run the test build of bty-lab.
pub fn run(args: &[&str]) -> Output {
    run_with(&bin(), args, None)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert success, printing the output otherwise.
#[track_caller]
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Assert failure whose stderr contains `needle`.
#[track_caller]
pub fn fails_with(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "unexpected success\nstderr:\n{}",
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "stderr lacks {needle:?}:\n{}",
        stderr(o)
    );
}

/// Assert the exit status is `code` (see `bty-lab --help`, "Exit status").
#[track_caller]
pub fn exits_with(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The tool rule: a missing tool fails under BTY_REQUIRE_TOOLS=1, else the
/// test prints why it skips. Returns false to skip.
pub fn have_tool(name: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!(
            "{name} is required (BTY_REQUIRE_TOOLS=1) but not installed; run scripts/engines.sh"
        );
    }
    eprintln!("skipping: {name} not installed");
    false
}

/// Is `prog` on PATH?
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// atftp (Debian's atftp 0.8) fetch of `name` from 127.0.0.1:`port` into
/// `dir`; the bytes received. Panics with atftp's output on failure.
pub fn atftp_get(port: u16, name: &str, dir: &Path) -> Vec<u8> {
    let local = dir.join("atftp-got");
    let _ = std::fs::remove_file(&local);
    let o = Command::new("timeout")
        .args(["60", "atftp", "--get", "-r", name, "-l"])
        .arg(&local)
        .args(["127.0.0.1", &port.to_string()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "atftp {name} from port {port}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::read(&local).unwrap()
}

/// The password a command showed once, on its `login: USER / PASSWORD`
/// line (deploy's summary, serve's banner).
pub fn printed_password(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("login:")?.trim();
        let pw = rest.strip_prefix("bty-lab / ")?;
        Some(pw.split_whitespace().next()?.to_string())
    })
}

/// A child's stderr, collected while it runs (serve shows its password
/// once, in a banner, and goes on running).
pub struct Collected(std::sync::Arc<std::sync::Mutex<String>>);

impl Collected {
    /// Read `child`'s piped stderr on a thread from now on.
    pub fn stderr_of(child: &mut std::process::Child) -> Collected {
        use std::io::Read as _;
        let mut err = child.stderr.take().expect("stderr piped");
        let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Collected(buf)
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// The shown password, waiting up to `secs` for it.
    pub fn password(&self, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(p) = printed_password(&self.text()) {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `login: bty-lab / PASSWORD` line:\n{}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// This host's address on its outbound route, if it has one that is not
/// loopback (a UDP connect picks it and sends nothing).
pub fn lan_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
