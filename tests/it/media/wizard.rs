//! The media's wizard mode, booted for real: qemu (TCG) with the netboot
//! kernel and initrd, `bty.mode=wizard`, a USB stick on an xHCI controller
//! (an ext4 file system labelled BTY-DATA holding the manifest and one
//! image, attached read-only) and a virtio disk with a serial. The manifest
//! is unattended (`auto`, `after: poweroff`), so /init has to load the USB
//! and ext4 drivers, find and mount the stick, and run the wizard, which
//! flashes the disk, verifies it and powers the VM off. (The stick's real
//! layout, GPT with an ESP, and its boot through the firmware are `usb
//! build`'s tests.)

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{media_a, INITRD, KERNEL};
use crate::util::{have_tool, on_path, TestDir};

/// A stick's data partition as an ext4 image labelled BTY-DATA holding one
/// 2 MiB raw image `tiny` and the manifest (`auto` when given); returns
/// the image's bytes and sha256.
fn make_stick(
    t: &TestDir,
    auto: Option<serde_json::Value>,
) -> (std::path::PathBuf, Vec<u8>, String) {
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    let mut img = vec![0u8; (2 << 20) + 4096];
    for (i, b) in img.iter_mut().enumerate() {
        if (i >> 16) % 3 != 1 {
            *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
    }
    std::fs::write(data.join("images/tiny.img"), &img).unwrap();
    let sha = hex::encode(Sha256::digest(&img));
    let mut manifest = serde_json::json!({
        "version": 1, "built_by": "it",
        "images": [{"name": "tiny", "file": "images/tiny.img", "format": "img",
                    "stored_size": img.len(), "stored_sha256": sha,
                    "size": img.len(), "sha256": sha}],
    });
    if let Some(a) = auto {
        manifest["auto"] = a;
    }
    std::fs::write(
        data.join("bty-stick.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let stick = t.path().join("stick.img");
    let mkfs = Command::new(mkfs_ext4())
        .args(["-q", "-F", "-L", "BTY-DATA", "-d"])
        .arg(&data)
        .arg(&stick)
        .arg("32M")
        .output()
        .unwrap();
    assert!(
        mkfs.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    (stick, img, sha)
}

fn mkfs_ext4() -> String {
    if on_path("mkfs.ext4") {
        "mkfs.ext4".into()
    } else {
        "/usr/sbin/mkfs.ext4".into()
    }
}

fn have_tools() -> bool {
    have_tool("qemu-system-x86_64", on_path("qemu-system-x86_64"))
        && have_tool(
            "mkfs.ext4",
            on_path("mkfs.ext4") || std::path::Path::new("/usr/sbin/mkfs.ext4").is_file(),
        )
}

/// qemu with the media in wizard mode, the stick on xHCI and `target` as a
/// virtio disk with serial BTYTARGET; the caller picks the serial port.
fn qemu(a: &super::Built, stick: &std::path::Path, target: &std::path::Path) -> Command {
    let mut q = Command::new("qemu-system-x86_64");
    q.args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-display", "none", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(a.out.join(KERNEL))
        .arg("-initrd")
        .arg(a.out.join(INITRD))
        .args(["-append", "console=ttyS0,115200 bty.mode=wizard"])
        .args(["-device", "qemu-xhci,id=xhci"])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=stick,format=raw,readonly=on",
            stick.display()
        ))
        .args(["-device", "usb-storage,bus=xhci.0,drive=stick"])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=t0,format=raw",
            target.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=t0,serial=BTYTARGET"]);
    q
}

fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn wizard_mode_finds_the_usb_stick_and_flashes_unattended() {
    let Some(a) = media_a() else { return };
    if !have_tools() {
        return;
    }
    let t = TestDir::new();
    let auto =
        serde_json::json!({"image": "tiny", "disk_serial": "BTYTARGET", "after": "poweroff"});
    let (stick, img, sha) = make_stick(&t, Some(auto));
    let target = t.path().join("target.img");
    std::fs::write(&target, vec![0xaau8; 16 << 20]).unwrap();
    let serial = t.path().join("serial.log");

    let started = Instant::now();
    let mut q = qemu(a, &stick, &target)
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
    let tail = last_lines(&log, 60);
    assert!(
        status.is_some(),
        "qemu did not power off within 300 s; serial:\n{tail}"
    );
    eprintln!(
        "wizard boot: qemu start to power-off in {:.1}s (TCG)",
        started.elapsed().as_secs_f64()
    );
    for want in [
        "bty-netboot: wizard mode: loading the USB and ext4 drivers",
        "mounted read-only at /stick",
        "unattended: tiny onto the disk with serial BTYTARGET, then power off",
        "target: /dev/vda",
        &format!("read-back sha256 {sha}"),
        "done; power off",
    ] {
        assert!(log.contains(want), "serial lacks {want:?}:\n{tail}");
    }
    let modules = log
        .lines()
        .find(|l| l.contains("bty-netboot: modules:"))
        .unwrap_or_else(|| panic!("no modules line:\n{tail}"));
    for m in [
        "xhci_pci",
        "xhci_hcd",
        "usb_storage",
        "sd_mod",
        "ext4",
        "usbhid",
    ] {
        assert!(
            modules.split_whitespace().any(|w| w == m),
            "{m} not loaded: {modules}"
        );
    }
    for bad in ["Kernel panic", "can't load module", "DHCP on"] {
        assert!(!log.contains(bad), "serial has {bad:?}:\n{tail}");
    }
    let disk = std::fs::read(&target).unwrap();
    assert!(
        disk[..img.len()] == img[..],
        "the target differs from the image"
    );
}

/// The technician at the serial console: the wizard reads /dev/ttyS0
/// itself (its stdin is /dev/null), a wrong serial goes back to the disk
/// menu with nothing written, the right one flashes, `off` powers off.
#[test]
fn the_wizard_answers_on_the_serial_console() {
    let Some(a) = media_a() else { return };
    if !have_tools() {
        return;
    }
    let t = TestDir::new();
    let (stick, img, _) = make_stick(&t, None);
    let target = t.path().join("target.img");
    std::fs::write(&target, vec![0xaau8; 16 << 20]).unwrap();
    let mut q = qemu(a, &stick, &target)
        .args(["-serial", "stdio", "-monitor", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting qemu");
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = q.stdout.take().unwrap();
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = q.stdin.take().unwrap();
    // (what the screen says, how many times by then, what the technician types)
    let script = [
        ("Image number (q to quit):", 1, "1"),
        ("Disk number (b to go back, q to quit):", 1, "1"),
        ("Type the disk's serial BTYTARGET to confirm", 1, "BTYTARGE"),
        ("Disk number (b to go back, q to quit):", 2, "1"),
        (
            "Type the disk's serial BTYTARGET to confirm",
            2,
            "BTYTARGET",
        ),
        ("or type off to power off", 1, "off"),
    ];
    let deadline = Instant::now() + Duration::from_secs(300);
    for (prompt, nth, answer) in script {
        loop {
            let seen = out.lock().unwrap().matches(prompt).count();
            if seen >= nth {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no {prompt:?} (#{nth}) within 300 s; serial:\n{}",
                last_lines(&out.lock().unwrap(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if answer == "1" && prompt.starts_with("Disk number") && nth == 2 {
            // The wrong serial wrote nothing.
            assert!(
                std::fs::read(&target).unwrap().iter().all(|&b| b == 0xaa),
                "a wrong serial wrote to the disk"
            );
        }
        stdin.write_all(format!("{answer}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
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
    let log = out.lock().unwrap().clone();
    let tail = last_lines(&log, 60);
    assert!(status.is_some(), "qemu did not power off; serial:\n{tail}");
    for want in [
        "1) tiny  (img, 2.0 MiB)",
        "1) /dev/vda  16.0 MiB",
        "serial BTYTARGET",
        "-) /dev/sda: the stick itself, never offered",
        "\"BTYTARGE\" is not \"BTYTARGET\": nothing written",
        "100%  2.0 MiB of 2.0 MiB",
        "done; power off",
    ] {
        assert!(log.contains(want), "serial lacks {want:?}:\n{tail}");
    }
    let disk = std::fs::read(&target).unwrap();
    assert!(
        disk[..img.len()] == img[..],
        "the target differs from the image"
    );
}
