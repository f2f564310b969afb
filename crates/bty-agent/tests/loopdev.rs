//! The agent writing a real block device: a loop device over a file
//! pre-filled with 0xAA, so zero blocks that were skipped without the
//! device guaranteeing zeroes would show. Needs root and losetup.

mod common;

use common::loops::{loop_sized, Loop};
use common::*;

fn setup(t: &tempfile::TempDir) -> Option<Loop> {
    setup_sized(t, 16 << 20)
}

fn setup_sized(t: &tempfile::TempDir, size: usize) -> Option<Loop> {
    loop_sized(t.path(), "backing.img", size)
}

fn read_dev(dev: &str, len: usize) -> Vec<u8> {
    let mut v = std::fs::read(dev).unwrap();
    v.truncate(len);
    v
}

#[test]
fn loop_device_gets_exact_bytes_then_a_failed_flash_zeroes_the_head() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = setup(&t) else { return };
    let s = Server::start();
    let img = image(6, 21);
    s.flash_plan("a", compress("img.zst", &img), "img.zst", "X");
    let out = s.agent(&["--target-device", &lo.0]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("writing with O_DIRECT"), "{stdout}");
    assert!(
        read_dev(&lo.0, img.len()) == img,
        "device bytes differ from the image"
    );
    // Past the image, the old content is untouched, but for the last MiB
    // (where a backup GPT lives): wiped.
    let dev = std::fs::read(&lo.0).unwrap();
    assert_eq!(dev[img.len() + 512..img.len() + 1024], [0xaa; 512]);
    assert!(dev[(15 << 20)..].iter().all(|&b| b == 0), "last MiB wiped");
    assert_eq!(s.accepted_done()[0]["sha256"], sha(&img));

    // gzip does not say its size up front: zero runs are zeroed one by one.
    std::fs::write(&lo.0, vec![0xaau8; 16 << 20]).unwrap();
    let s1 = Server::start();
    let img1 = image(5, 23);
    s1.flash_plan("g", compress("img.gz", &img1), "img.gz", "X");
    assert!(s1.agent(&["--target-device", &lo.0]).status.success());
    assert!(
        read_dev(&lo.0, img1.len()) == img1,
        "device bytes differ from the gz image"
    );

    // Same disk, with a backup GPT in its last MiB, and a corrupt
    // download: neither the old head nor the old backup table may survive.
    {
        use std::os::unix::fs::FileExt;
        let mut tail = vec![0x5au8; 1 << 20];
        tail[(1 << 20) - 512..(1 << 20) - 504].copy_from_slice(b"EFI PART");
        let f = std::fs::OpenOptions::new().write(true).open(&lo.0).unwrap();
        f.write_all_at(&tail, 15 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let s2 = Server::start();
    s2.flash_plan("b", compress("img.gz", &image(6, 22)), "img.gz", "X");
    s2.state.lock().unwrap().plan["image"]["sha256"] = serde_json::json!("ab".repeat(32));
    let out = s2.agent(&["--target-device", &lo.0]);
    assert_eq!(out.status.code(), Some(1));
    let dev = read_dev(&lo.0, 2 << 20);
    assert!(
        dev[..1 << 20].iter().all(|&b| b == 0),
        "first MiB must be zero after a failed flash"
    );
    assert!(
        std::fs::read(&lo.0).unwrap()[15 << 20..]
            .iter()
            .all(|&b| b == 0),
        "last MiB must be zero after a failed flash"
    );
    assert_eq!(s2.accepted_done()[0]["ok"], false);
}

#[test]
fn image_larger_than_the_device_is_refused_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = setup(&t) else { return };
    let s = Server::start();
    s.flash_plan("big", image(17, 1), "img", "X");
    let out = s.agent(&["--target-device", &lo.0]);
    assert_eq!(out.status.code(), Some(1));
    let reason = s.accepted_done()[0]["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("image needs"), "{reason}");
    assert_eq!(
        std::fs::read(&lo.0).unwrap()[..4096],
        [0xaa; 4096],
        "nothing written"
    );
}

/// An image larger than the read-back's 64 MiB steps: the read-back
/// follows the writer through several synced ranges while the download
/// goes on, over a device zeroed up front with BLKZEROOUT, and still has
/// to see every byte.
#[test]
fn large_image_is_read_back_while_it_is_written() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = setup_sized(&t, 200 << 20) else {
        return;
    };
    let s = Server::start();
    let img = image(150, 31);
    s.flash_plan("large", img.clone(), "img", "X");
    let out = s.agent(&["--target-device", &lo.0]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("zeroed the image range with BLKZEROOUT"),
        "{stdout}"
    );
    let dev = std::fs::read(&lo.0).unwrap();
    assert!(
        dev[..img.len()] == img[..],
        "device bytes differ from the image"
    );
    assert_eq!(dev[img.len() + 512..img.len() + 4096], [0xaa; 3584]);
    assert_eq!(s.accepted_done()[0]["sha256"], sha(&img));
}
