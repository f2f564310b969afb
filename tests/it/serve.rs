//! `bty-lab serve`: the whole stack in one process, no engine.

use std::io::{Read as _, Write as _};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::{atftp_get, bin, have_tool, lan_address, on_path, Collected, TestDir};

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET; (status, body) or None if nothing answers yet.
fn get(port: u16, path: &str, basic: Option<(&str, &str)>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some((u, p)) = basic {
        let tok = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req += &format!("Authorization: Basic {tok}\r\n");
    }
    s.write_all(format!("{req}\r\n").as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}

/// A media directory with a kernel and an initrd that are not bty's (an
/// operator's `--netboot DIR`), so tests about other things need no media
/// build; with `ipxe`, fake iPXE bootfiles too.
fn fake_media(dir: &std::path::Path, ipxe: bool) -> std::path::PathBuf {
    let m = dir.join("fake-media");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("bty-netboot-x86_64.vmlinuz"), b"fake kernel").unwrap();
    std::fs::write(m.join("bty-netboot-x86_64.initrd"), b"fake initrd").unwrap();
    if ipxe {
        for f in ["undionly.kpxe", "snponly.efi", "ipxe.efi"] {
            let bytes: Vec<u8> = f.bytes().cycle().take(3000).collect();
            std::fs::write(m.join(f), bytes).unwrap();
        }
    }
    m
}

/// The default serve (no --bind, no password given): loopback only, a
/// random password shown once, only its hash kept.
#[test]
fn serve_runs_the_stack_and_stops_on_ctrl_c() {
    let t = TestDir::new();
    let (pw, pc, pt) = (free_tcp(), free_tcp(), free_udp());
    let data = t.path().join("data");
    let media = fake_media(t.path(), true);
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--netboot",
            media.to_str().unwrap(),
        ])
        .args([
            "--port-web",
            &pw.to_string(),
            "--port-cache",
            &pc.to_string(),
            "--tftp-port",
            &pt.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Collected::stderr_of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(pw, "/healthz", None).map(|r| r.0) != Some(200)
        || get(pc, "/healthz", None).map(|r| r.0) != Some(200)
    {
        assert!(Instant::now() < deadline, "serve did not become healthy");
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both UIs want a login: the shown random password, not the old
    // well-known `bty-lab`.
    let password = out.password(30);
    assert!(password.len() >= 20, "{password}");
    assert_eq!(get(pw, "/api/machines", None).unwrap().0, 401);
    for (port, path) in [(pw, "/api/machines"), (pc, "/blobs")] {
        let old = get(port, path, Some(("bty-lab", "bty-lab"))).unwrap().0;
        assert_eq!(old, 401, "{path} took the old default password");
        let ok = get(port, path, Some(("bty-lab", &password))).unwrap().0;
        assert_eq!(ok, 200, "{path} refused the shown password");
    }
    // Only the hash is on disk, private.
    let hash = std::fs::read_to_string(data.join("admin-password-hash")).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    for f in ["admin-password-hash", "bty.toml"] {
        let text = std::fs::read_to_string(data.join(f)).unwrap();
        assert!(!text.contains(&password), "{f} holds the password");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }
    // Loopback only: the host's LAN address gets no answer.
    assert!(out.text().contains("--bind 0.0.0.0"), "{}", out.text());
    if let Some(lan) = lan_address() {
        assert!(
            std::net::TcpStream::connect((lan, pw)).is_err(),
            "bty-web answers on {lan} without --bind"
        );
    }
    assert_eq!(
        get(pc, "/blobs", Some(("bty-lab", "wrong-password")))
            .unwrap()
            .0,
        401
    );
    // bty-web's config points at the in-process withcache.
    let toml = std::fs::read_to_string(data.join("bty.toml")).unwrap();
    assert!(toml.contains(&format!(":{pc}\"")), "{toml}");
    // TFTP answers with the media's bootfile (the first block of it).
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"\x00\x01undionly.kpxe\x00octet\x00", ("127.0.0.1", pt))
        .unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = u.recv_from(&mut buf).expect("TFTP reply");
    assert_eq!(buf[1], 3, "TFTP opcode, {n} bytes");
    let kpxe = std::fs::read(media.join("undionly.kpxe")).unwrap();
    assert_eq!(&buf[4..n], &kpxe[..512]);

    // Ctrl-C (SIGINT) stops everything, exit 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "serve did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    let err = out.text();
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(err.contains("stopped"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pw)).is_err(),
        "bty-web still listening"
    );
}

/// `--password-stdin` sets the password both UIs take, and a later start
/// keeps it; a weak one is refused before anything is started.
#[test]
fn serve_password_stdin_sets_the_login_and_a_weak_one_starts_nothing() {
    let t = TestDir::new();
    let data = t.path().join("data");
    let media = fake_media(t.path(), false);
    let (pw, pc) = (free_tcp(), free_tcp());
    let start = |stdin: &str| {
        let mut c = Command::new(bin())
            .args(["serve", "--password-stdin", "--data-dir"])
            .arg(&data)
            .arg("--netboot")
            .arg(&media)
            .args([
                "--port-web",
                &pw.to_string(),
                "--port-cache",
                &pc.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c
    };
    for weak in ["short\n", "bty-lab\n"] {
        let o = start(weak).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("choose"), "{err}");
        assert!(get(pw, "/healthz", None).is_none(), "something listens");
        assert!(!data.join("admin-password-hash").exists());
    }
    let mut child = start("correct horse battery\n");
    let out = Collected::stderr_of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(pc, "/healthz", None).map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            out.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        out.text().contains("the password given on stdin"),
        "{}",
        out.text()
    );
    assert_eq!(
        crate::util::printed_password(&out.text()),
        None,
        "nothing to show"
    );
    for (port, path) in [(pw, "/api/machines"), (pc, "/blobs")] {
        let ok = get(port, path, Some(("bty-lab", "correct horse battery")));
        assert_eq!(ok.unwrap().0, 200, "{path}");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success(), "{}", out.text());
    // The next start without --password-stdin keeps it.
    let err = with_serve(&data, &["--netboot", media.to_str().unwrap()], &[], |p| {
        let ok = get(
            p,
            "/api/machines",
            Some(("bty-lab", "correct horse battery")),
        );
        assert_eq!(ok.unwrap().0, 200);
    });
    assert!(
        err.contains("the password shown at the first start"),
        "{err}"
    );
}

#[test]
fn serve_names_a_busy_port() {
    let t = TestDir::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().port();
    let o = Command::new(bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--data-dir",
            t.path().to_str().unwrap(),
        ])
        .args([
            "--port-web",
            &busy.to_string(),
            "--port-cache",
            &free_tcp().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{busy}")) && err.contains("in use"),
        "{err}"
    );
}

/// GET returning the raw body bytes (bootfiles are binary).
fn get_bytes(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf[end + 4..].to_vec()))
}

/// Run `serve` with `args` (and no BTY_NETBOOT_DIR) and `env`, call
/// `check(web_port)` once healthy, stop it; returns its stderr.
fn with_serve(
    data: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    check: impl FnOnce(u16),
) -> String {
    let (pw, pc) = (free_tcp(), free_tcp());
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--bind", "127.0.0.1", "--data-dir"])
        .arg(data)
        .args([
            "--port-web",
            &pw.to_string(),
            "--port-cache",
            &pc.to_string(),
        ])
        .args(args)
        .env_remove("BTY_NETBOOT_DIR")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A cold media build (`--from`) comes first.
    let deadline = Instant::now() + Duration::from_secs(300);
    while get(pw, "/healthz", None).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "serve did not become healthy");
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    check(pw);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    err
}

#[test]
fn serve_places_the_netboot_media_from_netboot_dir() {
    let t = TestDir::new();
    let media = t.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    // Fake media: binary bytes that are not valid UTF-8, distinct per file.
    let kernel: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8 | 0x80).collect();
    let initrd: Vec<u8> = (0..90_001u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(media.join("bty-netboot-x86_64.vmlinuz"), &kernel).unwrap();
    std::fs::write(media.join("bty-netboot-x86_64.initrd"), &initrd).unwrap();
    let data = t.path().join("data");
    let m = media.to_str().unwrap();
    let err = with_serve(&data, &["--netboot", m], &[], |pw| {
        for (name, bytes) in [
            ("bty-netboot-x86_64.vmlinuz", &kernel),
            ("bty-netboot-x86_64.initrd", &initrd),
        ] {
            let (code, body) = get_bytes(pw, &format!("/boot/{name}")).unwrap();
            assert_eq!(code, 200, "{name}");
            assert!(body == *bytes, "{name}: served bytes differ");
        }
    });
    assert!(
        err.contains("media: placed a kernel and initrd without a bty info file"),
        "{err}"
    );
    // The operator's media is recorded as theirs.
    let rec = std::fs::read_to_string(data.join("boot/.operator-media.json")).unwrap();
    assert!(rec.contains(m), "{rec}");

    // New media replace the old (and say so).
    let kernel2: Vec<u8> = kernel.iter().map(|b| b ^ 0x55).collect();
    std::fs::write(media.join("bty-netboot-x86_64.vmlinuz"), &kernel2).unwrap();
    let err = with_serve(&data, &["--netboot", m], &[], |pw| {
        let (_, body) = get_bytes(pw, "/boot/bty-netboot-x86_64.vmlinuz").unwrap();
        assert!(body == kernel2, "old kernel still served");
    });
    assert!(err.contains("replacing"), "{err}");
    // The same media again: nothing copied.
    let err = with_serve(&data, &["--netboot", m], &[], |_| {});
    assert!(err.contains("already holds"), "{err}");
}

/// `--netboot DIR` without a kernel and an initrd: refused before
/// anything listens, naming the directory and what it lacks.
#[test]
fn serve_refuses_a_netboot_dir_without_media() {
    let t = TestDir::new();
    let missing = t.path().join("no-media-here");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(missing.join("bty-netboot-x86_64.vmlinuz"), b"k").unwrap();
    let pw = free_tcp();
    let o = Command::new(bin())
        .args(["serve", "--bind", "127.0.0.1", "--data-dir"])
        .arg(t.path().join("data"))
        .args(["--port-web", &pw.to_string()])
        .args(["--port-cache", &free_tcp().to_string()])
        .arg("--netboot")
        .arg(&missing)
        .env_remove("BTY_NETBOOT_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{} has no bty-netboot-x86_64.initrd",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("bty-lab media build --out DIR"), "{err}");
    assert!(!err.contains("bty-web UI"), "{err}");
    assert!(!t.path().join("data/bty.toml").exists());
    // $BTY_NETBOOT_DIR is the same as the flag.
    let o = Command::new(bin())
        .args(["serve", "--bind", "127.0.0.1", "--data-dir"])
        .arg(t.path().join("data"))
        .args(["--port-web", &pw.to_string()])
        .args(["--port-cache", &free_tcp().to_string()])
        .env("BTY_NETBOOT_DIR", &missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("has no bty-netboot-x86_64.initrd"), "{err}");
}

/// `serve` with no `--netboot`: this binary's media, built from the test
/// .debs with `--from` (no apt on PATH, an empty cache), placed into the
/// boot dir and served by bty-web at /boot/; the next start finds it in
/// the cache (no `--from`, still no apt).
#[test]
fn serve_builds_places_and_serves_this_binarys_media() {
    let Some(debs) = crate::media::debs() else {
        return;
    };
    let t = TestDir::new();
    let data = t.path().join("data");
    let cache = t.path().join("cache");
    let no_apt = t.path().join("empty-path");
    std::fs::create_dir_all(&no_apt).unwrap();
    let env = [
        ("PATH", no_apt.to_str().unwrap()),
        ("BTY_MEDIA_CACHE", cache.to_str().unwrap()),
    ];
    let boot = data.join("boot");
    let files = [
        "bty-netboot-x86_64.vmlinuz",
        "bty-netboot-x86_64.initrd",
        "undionly.kpxe",
        "snponly.efi",
        "ipxe.efi",
    ];
    let err = with_serve(&data, &["--from", debs.to_str().unwrap()], &env, |pw| {
        for f in files {
            let (code, body) = get_bytes(pw, &format!("/boot/{f}")).unwrap();
            assert_eq!(code, 200, "{f}");
            assert!(
                body == std::fs::read(boot.join(f)).unwrap(),
                "{f}: served bytes differ from the boot dir's"
            );
        }
    });
    assert!(err.contains("media: built "), "{err}");
    assert!(err.contains("media: placed media "), "{err}");
    // The initrd's agent is this very binary.
    let info = crate::media::initrd_info(&boot.join("bty-netboot-x86_64.initrd"));
    assert_eq!(info["agent_sha256"], crate::media::sha256(&bin()), "{info}");
    assert_eq!(info["agent_version"], env!("CARGO_PKG_VERSION"));
    // Each file is the cached media's, byte for byte.
    let cached: Vec<_> = std::fs::read_dir(cache.join("media"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    for f in files {
        assert_eq!(
            crate::media::sha256(&cached[0].join(f)),
            crate::media::sha256(&boot.join(f)),
            "{f}"
        );
    }
    assert!(!boot.join(".operator-media.json").exists());

    // Again, no --from: a cache hit, and the boot dir already holds it.
    let err = with_serve(&data, &[], &env, |_| {});
    assert!(err.contains("media: using the cached media"), "{err}");
    assert!(err.contains("already holds media"), "{err}");
}

/// No apt, no `--from`, an empty cache: serve stops before listening,
/// naming the ways out; nothing was placed.
#[test]
fn serve_without_a_way_to_get_media_does_not_start() {
    let t = TestDir::new();
    let no_apt = t.path().join("empty-path");
    std::fs::create_dir_all(&no_apt).unwrap();
    let (pw, pc) = (free_tcp(), free_tcp());
    let data = t.path().join("data");
    let o = Command::new(bin())
        .args(["serve", "--bind", "127.0.0.1", "--data-dir"])
        .arg(&data)
        .args(["--port-web", &pw.to_string()])
        .args(["--port-cache", &pc.to_string()])
        // Empty is unset: this binary's media is wanted.
        .env("BTY_NETBOOT_DIR", "")
        .env("PATH", &no_apt)
        .env("BTY_MEDIA_CACHE", t.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for needle in [
        "no netboot media, so no machine could be flashed",
        "no apt-get",
        "pass --from DIR",
        "--netboot DIR",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!err.contains("bty-web UI"), "{err}");
    assert!(
        !data.join("bty.toml").exists(),
        "serve went on after the error"
    );
    assert!(
        !data.join("boot").exists()
            || std::fs::read_dir(data.join("boot"))
                .unwrap()
                .next()
                .is_none()
    );
    for port in [pw, pc] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} was left bound"
        );
    }
}

/// Start `serve` on 127.0.0.1 with TFTP on `pt` and `extra` flags; wait
/// until bty-web answers. Returns the child and bty-web's port.
fn serve_with_tftp(data: &std::path::Path, pt: u16, extra: &[&str]) -> (std::process::Child, u16) {
    let (pw, pc) = (free_tcp(), free_tcp());
    // Media without iPXE files: the test's own bootfile in the boot dir stays.
    let media = fake_media(data.parent().unwrap(), false);
    let mut child = Command::new(bin())
        .args(["serve", "--bind", "127.0.0.1", "--data-dir"])
        .arg(data)
        .args([
            "--port-web",
            &pw.to_string(),
            "--port-cache",
            &pc.to_string(),
            "--tftp-port",
            &pt.to_string(),
        ])
        .args(extra)
        .arg("--netboot")
        .arg(&media)
        .env_remove("BTY_NETBOOT_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(pw, "/healthz", None).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "serve did not become healthy");
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    (child, pw)
}

/// Wait until a TFTP server on 127.0.0.1:`pt` answers a request.
fn wait_for_tftp(pt: u16) {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "internal tftp did not answer");
        u.send_to(b"\x00\x01missing\x00octet\x00", ("127.0.0.1", pt))
            .unwrap();
        if u.recv_from(&mut [0u8; 512]).is_ok() {
            return;
        }
    }
}

/// SIGINT, wait, stderr.
fn stop(mut child: std::process::Child) -> String {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    err
}

/// A fake bootfile in DATA/boot before serve starts (serve keeps it).
fn fake_kpxe(data: &std::path::Path) -> Vec<u8> {
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::create_dir_all(data.join("boot")).unwrap();
    std::fs::write(data.join("boot/undionly.kpxe"), &bytes).unwrap();
    bytes
}

/// `serve --tftp-port P`, no other flag: a client that fetched
/// undionly.kpxe gets, on its next fetch from the same address, the iPXE
/// script chaining to serve's own bty-web; then the binary again.
#[test]
fn serve_breaks_the_ipxe_tftp_loop_by_default() {
    if !have_tool("atftp", on_path("atftp")) {
        return;
    }
    let t = TestDir::new();
    let data = t.path().join("data");
    let binary = fake_kpxe(&data);
    let pt = free_udp();
    let (child, pw) = serve_with_tftp(&data, pt, &[]);
    let first = atftp_get(pt, "undionly.kpxe", t.path());
    let second = atftp_get(pt, "undionly.kpxe", t.path());
    let third = atftp_get(pt, "undionly.kpxe", t.path());
    let err = stop(child);
    assert!(first == binary, "first fetch is not the binary");
    let script = String::from_utf8(second).expect("second fetch is text");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "chain http://127.0.0.1:{pw}/pxe-bootstrap.ipxe || exit"
        )),
        "{script}"
    );
    assert!(third == binary, "binary and script do not alternate");
    assert!(
        err.contains("second stage: undionly.kpxe, snponly.efi, ipxe.efi"),
        "{err}"
    );
}

/// `serve --no-second-stage`: every fetch is the binary.
#[test]
fn serve_no_second_stage_serves_the_binary_every_time() {
    if !have_tool("atftp", on_path("atftp")) {
        return;
    }
    let t = TestDir::new();
    let data = t.path().join("data");
    let binary = fake_kpxe(&data);
    let pt = free_udp();
    let (child, _) = serve_with_tftp(&data, pt, &["--no-second-stage"]);
    let first = atftp_get(pt, "undionly.kpxe", t.path());
    let second = atftp_get(pt, "undionly.kpxe", t.path());
    let err = stop(child);
    assert!(first == binary && second == binary, "a script was served");
    assert!(err.contains("second stage: off"), "{err}");
}

/// `bty-lab internal tftp` (the bty-tftp image's entrypoint) takes the
/// loop breaker from BTY_TFTP_SECOND_STAGE: a rule list, `off`, unset
/// (on, chaining to ${next-server}:8080), or a bad value (refused at start
/// with the key named).
#[test]
fn internal_tftp_reads_the_loop_breaker_from_the_env() {
    if !have_tool("atftp", on_path("atftp")) {
        return;
    }
    let t = TestDir::new();
    let root = t.path().join("root");
    let binary = fake_kpxe(&root);
    let root = root.join("boot");
    let run = |spec: Option<&str>| -> (Vec<u8>, Vec<u8>, String) {
        let pt = free_udp();
        let mut cmd = Command::new(bin());
        cmd.args(["internal", "tftp"])
            .env("BTY_TFTP_LISTEN", format!("127.0.0.1:{pt}"))
            .env("BTY_TFTP_ROOT", &root)
            .env_remove("BTY_TFTP_SECOND_STAGE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(s) = spec {
            cmd.env("BTY_TFTP_SECOND_STAGE", s);
        }
        let child = cmd.spawn().unwrap();
        wait_for_tftp(pt);
        let a = atftp_get(pt, "/undionly.kpxe", t.path());
        let b = atftp_get(pt, "undionly.kpxe", t.path());
        (a, b, stop(child))
    };

    let (a, b, err) = run(Some(
        "undionly.kpxe=http://192.0.2.7:9999/pxe-bootstrap.ipxe,ipxe.efi",
    ));
    assert!(a == binary, "{err}");
    let script = String::from_utf8(b).unwrap();
    assert!(
        script.contains("chain http://192.0.2.7:9999/pxe-bootstrap.ipxe"),
        "{script}"
    );

    let (a, b, err) = run(Some("off"));
    assert!(
        a == binary && b == binary,
        "off still served a script: {err}"
    );
    assert!(err.contains("second stage: off"), "{err}");

    let (_, b, _) = run(None);
    let script = String::from_utf8(b).unwrap();
    assert!(
        script.contains("chain http://${next-server}:8080/pxe-bootstrap.ipxe"),
        "{script}"
    );

    let o = Command::new(bin())
        .args(["internal", "tftp"])
        .env("BTY_TFTP_LISTEN", format!("127.0.0.1:{}", free_udp()))
        .env("BTY_TFTP_ROOT", &root)
        .env("BTY_TFTP_SECOND_STAGE", "undionly.kpxe=ftp://h/x")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("BTY_TFTP_SECOND_STAGE") && err.contains("http://"),
        "{err}"
    );
}

/// The Secure Boot chain through `serve`: GRUB's reads under `grub/` go
/// over TFTP to bty-tftp, which relays them to serve's own bty-web with
/// the key serve made for this run: the common config, the per-MAC answer
/// (its kernel command line naming bty-web as the machine reaches it) and
/// the kernel's bytes. The key stays inside the process: a request that
/// names a client with a guessed key is refused.
#[test]
fn serve_relays_the_secure_boot_chains_grub_reads_to_its_bty_web() {
    if !have_tool("atftp", on_path("atftp")) {
        return;
    }
    let t = TestDir::new();
    let data = t.path().join("data");
    let pt = free_udp();
    let (child, pw) = serve_with_tftp(&data, pt, &[]);
    let common = String::from_utf8(atftp_get(pt, "grub/grub.cfg", t.path())).unwrap();
    let mine = atftp_get(pt, "grub/grub.cfg-52:54:00:5e:c0:01", t.path());
    let mine = String::from_utf8(mine).unwrap();
    let kernel = atftp_get(
        pt,
        "grub/boot/52-54-00-5e-c0-01/bty-netboot-x86_64.vmlinuz",
        t.path(),
    );
    let forged = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "x-bty-relay-client: 127.0.0.9"])
        .args(["-H", "x-bty-relay-key: guessed"])
        .arg(format!(
            "http://127.0.0.1:{pw}/grub/grub.cfg-52:54:00:5e:c0:02"
        ))
        .output()
        .unwrap();
    let err = stop(child);
    assert!(
        common.contains("source $prefix/grub.cfg-$net_default_mac"),
        "{common}"
    );
    assert!(
        mine.contains(&format!("bty.server=http://127.0.0.1:{pw} ")),
        "{mine}"
    );
    assert!(
        mine.contains("linux $prefix/boot/52-54-00-5e-c0-01/bty-netboot-x86_64.vmlinuz"),
        "{mine}"
    );
    assert_eq!(kernel, b"fake kernel");
    assert_eq!(String::from_utf8_lossy(&forged.stdout), "403");
    assert!(
        err.contains(&format!("relay=\"http://127.0.0.1:{pw}\"")),
        "{err}"
    );
}

/// The containers' way: `internal web` takes the relay key from
/// BTY_PXE_RELAY_KEY and `internal tftp` from BTY_TFTP_RELAY_KEY, with
/// BTY_TFTP_RELAY naming bty-web (what deploy renders from envvars). The
/// same key relays; another key gets TFTP's access violation; a relay
/// without a key does not start.
#[test]
fn internal_tftp_relays_to_internal_web_with_the_key_from_the_env() {
    if !have_tool("atftp", on_path("atftp")) {
        return;
    }
    let t = TestDir::new();
    let (state, boot) = (t.path().join("state"), t.path().join("boot"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&boot).unwrap();
    let pw = free_tcp();
    let toml = t.path().join("bty.toml");
    std::fs::write(
        &toml,
        format!(
            "[server]\nlisten = \"127.0.0.1:{pw}\"\nstate_dir = {state:?}\n[boot]\ndir = {boot:?}\n"
        ),
    )
    .unwrap();
    let web = Command::new(bin())
        .args(["internal", "web"])
        .env("BTY_CONFIG_FILE", &toml)
        .env("BTY_PXE_RELAY_KEY", "key-from-envvars-0123456789")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(pw, "/healthz", None).map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "internal web did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tftp = |key: Option<&str>| {
        let pt = free_udp();
        let mut cmd = Command::new(bin());
        cmd.args(["internal", "tftp"])
            .env("BTY_TFTP_LISTEN", format!("127.0.0.1:{pt}"))
            .env("BTY_TFTP_ROOT", &boot)
            .env("BTY_TFTP_RELAY", format!("http://127.0.0.1:{pw}"))
            .env_remove("BTY_TFTP_RELAY_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(k) = key {
            cmd.env("BTY_TFTP_RELAY_KEY", k);
        }
        (cmd.spawn().unwrap(), pt)
    };
    let (same, pt) = tftp(Some("key-from-envvars-0123456789"));
    wait_for_tftp(pt);
    let cfg = atftp_get(pt, "grub/grub.cfg-52:54:00:5e:c0:03", t.path());
    let err = stop(same);
    let cfg = String::from_utf8(cfg).unwrap();
    assert!(
        cfg.contains(&format!("bty.server=http://127.0.0.1:{pw} ")),
        "{cfg}\n{err}"
    );

    let (other, pt) = tftp(Some("not-the-key"));
    wait_for_tftp(pt);
    let o = Command::new("timeout")
        .args(["30", "atftp", "--get", "-r", "grub/grub.cfg", "-l"])
        .arg(t.path().join("refused"))
        .args(["127.0.0.1", &pt.to_string()])
        .output()
        .unwrap();
    let err = stop(other);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "a wrong key relayed: {said}");
    assert!(said.contains("relay_key"), "{said}\n{err}");

    let o = Command::new(bin())
        .args(["internal", "tftp"])
        .env("BTY_TFTP_LISTEN", format!("127.0.0.1:{}", free_udp()))
        .env("BTY_TFTP_ROOT", &boot)
        .env("BTY_TFTP_RELAY", format!("http://127.0.0.1:{pw}"))
        .env_remove("BTY_TFTP_RELAY_KEY")
        .output()
        .unwrap();
    let web_err = stop(web);
    assert!(!o.status.success(), "{web_err}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("BTY_TFTP_RELAY_KEY"), "{err}");
}
