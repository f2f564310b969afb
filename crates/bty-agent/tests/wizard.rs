//! `bty wizard` driven like a technician would: the real binary, a stick
//! directory (or a real ext4 file system labelled BTY-DATA on a loop
//! device, mounted), loop devices as the machine's disks (`--disks`, which
//! takes loop devices only, with the serials the test gives them), and
//! scripted answers on stdin. Needs root and losetup; skips without.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::loops::{loop_sized, Loop};
use common::stick::{text, untouched, wizard, Stick};
use common::*;
use serde_json::json;

#[test]
fn a_wrong_serial_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("debian", "img", &image(2, 1));
    // Image 1, disk 1, a wrong serial (back to the disk menu), quit.
    let o = wizard(&s.root, &[(&disk, "SER-A")], "1\n1\nSER-B\nq\n");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("1) debian  (img, 2.0 MiB)"), "{out}");
    assert!(
        out.contains(
            "no server key on this stick: images from a bty-web need a stick built with --server"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "1) {}  16.0 MiB  loop device (test)  serial SER-A",
            disk.0
        )),
        "{out}"
    );
    assert!(
        out.contains("Type the disk's serial SER-A to confirm"),
        "{out}"
    );
    assert!(
        out.contains("\"SER-B\" is not \"SER-A\": nothing written"),
        "{out}"
    );
    assert!(out.contains("quit: nothing written"), "{out}");
    assert!(untouched(&disk), "a wrong serial must write nothing");
}

#[test]
fn a_disk_too_small_for_the_image_is_not_offered() {
    let t = tempfile::tempdir().unwrap();
    let (Some(small), Some(big)) = (
        loop_sized(t.path(), "small", 4 << 20),
        loop_sized(t.path(), "big", 16 << 20),
    ) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    // zstd: the decoded size comes from the manifest only.
    s.add("big-image", "img.zst", &image(8, 2));
    // Only one disk is offered: "2" is not a choice.
    let o = wizard(&s.root, &[(&small, "SMALL"), (&big, "BIG")], "1\n2\nq\n");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("1) {}  16.0 MiB", big.0)), "{out}");
    assert!(
        out.contains(&format!(
            "-) {} 4.0 MiB: too small for this image (needs 8.0 MiB), not offered",
            small.0
        )),
        "{out}"
    );
    assert!(out.contains("type a number from 1 to 1"), "{out}");
    assert!(untouched(&small) && untouched(&big));
}

#[test]
fn a_newer_manifest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 4 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.version = 2;
    s.add("debian", "img", &image(1, 3));
    let o = wizard(&s.root, &[(&disk, "S")], "1\n1\nS\n");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("is version 2, this bty reads version 1 at most"),
        "{out}"
    );
    assert!(untouched(&disk));
}

#[test]
fn disks_other_than_loop_devices_are_refused_in_tests() {
    let t = tempfile::tempdir().unwrap();
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("debian", "img", &image(1, 3));
    let o = Command::new(env!("CARGO_BIN_EXE_bty"))
        .args(["wizard", "--stdio", "--after-exit", "--disks", "/dev/sda=X"])
        .arg("--stick")
        .arg(&s.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("--disks takes loop devices only"));
}

/// The stick is a real ext4 file system labelled BTY-DATA on a loop
/// device, mounted like /init mounts it: that device is never listed, and
/// an unattended manifest naming its serial is refused.
#[test]
fn the_sticks_own_disk_is_never_listed() {
    let t = tempfile::tempdir().unwrap();
    let (Some(stick_dev), Some(disk)) = (
        loop_sized(t.path(), "stick.img", 32 << 20),
        loop_sized(t.path(), "disk", 16 << 20),
    ) else {
        return;
    };
    if !have_tool("mkfs.ext4") {
        return;
    }
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "BTY-DATA"])
        .arg(&stick_dev.0)
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "{}", text(&mkfs));
    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = Command::new("mount")
        .arg(&stick_dev.0)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", text(&m));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _um = Unmount(mnt.clone());
    let mut s = Stick::new(&mnt);
    s.add("debian", "img", &image(1, 4));
    let stick_dev_bytes = std::fs::read(&stick_dev.0).unwrap();

    let o = wizard(&mnt, &[(&stick_dev, "STICK"), (&disk, "DISK")], "1\n2\nq\n");
    let out = text(&o);
    assert!(
        out.contains(&format!("on {}, never a target", stick_dev.0)),
        "{out}"
    );
    assert!(out.contains(&format!("1) {}", disk.0)), "{out}");
    assert!(
        out.contains(&format!(
            "-) {}: the stick itself, never offered",
            stick_dev.0
        )),
        "{out}"
    );
    assert!(!out.contains("serial STICK"), "{out}");
    assert!(out.contains("type a number from 1 to 1"), "{out}");

    s.auto = Some(json!({"image": "debian", "disk_serial": "STICK", "after": "reboot"}));
    s.write();
    let o = wizard(&mnt, &[(&stick_dev, "STICK"), (&disk, "DISK")], "");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("no disk with serial \"STICK\""), "{out}");
    assert!(
        out.contains(&format!("(the stick is {})", stick_dev.0)),
        "{out}"
    );
    assert!(untouched(&disk));
    // Unmounting writes the superblock back; compare while mounted.
    assert!(
        std::fs::read(&stick_dev.0).unwrap()[..1024] == stick_dev_bytes[..1024],
        "the stick's head changed"
    );
}

#[test]
fn unattended_refuses_an_absent_disk_without_asking() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("debian", "img", &image(1, 5));
    s.auto = Some(json!({"image": "debian", "disk_serial": "NOT-HERE", "after": "poweroff"}));
    s.write();
    let o = wizard(&s.root, &[(&disk, "DISK")], "");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("unattended: debian onto the disk with serial NOT-HERE, then power off"),
        "{out}"
    );
    assert!(out.contains(&format!("{}=DISK", disk.name())), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert!(untouched(&disk));
}

/// The device's first `len` bytes.
fn head(l: &Loop, len: usize) -> Vec<u8> {
    let mut v = std::fs::read(&l.0).unwrap();
    v.truncate(len);
    v
}

/// The menu number of each device, as the wizard sorts them (by name).
fn menu_order(devs: &[&Loop]) -> Vec<String> {
    let mut names: Vec<String> = devs.iter().map(|l| l.0.clone()).collect();
    names.sort();
    names
}

#[test]
fn pick_confirm_and_the_disk_reads_back_as_the_image() {
    let t = tempfile::tempdir().unwrap();
    let (Some(a), Some(b)) = (
        loop_sized(t.path(), "a", 16 << 20),
        loop_sized(t.path(), "b", 16 << 20),
    ) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("rescue", "img", &image(1, 6));
    let img = image(3, 7);
    s.add("debian", "img.zst", &img);
    let n = menu_order(&[&a, &b])
        .iter()
        .position(|d| *d == b.0)
        .unwrap()
        + 1;
    let o = wizard(
        &s.root,
        &[(&a, "SER-A"), (&b, "SER-B")],
        &format!("2\n{n}\nSER-B\n\n"),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("2) debian  (img.zst, "), "{out}");
    assert!(
        out.contains(&format!("verified: 3.0 MiB written to {}", b.0)),
        "{out}"
    );
    assert!(
        out.contains(&format!("read-back sha256 {}", sha(&img))),
        "{out}"
    );
    assert!(out.contains("100%  3.0 MiB of 3.0 MiB"), "{out}");
    assert!(out.contains("done; would reboot (--after-exit)"), "{out}");
    assert!(
        head(&b, img.len()) == img,
        "the disk differs from the image"
    );
    assert!(untouched(&a), "the other disk was written");
}

#[test]
fn an_image_that_no_longer_matches_the_manifest_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("debian", "img", &image(2, 8));
    // One byte of the stored file rots after the stick was built.
    let f = s.root.join("images/debian.img");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[(1 << 20) + 7] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    let o = wizard(&s.root, &[(&disk, "SER")], "1\n1\nSER\nq\n");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("stored image sha256 mismatch"), "{out}");
    assert!(
        out.contains("nothing was written: the disk is as it was"),
        "{out}"
    );
    assert!(untouched(&disk), "a rotten image must write nothing");
}

#[test]
fn unattended_mode_flashes_without_input() {
    let t = tempfile::tempdir().unwrap();
    let (Some(a), Some(b)) = (
        loop_sized(t.path(), "a", 16 << 20),
        loop_sized(t.path(), "b", 16 << 20),
    ) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    let img = image(2, 9);
    s.add("debian", "img.gz", &img);
    s.auto = Some(json!({"image": "debian", "disk_serial": "SER-A", "after": "poweroff"}));
    s.write();
    // No input at all: stdin is closed at once.
    let o = wizard(&s.root, &[(&a, "SER-A"), (&b, "SER-B")], "");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("unattended: debian onto the disk with serial SER-A, then power off"),
        "{out}"
    );
    assert!(out.contains(&format!("target: {}", a.0)), "{out}");
    assert!(
        out.contains("done; would power off (--after-exit)"),
        "{out}"
    );
    assert!(
        head(&a, img.len()) == img,
        "the disk differs from the image"
    );
    assert!(untouched(&b));
}

#[test]
fn unattended_refuses_a_disk_too_small_without_writing() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 4 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    s.add("debian", "img.xz", &image(8, 10));
    s.auto = Some(json!({"image": "debian", "disk_serial": "SMALL", "after": "reboot"}));
    s.write();
    let o = wizard(&s.root, &[(&disk, "SMALL")], "");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains(&format!("debian needs 8.0 MiB but {} has 4.0 MiB", disk.0)),
        "{out}"
    );
    assert!(untouched(&disk));
}

/// A stick with a server key waits for a DHCP lease before the first menu
/// (the network comes up in the background); Enter skips the wait, and a
/// server that is not there costs one line, not the stick's images.
#[test]
fn with_a_key_the_wizard_waits_for_the_network_and_enter_skips() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let mut s = Stick::new(&t.path().join("stick"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.server = Some(format!("http://{}", dead.local_addr().unwrap()));
    drop(dead);
    s.key = Some("btystick_k".into());
    s.add("debian", "img", &image(1, 11));
    let no_lease = t.path().join("no-lease.env");
    let o = common::stick::wizard_with(
        &s.root,
        &[(&disk, "SER")],
        "\nq\n",
        &[
            "--dhcp-env",
            no_lease.to_str().unwrap(),
            "--network-wait",
            "30",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("waiting for the network ... (up to 30 s; Enter skips)"),
        "{out}"
    );
    assert!(out.contains("not waiting for the network"), "{out}");
    assert!(out.contains("1) debian  (img, 1.0 MiB)"), "{out}");
    assert!(out.contains("no bty-web reachable ("), "{out}");
    assert!(out.contains("quit: nothing written"), "{out}");
    assert!(untouched(&disk));
}
