//! The agent binary against a real HTTP server on 127.0.0.1, flashing into
//! a file (and, where the machine has them, a loop device).

mod common;

use common::*;

fn done_once(s: &Server) -> serde_json::Value {
    let done = s.accepted_done();
    assert_eq!(
        done.len(),
        1,
        "done must be recorded exactly once: {done:?}"
    );
    assert_eq!(done[0]["token"], TOKEN);
    done[0].clone()
}

fn flash_ok(format: &str) {
    let s = Server::start();
    let img = image(6, 7);
    s.flash_plan("a", compress(format, &img), format, "BTYTEST");
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert!(out.status.success(), "{format}: agent failed");
    assert!(
        std::fs::read(&target).unwrap() == img,
        "{format}: on-disk bytes differ from the image"
    );
    let done = done_once(&s);
    assert_eq!(done["ok"], true);
    assert_eq!(done["sha256"], sha(&img), "done carries the on-disk digest");
    let st = s.state.lock().unwrap();
    assert_eq!(st.inventory.len(), 1);
    assert!(!st.progress.is_empty(), "no progress arrived");
    assert!(st.progress.iter().all(|p| p["token"] == TOKEN));
    assert!(st.progress.iter().any(|p| p["phase"] == "writing"));
    assert!(st.progress.iter().any(|p| p["phase"] == "verifying"));
}

#[test]
fn flashes_raw() {
    flash_ok("img");
}
#[test]
fn flashes_gz() {
    flash_ok("img.gz");
}
#[test]
fn flashes_xz() {
    flash_ok("img.xz");
}
#[test]
fn flashes_zst() {
    flash_ok("img.zst");
}
#[test]
fn flashes_bz2() {
    flash_ok("img.bz2");
}

#[test]
fn flashes_qcow2_made_by_qemu_img() {
    if !have_tool("qemu-img") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = image(5, 11);
    let raw = tmpfile(&t, "src.img");
    let q = tmpfile(&t, "src.qcow2");
    std::fs::write(&raw, &img).unwrap();
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    let s = Server::start();
    s.flash_plan("q", std::fs::read(&q).unwrap(), "qcow2", "X");
    let target = tmpfile(&t, "disk.img");
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert!(out.status.success());
    // qcow2's virtual size is rounded up to a sector.
    let on_disk = std::fs::read(&target).unwrap();
    assert_eq!(on_disk.len(), img.len().div_ceil(512) * 512);
    assert!(on_disk[..img.len()] == img[..] && on_disk[img.len()..].iter().all(|&b| b == 0));
    assert_eq!(done_once(&s)["sha256"], sha(&on_disk));
}

#[test]
fn qcow2_written_out_of_order_is_read_with_range_requests() {
    if !have_tool("qemu-img") || !have_tool("qemu-io") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let q = tmpfile(&t, "ooo.qcow2");
    let run = |args: &[&str]| {
        assert!(std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap()
            .success())
    };
    run(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        q.to_str().unwrap(),
        "4M",
    ]);
    // Later guest clusters first: host order is the reverse of guest order.
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -q -P 0x33 3M 64k",
        "-c",
        "write -q -P 0x22 2M 64k",
        "-c",
        "write -q -P 0x11 0 64k",
        q.to_str().unwrap(),
    ]);
    let mut expect = vec![0u8; 4 << 20];
    expect[..64 << 10].fill(0x11);
    expect[2 << 20..(2 << 20) + (64 << 10)].fill(0x22);
    expect[3 << 20..(3 << 20) + (64 << 10)].fill(0x33);
    let s = Server::start();
    s.flash_plan("o", std::fs::read(&q).unwrap(), "qcow2", "X");
    let target = tmpfile(&t, "disk.img");
    assert!(s
        .agent(&["--target-file", target.to_str().unwrap()])
        .status
        .success());
    assert!(std::fs::read(&target).unwrap() == expect);
    assert_eq!(done_once(&s)["sha256"], sha(&expect));
}

#[test]
fn digest_mismatch_fails_reports_and_leaves_head_zeroed() {
    let s = Server::start();
    let img = image(4, 3);
    s.flash_plan("a", compress("img.zst", &img), "img.zst", "X");
    s.state.lock().unwrap().plan["image"]["sha256"] = serde_json::json!("00".repeat(32));
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let done = done_once(&s);
    assert_eq!(done["ok"], false);
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("download sha256 mismatch: expected 0000"),
        "{reason}"
    );
    let on_disk = std::fs::read(&target).unwrap();
    assert!(
        on_disk[..1 << 20].iter().all(|&b| b == 0),
        "first MiB must be zero after a failure"
    );
}

#[test]
fn wrong_serial_is_refused_and_reported() {
    let s = Server::start();
    s.flash_plan("a", image(2, 1), "img", "NOPE");
    let t = tempfile::tempdir().unwrap();
    let sys = t.path().join("sys");
    let proc_ = t.path().join("proc");
    for (name, serial) in [("vda", "BTYTEST"), ("vdb", "DECOY")] {
        let d = sys.join("block").join(name);
        std::fs::create_dir_all(d.join("queue")).unwrap();
        std::fs::write(d.join("size"), "2097152\n").unwrap();
        std::fs::write(d.join("serial"), serial).unwrap();
    }
    std::fs::create_dir_all(proc_.join("self")).unwrap();
    std::fs::write(proc_.join("self/mountinfo"), "").unwrap();
    let args = [
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--proc-root",
        proc_.to_str().unwrap(),
    ];
    let out = s.agent(&args);
    assert_eq!(out.status.code(), Some(1));
    let done = done_once(&s);
    assert_eq!(done["ok"], false);
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.contains("no disk with serial \"NOPE\"") && reason.contains("vda=BTYTEST"),
        "{reason}"
    );
    assert!(
        s.state.lock().unwrap().image_gets.is_empty(),
        "nothing may be downloaded for a refused target"
    );
    // The inventory carried both disks with their serials.
    let inv = s.state.lock().unwrap().inventory[0].clone();
    assert_eq!(inv["disks"][0]["serial"], "BTYTEST");

    // Right serial, but the image does not fit: refused before writing.
    let s2 = Server::start();
    s2.flash_plan("big", image(2, 1), "img", "DECOY");
    std::fs::write(sys.join("block/vdb/size"), "2048\n").unwrap();
    let out = s2.agent(&args);
    assert_eq!(out.status.code(), Some(1));
    let reason = done_once(&s2)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("image needs 2100152 bytes but"),
        "{reason}"
    );
}

#[test]
fn dropped_connection_resumes_with_range() {
    let s = Server::start();
    let img = image(6, 5);
    s.flash_plan("a", compress("img.gz", &img), "img.gz", "X");
    s.state.lock().unwrap().faults.drop_after = Some(300_000);
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    assert!(s
        .agent(&["--target-file", target.to_str().unwrap()])
        .status
        .success());
    assert!(std::fs::read(&target).unwrap() == img);
    assert_eq!(done_once(&s)["sha256"], sha(&img));
    let gets = s.state.lock().unwrap().image_gets.clone();
    let streaming: Vec<_> = gets
        .iter()
        .filter(|(_, r)| r.as_deref().is_none_or(|r| r.ends_with('-')))
        .collect();
    assert_eq!(streaming.len(), 2, "{gets:?}");
    assert_eq!(streaming[1].1.as_deref(), Some("bytes=300000-"));
}

#[test]
fn stalled_origin_times_out_and_resumes() {
    let s = Server::start();
    let img = image(3, 9);
    s.flash_plan("a", img.clone(), "img", "X");
    s.state.lock().unwrap().faults.stall_after = Some(1 << 20);
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let started = std::time::Instant::now();
    let out = s.agent(&[
        "--target-file",
        target.to_str().unwrap(),
        "--stall-timeout",
        "1",
    ]);
    assert!(out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(std::fs::read(&target).unwrap() == img);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stalled"));
    let gets = s.state.lock().unwrap().image_gets.clone();
    assert!(
        gets.iter()
            .any(|(_, r)| r.as_deref() == Some("bytes=1048576-")),
        "{gets:?}"
    );
}

#[test]
fn origin_changing_during_resume_fails_without_corrupting() {
    let s = Server::start();
    let img = image(4, 5);
    s.flash_plan("a", img.clone(), "img", "X");
    {
        let mut st = s.state.lock().unwrap();
        st.faults.drop_after = Some(2 << 20);
        st.faults.change_to = Some(image(4, 6));
    }
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let done = done_once(&s);
    assert_eq!(done["ok"], false);
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .starts_with("origin changed"),
        "{done}"
    );
    let on_disk = std::fs::read(&target).unwrap();
    assert!(on_disk[..1 << 20].iter().all(|&b| b == 0));
}

#[test]
fn done_is_retried_through_5xx_and_recorded_once() {
    let s = Server::start();
    let img = image(2, 2);
    s.flash_plan("a", img.clone(), "img", "X");
    s.state.lock().unwrap().done_failures = vec![503, 500, 502];
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    assert!(s
        .agent(&["--target-file", target.to_str().unwrap()])
        .status
        .success());
    let st = s.state.lock().unwrap();
    assert_eq!(st.done.len(), 4, "three failures then one success");
    assert!(
        st.done.iter().all(|(_, b)| b == &st.done[0].1),
        "the same report every time"
    );
    drop(st);
    assert_eq!(done_once(&s)["ok"], true);
}

#[test]
fn done_answered_409_is_not_retried() {
    let s = Server::start();
    s.flash_plan("a", image(2, 2), "img", "X");
    s.state.lock().unwrap().done_failures = vec![409];
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    assert!(s
        .agent(&["--target-file", target.to_str().unwrap()])
        .status
        .success());
    assert_eq!(s.state.lock().unwrap().done.len(), 1);
}

#[test]
fn format_mismatch_is_refused() {
    let s = Server::start();
    let img = image(2, 2);
    s.flash_plan("a.img.gz", compress("img.zst", &img), "img.gz", "X");
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    assert_eq!(
        s.agent(&["--target-file", target.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let reason = done_once(&s)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("plan says format img.gz but the image starts like img.zst"),
        "{reason}"
    );
}

#[test]
fn non_flash_modes_write_nothing() {
    let s = Server::start();
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    s.state.lock().unwrap().plan = serde_json::json!({"version": 1, "mode": "teleport"});
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!target.exists());
    s.state.lock().unwrap().plan = serde_json::json!({"version": 1, "mode": "exit"});
    assert!(s
        .agent(&["--target-file", target.to_str().unwrap()])
        .status
        .success());
    assert!(!target.exists());
    assert!(s.state.lock().unwrap().done.is_empty());
}

#[test]
fn plan_fetch_retries_until_the_server_answers() {
    // Reserve a port, start the agent against it, then start serving there.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_bty"))
        .args([
            "--server",
            &format!("http://{addr}"),
            "--mac",
            MAC,
            "--once",
            "--no-reboot",
        ])
        .args(["--target-file", target.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let l = std::net::TcpListener::bind(addr).unwrap();
    // One plan request answered by hand: mode exit.
    let (mut c, _) = l.accept().unwrap();
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    let req = String::from_utf8_lossy(&buf[..n]).to_string();
    let body = r#"{"version":1,"mode":"exit"}"#;
    if req.starts_with("POST") {
        // A late inventory post: accept it, then take the plan request.
        write!(c, "HTTP/1.1 204 No\r\nConnection: close\r\n\r\n").unwrap();
        drop(c);
        let (c2, _) = l.accept().unwrap();
        c = c2;
        let _ = c.read(&mut buf).unwrap();
    }
    write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    drop(c);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("retrying"));
}

/// A flash plan whose image lacks `field` (or has it set to `value`) is
/// refused: a failed flash reported to bty-web with `reason_has` in the
/// reason, nothing downloaded, the target file untouched.
fn refused_plan(field: &str, value: Option<serde_json::Value>, reason_has: &str) {
    let s = Server::start();
    s.flash_plan("a", image(2, 4), "img", "X");
    {
        let mut st = s.state.lock().unwrap();
        let img = st.plan["image"].as_object_mut().unwrap();
        match value {
            Some(v) => img.insert(field.to_string(), v),
            None => img.remove(field),
        };
    }
    let t = tempfile::tempdir().unwrap();
    let target = tmpfile(&t, "disk.img");
    let before: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&target, &before).unwrap();
    let out = s.agent(&["--target-file", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{field}: must fail");
    let done = done_once(&s);
    assert_eq!(done["ok"], false);
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("invalid plan: ") && reason.contains(reason_has),
        "{field}: {reason}"
    );
    assert!(
        std::fs::read(&target).unwrap() == before,
        "{field}: the target must be untouched"
    );
    let gets = s.state.lock().unwrap().image_gets.clone();
    assert!(
        gets.is_empty(),
        "{field}: nothing may be downloaded: {gets:?}"
    );
}

#[test]
fn plan_without_sha256_is_refused_and_target_untouched() {
    refused_plan("sha256", None, "has no sha256");
}

#[test]
fn plan_with_malformed_sha256_is_refused_and_target_untouched() {
    refused_plan("sha256", Some(serde_json::json!("abc")), "malformed sha256");
}

#[test]
fn plan_without_size_is_refused_and_target_untouched() {
    refused_plan("size", None, "has no size");
}

/// A disk stand-in for [`bty_agent::flash::Destination::Device`]: a
/// regular file under a `dev` directory of its own, described by a fake
/// sysfs, 0xAA throughout but for a GPT-like last MiB (backup partition
/// entries, then the backup header "EFI PART" in the last sector).
struct FakeDisk {
    _dir: tempfile::TempDir,
    host: bty_agent::target::Host,
    path: std::path::PathBuf,
}

const FAKE_DISK: usize = 8 << 20;

fn gpt_like_tail() -> Vec<u8> {
    let mut tail = vec![0x5au8; 1 << 20];
    let last = tail.len() - 512;
    tail[last..last + 8].copy_from_slice(b"EFI PART");
    tail
}

impl FakeDisk {
    fn new() -> FakeDisk {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let proc_ = dir.path().join("proc");
        let dev = dir.path().join("dev");
        let d = sys.join("block/fakedisk");
        std::fs::create_dir_all(d.join("queue")).unwrap();
        std::fs::write(d.join("size"), format!("{}\n", FAKE_DISK / 512)).unwrap();
        std::fs::create_dir_all(proc_.join("self")).unwrap();
        std::fs::write(proc_.join("self/mountinfo"), "").unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let path = dev.join("fakedisk");
        let mut old = vec![0xaau8; FAKE_DISK - (1 << 20)];
        old.extend(gpt_like_tail());
        std::fs::write(&path, old).unwrap();
        FakeDisk {
            _dir: dir,
            host: bty_agent::target::Host {
                sys,
                proc: proc_,
                dev,
            },
            path,
        }
    }

    /// Run the plan `s` serves against this disk through the library.
    fn flash(&self, s: &Server) -> bty_agent::Result<bty_agent::flash::Outcome> {
        use bty_agent::{console::Console, flash, net, report};
        let plan: bty_proto::plan::Plan =
            serde_json::from_value(s.state.lock().unwrap().plan.clone()).unwrap();
        let http = net::agent(net::Timeouts {
            connect: std::time::Duration::from_secs(5),
            stall: std::time::Duration::from_secs(5),
        });
        let console = Console::new(&[]);
        let urls = plan.report.clone().unwrap();
        let rep = report::Reporter::start(
            http.clone(),
            report::Channel {
                progress: urls.progress,
                done: urls.done,
                token: TOKEN.into(),
            },
            console.clone(),
            std::time::Duration::from_millis(50),
        );
        let dest = flash::Destination::Device(self.host.clone(), "fakedisk".into());
        let job = flash::Job {
            http: &http,
            console: &console,
            dest: &dest,
            retry: bty_agent::source::Retry::default(),
        };
        flash::run(&job, &plan, &rep)
    }
}

#[test]
fn wipe_zeroes_the_gpt_backup_in_the_last_mib() {
    let disk = FakeDisk::new();
    let s = Server::start();
    let img = image(2, 8);
    s.flash_plan("a", img.clone(), "img", "X");
    let out = disk.flash(&s).unwrap();
    assert_eq!(out.sha256, sha(&img));
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert_eq!(on_disk.len(), FAKE_DISK);
    assert!(on_disk[..img.len()] == img[..], "image bytes differ");
    assert!(
        on_disk[img.len()..FAKE_DISK - (1 << 20)]
            .iter()
            .all(|&b| b == 0xaa),
        "between the image and the last MiB: untouched"
    );
    assert!(
        on_disk[FAKE_DISK - (1 << 20)..].iter().all(|&b| b == 0),
        "the old backup GPT in the last MiB must be gone"
    );
}

#[test]
fn failed_flash_zeroes_the_first_and_last_mib() {
    let disk = FakeDisk::new();
    let s = Server::start();
    s.flash_plan("a", image(2, 9), "img", "X");
    s.state.lock().unwrap().plan["image"]["sha256"] = serde_json::json!("cd".repeat(32));
    let err = disk.flash(&s).unwrap_err();
    assert!(
        err.to_string().starts_with("download sha256 mismatch"),
        "{err}"
    );
    let on_disk = std::fs::read(&disk.path).unwrap();
    assert!(on_disk[..1 << 20].iter().all(|&b| b == 0), "first MiB");
    assert!(
        on_disk[FAKE_DISK - (1 << 20)..].iter().all(|&b| b == 0),
        "last MiB: no backup GPT may survive a failed flash"
    );

    // A failure before the wipe (a plan without sha256) writes nothing.
    let disk = FakeDisk::new();
    let before = std::fs::read(&disk.path).unwrap();
    s.state.lock().unwrap().plan["image"]
        .as_object_mut()
        .unwrap()
        .remove("sha256");
    let err = disk.flash(&s).unwrap_err();
    assert!(err.to_string().contains("has no sha256"), "{err}");
    assert!(std::fs::read(&disk.path).unwrap() == before, "untouched");
}
