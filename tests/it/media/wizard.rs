//! The media's wizard mode, booted for real: qemu (TCG) with the netboot
//! kernel and initrd, `bty.mode=wizard`, a USB stick on an xHCI controller
//! (an ext4 file system labelled BTY-DATA holding the manifest and one
//! image, attached read-only) and a virtio disk with a serial. The manifest
//! is unattended (`auto`, `after: poweroff`), so /init has to load the USB
//! and ext4 drivers, find and mount the stick, and run the wizard, which
//! flashes the disk, verifies it and powers the VM off. (The stick's real
//! layout, GPT with an ESP, and its boot through the firmware are `usb
//! build`'s tests.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{media_a, INITRD, KERNEL};
use crate::util::{have_tool, on_path, TestDir};

#[test]
fn wizard_mode_finds_the_usb_stick_and_flashes_unattended() {
    let Some(a) = media_a() else { return };
    if !have_tool("qemu-system-x86_64", on_path("qemu-system-x86_64"))
        || !have_tool(
            "mkfs.ext4",
            on_path("mkfs.ext4") || on_path_sbin("mkfs.ext4"),
        )
    {
        return;
    }
    let t = TestDir::new();
    // The stick's data partition: manifest + image, as `usb build` lays it.
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
    let manifest = serde_json::json!({
        "version": 1, "built_by": "it",
        "images": [{"name": "tiny", "file": "images/tiny.img", "format": "img",
                    "stored_size": img.len(), "stored_sha256": sha,
                    "size": img.len(), "sha256": sha}],
        "auto": {"image": "tiny", "disk_serial": "BTYTARGET", "after": "poweroff"},
    });
    std::fs::write(
        data.join("bty-stick.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let stick = t.path().join("stick.img");
    let mkfs = Command::new(if on_path("mkfs.ext4") {
        "mkfs.ext4".into()
    } else {
        "/usr/sbin/mkfs.ext4".to_string()
    })
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
    let target = t.path().join("target.img");
    std::fs::write(&target, vec![0xaau8; 16 << 20]).unwrap();
    let serial = t.path().join("serial.log");

    let started = Instant::now();
    let mut q = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
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
        .args(["-device", "virtio-blk-pci,drive=t0,serial=BTYTARGET"])
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
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
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

fn on_path_sbin(prog: &str) -> bool {
    std::path::Path::new("/usr/sbin").join(prog).is_file()
}
