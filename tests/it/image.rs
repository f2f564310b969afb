//! `bty-lab image add|ls|rm` against `bty-lab serve`: an image added by
//! URL from the command line flows through to a flash plan (withcache's
//! URL, the sha256 and size withcache measured, the origin's bytes behind
//! it) without anyone touching withcache.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::util::{bin, fails_with, ok, stderr, stdout, TestDir};

const MAC: &str = "52:54:00:aa:bb:01";

/// An origin on 127.0.0.1 serving `body` at `/lab.img`, counting GETs.
pub fn origin(body: Vec<u8>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let gets = Arc::new(AtomicUsize::new(0));
    let count = gets.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (body, count) = (body.clone(), count.clone());
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                if head.starts_with("GET /lab.img ") {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&body);
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, gets)
}

/// The admin password this test gives `serve` (`--password-stdin`).
pub const PW: &str = "image-test-password";

/// One HTTP/1.0 request to 127.0.0.1:`port`; (status, body bytes).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("bty-lab:{PW}"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let code = String::from_utf8_lossy(&buf[..end])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (code, buf[end + 4..].to_vec())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bty-lab serve` on loopback ports, stopped (SIGINT) on drop.
pub struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// `bty-lab image ARGS --server URL`, stdin closed (no terminal), with
/// `password` in BTY_ADMIN_PASSWORD when given.
fn image(web: u16, args: &[&str], password: Option<&str>, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("image")
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{web}")])
        .env_remove("BTY_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if let Some(p) = password {
        cmd.env("BTY_ADMIN_PASSWORD", p);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// `bty-lab serve` on free loopback ports with the data dir `t/data`, fake
/// netboot media, the admin password [`PW`] and private origins allowed
/// (the test origins are on 127.0.0.1); (serve, web port, cache port) once
/// both answer.
pub fn start_serve(t: &TestDir) -> (Serve, u16, u16) {
    let (web, cache) = (free_port(), free_port());
    let data = t.path().join("data");
    let media = t.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("bty-netboot-x86_64.vmlinuz"), b"kernel").unwrap();
    std::fs::write(media.join("bty-netboot-x86_64.initrd"), b"initrd").unwrap();
    let mut serve = Serve(
        Command::new(bin())
            .args(["serve", "--password-stdin", "--data-dir"])
            .arg(&data)
            .args(["--port-web", &web.to_string()])
            .args(["--port-cache", &cache.to_string()])
            .arg("--netboot")
            .arg(&media)
            // The test origins are on 127.0.0.1, which withcache refuses by
            // default (issue 12); this is the documented opt-out.
            .arg("--allow-private-origins")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = serve.0.stdin.take().unwrap();
    writeln!(stdin, "{PW}").unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", web)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", cache)).is_err()
    {
        assert!(Instant::now() < deadline, "serve did not start");
        assert!(serve.0.try_wait().unwrap().is_none(), "serve exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    (serve, web, cache)
}

#[test]
fn image_add_by_url_flows_to_a_flash_plan_through_serve() {
    let t = TestDir::new();
    let body: Vec<u8> = (0..(2u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let sha = hex_sha(&body);
    let (origin_port, gets) = origin(body.clone());
    let (serve, web, cache) = start_serve(&t);
    let data = t.path().join("data");
    // serve made one service token for the data dir, private, and gave it
    // to both (the add below works only if withcache takes bty-web's).
    let token_file = data.join("service-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.trim().len(), 43);
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No password and no terminal: a clear error, nothing added.
    let src = format!("http://127.0.0.1:{origin_port}/lab.img");
    let o = image(web, &["add", "lab-image", &src], None, None);
    fails_with(&o, "wants a login");
    fails_with(&o, "BTY_ADMIN_PASSWORD");
    // A wrong password on stdin: refused.
    let o = image(
        web,
        &["add", "lab-image", &src, "--password-stdin"],
        None,
        Some("wrong\n"),
    );
    fails_with(&o, "refused the login");
    // Bad input: the server's message, naming the field.
    let o = image(
        web,
        &["add", "lab-image", &src, "--sha256", &"a".repeat(63)],
        Some(PW),
        None,
    );
    fails_with(&o, "sha256: must be exactly 64 hex digits");
    fails_with(&o, "HTTP 400");
    let o = image(web, &["ls"], Some(PW), None);
    ok(&o);
    assert!(!stdout(&o).contains("lab-image"), "{}", stdout(&o));

    // The add: the password from stdin this time.
    let o = image(
        web,
        &["add", "lab-image", &src, "--password-stdin"],
        None,
        Some(&format!("{PW}\n")),
    );
    ok(&o);
    assert!(stdout(&o).contains("added lab-image"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("http://127.0.0.1:{cache}/b/")),
        "{}",
        stdout(&o)
    );
    // Assignable at once.
    let put =
        r#"{"boot_mode":"bty-flash-once","image":"lab-image","target_disk_serial":"BTYTEST"}"#;
    let (code, b) = http(web, "PUT", &format!("/api/machines/{MAC}"), Some(put));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&b));
    // `image ls` shows withcache's state until the download is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let table = loop {
        let o = image(web, &["ls"], Some(PW), None);
        ok(&o);
        let out = stdout(&o);
        let row = out
            .lines()
            .find(|l| l.starts_with("lab-image"))
            .map(str::to_string);
        if let Some(r) = row.filter(|r| r.ends_with("cached")) {
            break (out, r);
        }
        assert!(Instant::now() < deadline, "never cached:\n{out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let (out, row) = table;
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        row.contains("withcache") && row.contains("img") && row.contains(&sha[..12]),
        "{row}"
    );

    // The machine PXE-boots and fetches the netboot kernel (a plan goes
    // only to the address that did), then the plan: withcache's URL, the
    // sha256 and size withcache measured.
    let (code, _) = http(web, "GET", &format!("/pxe/{MAC}"), None);
    assert_eq!(code, 200);
    let kernel = format!("/boot/bty-netboot-x86_64.vmlinuz?mac={MAC}");
    assert_eq!(http(web, "GET", &kernel, None).0, 200);
    let (code, plan) = http(web, "GET", &format!("/pxe/{MAC}/plan"), None);
    assert_eq!(code, 200);
    let plan: serde_json::Value = serde_json::from_slice(&plan).unwrap();
    let url = plan["image"]["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{cache}/b/")),
        "{plan}"
    );
    assert_eq!(plan["image"]["sha256"], sha.as_str());
    assert_eq!(plan["image"]["size"], body.len() as u64);
    let path = &url[url.find("/b/").unwrap()..];
    let (code, got) = http(cache, "GET", path, None);
    assert_eq!(code, 200);
    assert!(
        got == body,
        "withcache served other bytes than the origin's"
    );
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "the origin was fetched once"
    );

    // rm: gone; a second rm is the server's 404 message.
    let o = image(web, &["rm", "lab-image"], Some(PW), None);
    ok(&o);
    let o = image(web, &["ls"], Some(PW), None);
    assert!(!stdout(&o).contains("lab-image"), "{}", stdout(&o));
    let o = image(web, &["rm", "lab-image"], Some(PW), None);
    fails_with(&o, "no image named \"lab-image\"");
    assert!(stderr(&o).contains("HTTP 404"), "{}", stderr(&o));
    drop(serve);
}

pub fn hex_sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn image_commands_name_an_unreachable_server() {
    let port = free_port();
    let o = image(port, &["ls"], Some("x"), None);
    fails_with(
        &o,
        &format!("cannot reach bty-web at http://127.0.0.1:{port}"),
    );
}
