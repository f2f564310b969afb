//! This binary is the agent (`bty`, `bty-lab agent`), and the media boots
//! for real: one qemu VM (TCG) against a stand-in for bty-web.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{json, lab_env, media_a, INITRD, KERNEL};
use crate::util::{bin, have_tool, ok, on_path, stderr, stdout, TestDir};

#[test]
fn bty_lab_is_the_agent_under_that_name() {
    let t = TestDir::new();
    let link = t.path().join("bty");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = lab_env(&link, &["--version"], &[]);
    ok(&o);
    assert_eq!(
        stdout(&o).trim(),
        format!("bty {}", env!("CARGO_PKG_VERSION"))
    );
    let o = lab_env(&bin(), &["agent", "--help"], &[]);
    ok(&o);
    assert!(stdout(&o).contains("--set-clock"), "{}", stdout(&o));
    // The agent's own exit codes come through: a bad flag is clap's 2.
    let o = lab_env(&bin(), &["agent", "--no-such-flag"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Without a server on the kernel command line it stops at once.
    let o = lab_env(
        &bin(),
        &[
            "agent",
            "--proc-root",
            t.path().to_str().unwrap(),
            "--console",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("no server"), "{}", stdout(&o));
}

/// bty-web as far as the agent needs it for a plan that does nothing:
/// every answer carries a real `Date`. Records "METHOD path" lines.
fn plan_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body its Content-Length announces.
                let (head, body_len) = loop {
                    let n = c.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        break (head, len + i + 4);
                    }
                };
                while buf.len() < body_len {
                    let n = c.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line: Vec<&str> = head
                    .lines()
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                let (method, path) = (
                    line.first().copied().unwrap_or(""),
                    line.get(1).copied().unwrap_or(""),
                );
                s.lock().unwrap().push(format!("{method} {path}"));
                let body = if path.ends_with("/plan") {
                    r#"{"version":1,"mode":"exit"}"#
                } else {
                    "{}"
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    httpdate::fmt_http_date(std::time::SystemTime::now()),
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes());
            });
        }
    });
    (port, seen)
}

#[test]
fn the_media_boots_in_qemu_and_runs_this_binary_as_the_agent() {
    let Some(a) = media_a() else { return };
    if !have_tool("qemu-system-x86_64", on_path("qemu-system-x86_64")) {
        return;
    }
    let t = TestDir::new();
    let (port, seen) = plan_server();
    let mac = "52:54:00:12:34:56";
    let serial = t.path().join("serial.log");
    let nvme = t.path().join("nvme.img");
    std::fs::File::create(&nvme)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let started = Instant::now();
    // The guest's RTC starts in 2001: the agent must set the clock from
    // the server's Date. An NVMe disk: nvme needs t10-pi → crc-t10dif,
    // which asks the crypto API for crct10dif; no modules.dep line names
    // crct10dif_generic, so it is loaded only if the kernel's
    // request_module() reaches busybox through /sbin/modprobe.
    let mut q = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-rtc", "base=2001-02-03T04:05:06"])
        .arg("-kernel")
        .arg(a.out.join(KERNEL))
        .arg("-initrd")
        .arg(a.out.join(INITRD))
        .arg("-append")
        .arg(format!(
            "console=ttyS0,115200 bty.server=http://10.0.2.2:{port} bty.mac={mac}"
        ))
        .args(["-nic", &format!("user,model=virtio-net-pci,mac={mac}")])
        .arg("-drive")
        .arg(format!("file={},if=none,id=n0,format=raw", nvme.display()))
        .args(["-device", "nvme,drive=n0,serial=BTYNVME"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(st) = q.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = q.kill();
            let _ = q.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.is_some(),
        "qemu did not exit (reboot) within 300 s; serial:\n{tail}"
    );
    eprintln!(
        "media boot: qemu start to agent reboot in {:.1}s (TCG)",
        started.elapsed().as_secs_f64()
    );
    let version = json(&a.out.join("media.json"))["info"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let modules = log
        .lines()
        .find(|l| l.contains("bty-netboot: modules:"))
        .unwrap_or_else(|| panic!("no modules line:\n{tail}"));
    for m in [
        "virtio_net",
        "net_failover",
        "failover",
        "virtio_pci",
        "nvme",
        "t10_pi",
        "crc_t10dif",
        "crct10dif_generic",
    ] {
        assert!(
            modules.split_whitespace().any(|w| w == m),
            "{m} not loaded: {modules}"
        );
    }
    for want in [
        format!("bty-netboot: init {version}"),
        "bty-netboot: network up: 10.0.2.15/24".to_string(),
        "bty: entered v".to_string() + env!("CARGO_PKG_VERSION"),
        format!("bty: server http://10.0.2.2:{port} mac {mac}"),
        "bty: clock set from server: ".to_string(),
        "(was Sat, 03 Feb 2001 ".to_string(),
        "bty: plan: exit; rebooting".to_string(),
    ] {
        assert!(log.contains(&want), "serial lacks {want:?}:\n{tail}");
    }
    for bad in ["segfault", "Kernel panic", "can't load module"] {
        assert!(!log.contains(bad), "serial has {bad:?}:\n{tail}");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("POST /pxe/{mac}/inventory")),
        "{seen:?}"
    );
    assert!(seen.contains(&format!("GET /pxe/{mac}/plan")), "{seen:?}");
}
