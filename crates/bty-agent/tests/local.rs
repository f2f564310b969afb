//! `bty_agent::local::flash`: a local image file onto a real loop device
//! (over a backing file pre-filled with 0xAA, so a skipped zero block that
//! the device did not zero would show). Needs root and losetup.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bty_agent::console::Console;
use bty_agent::local::{self, LocalJob, LocalOutcome};
use bty_agent::Error;
use bty_proto::ImageFormat;
use common::*;

const FILL: u8 = 0xaa;

/// A loop device of `size` bytes (backing file pre-filled with [`FILL`]).
fn loopdev(t: &tempfile::TempDir, size: usize) -> Option<loops::Loop> {
    loops::loop_sized(t.path(), &format!("backing-{size}.img"), size)
}

fn write_file(t: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = t.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(
    src: &Path,
    format: ImageFormat,
    dev: &str,
    stored: Option<&str>,
    decoded: Option<&str>,
) -> (bty_agent::Result<LocalOutcome>, usize) {
    let console = Console::default();
    let mut job = LocalJob::new(src, format, Path::new(dev), &console);
    job.expect_stored_sha256 = stored;
    job.expect_sha256 = decoded;
    let mut calls = 0;
    let r = local::flash(&job, &mut |_| calls += 1);
    (r, calls)
}

/// 80% zero blocks (4 MiB runs of zeroes between 1 MiB of data).
fn sparse(mib: usize) -> Vec<u8> {
    let mut v = image(mib, 7);
    for (i, c) in v.chunks_mut(1 << 20).enumerate() {
        if i % 5 != 0 {
            c.fill(0);
        }
    }
    v[..512].fill(0x55);
    v
}

#[test]
fn raw_zst_qcow2_and_sparse_images_land_exactly() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 16 << 20) else {
        return;
    };
    let img = image(6, 21);
    let raw = write_file(&t, "a.img", &img);
    let zst = write_file(&t, "a.img.zst", &compress("img.zst", &img));
    let mut cases = vec![
        (raw, ImageFormat::Raw, img.clone()),
        (zst, ImageFormat::Zst, img.clone()),
    ];
    let sp = sparse(10);
    cases.push((write_file(&t, "s.img", &sp), ImageFormat::Raw, sp));
    if have_tool("qemu-img") {
        let q = t.path().join("a.qcow2");
        let raw = t.path().join("a.img");
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&q)
            .status()
            .unwrap();
        assert!(st.success());
        // qcow2's virtual size is rounded up to a sector.
        let mut padded = img.clone();
        padded.resize(img.len().div_ceil(512) * 512, 0);
        cases.push((q, ImageFormat::Qcow2, padded));
    }
    for (src, format, want) in cases {
        std::fs::write(&lo.0, vec![FILL; 16 << 20]).unwrap();
        let (r, calls) = run(&src, format, &lo.0, None, Some(&sha(&want)));
        let out = r.unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(out.bytes, want.len() as u64, "{format}");
        assert_eq!(out.sha256, sha(&want), "{format}");
        assert!(calls >= 2, "{format}: progress called {calls} times");
        let dev = std::fs::read(&lo.0).unwrap();
        assert!(dev[..want.len()] == want[..], "{format}: device differs");
        // The last MiB (a backup GPT's place) was wiped; between, the old
        // bytes stay.
        assert!(dev[(15 << 20)..].iter().all(|&b| b == 0), "{format}");
        assert_eq!(dev[want.len() + 512], FILL, "{format}");
    }
}

#[test]
fn a_stored_sha_mismatch_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 8 << 20) else {
        return;
    };
    let img = image(2, 3);
    let src = write_file(&t, "a.img.zst", &compress("img.zst", &img));
    let (r, _) = run(&src, ImageFormat::Zst, &lo.0, Some(&sha(b"other")), None);
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            Error::ChecksumMismatch {
                what: "stored image",
                ..
            }
        ),
        "{e}"
    );
    assert!(std::fs::read(&lo.0).unwrap().iter().all(|&b| b == FILL));

    // The right one goes through.
    let stored = sha(&std::fs::read(&src).unwrap());
    let (r, _) = run(&src, ImageFormat::Zst, &lo.0, Some(&stored), None);
    assert_eq!(r.unwrap().sha256, sha(&img));
}

#[test]
fn a_too_small_device_is_refused_before_any_write() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 4 << 20) else {
        return;
    };
    let img = image(6, 5);
    let console = Console::default();
    // Raw: the file's size; zstd with a content size in its frame header;
    // gzip, whose ISIZE is a lower bound, told the exact size too.
    let cases = [
        ("a.img", ImageFormat::Raw, img.clone(), None),
        (
            "a.img.zst",
            ImageFormat::Zst,
            zstd::bulk::compress(&img, 3).unwrap(),
            None,
        ),
        (
            "a.img.gz",
            ImageFormat::Gz,
            compress("img.gz", &img),
            Some(img.len() as u64),
        ),
    ];
    for (name, format, bytes, size) in cases {
        let src = write_file(&t, name, &bytes);
        let mut job = LocalJob::new(&src, format, Path::new(&lo.0), &console);
        job.expect_size = size;
        let e = local::flash(&job, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::TargetTooSmall { .. }), "{format}: {e}");
        assert!(
            std::fs::read(&lo.0).unwrap().iter().all(|&b| b == FILL),
            "{format}: the device was written"
        );
    }
    // bzip2, which says nothing of its size, with no size known: refused
    // when the write reaches the end of the device, the ends left zeroed.
    let src = write_file(&t, "b.img.bz2", &compress("img.bz2", &img));
    let (r, _) = run(&src, ImageFormat::Bz2, &lo.0, None, None);
    assert!(matches!(r.unwrap_err(), Error::TargetTooSmall { .. }));
    let dev = std::fs::read(&lo.0).unwrap();
    assert!(dev[..1 << 20].iter().all(|&b| b == 0));
    assert!(dev[(3 << 20)..].iter().all(|&b| b == 0));
}

#[test]
fn a_mounted_device_is_refused() {
    let t = tempfile::tempdir().unwrap();
    if !have_tool("mkfs.ext4") {
        return;
    }
    let Some(lo) = loopdev(&t, 16 << 20) else {
        return;
    };
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", &lo.0])
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount").arg(&lo.0).arg(&mnt).status().unwrap();
    assert!(st.success());
    let before = std::fs::read(&lo.0).unwrap();
    let src = write_file(&t, "a.img", &image(2, 9));
    let (r, _) = run(&src, ImageFormat::Raw, &lo.0, None, None);
    // Read before unmounting: unmounting writes the superblock.
    let after = std::fs::read(&lo.0).unwrap();
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    let e = r.unwrap_err();
    assert!(umount.success());
    assert!(matches!(e, Error::TargetBusy { .. }), "{e}");
    assert!(e.to_string().contains("mounted at"), "{e}");
    assert!(after == before, "device changed");
}

#[test]
fn a_decoded_sha_mismatch_leaves_the_ends_zeroed() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 16 << 20) else {
        return;
    };
    let img = image(6, 11);
    let src = write_file(&t, "a.img.zst", &compress("img.zst", &img));
    let (r, _) = run(&src, ImageFormat::Zst, &lo.0, None, Some(&sha(b"not it")));
    let e = r.unwrap_err();
    assert!(
        matches!(e, Error::ChecksumMismatch { what: "image", .. }),
        "{e}"
    );
    let dev = std::fs::read(&lo.0).unwrap();
    assert!(
        dev[..1 << 20].iter().all(|&b| b == 0),
        "first MiB not zeroed"
    );
    assert!(
        dev[(15 << 20)..].iter().all(|&b| b == 0),
        "last MiB not zeroed"
    );
    // The body was written (the failure came after it), the head was not.
    assert!(dev[1 << 20..2 << 20] == img[1 << 20..2 << 20]);
}

#[test]
fn regular_file_targets_and_refusals() {
    let t = tempfile::tempdir().unwrap();
    let img = image(3, 13);
    let src = write_file(&t, "a.img.zst", &compress("img.zst", &img));
    let out = t.path().join("out.img");
    let (r, _) = run(&src, ImageFormat::Zst, out.to_str().unwrap(), None, None);
    assert_eq!(r.unwrap().bytes, img.len() as u64);
    assert!(std::fs::read(&out).unwrap() == img);
    for (name, format) in [
        ("img.gz", ImageFormat::Gz),
        ("img.xz", ImageFormat::Xz),
        ("img.bz2", ImageFormat::Bz2),
    ] {
        let src = write_file(&t, name, &compress(name, &img));
        let (r, _) = run(&src, format, out.to_str().unwrap(), None, Some(&sha(&img)));
        assert_eq!(r.unwrap().bytes, img.len() as u64, "{format}");
        assert!(std::fs::read(&out).unwrap() == img, "{format}");
    }

    // Onto itself, a character device, a partition-less wrong format.
    let (r, _) = run(&src, ImageFormat::Zst, src.to_str().unwrap(), None, None);
    assert!(r.unwrap_err().to_string().contains("image itself"));
    let (r, _) = run(&src, ImageFormat::Zst, "/dev/null", None, None);
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("neither a block device nor a regular file"));
    let (r, _) = run(&src, ImageFormat::Gz, out.to_str().unwrap(), None, None);
    assert!(matches!(r.unwrap_err(), Error::FormatMismatch { .. }));
}

/// A stick wizard's server image: the same core fed by the network flow's
/// download (here cut after 300 kB, so it resumes with a Range request),
/// checked against the catalog's sha256 and size.
#[test]
fn a_remote_image_resumes_and_lands_through_the_same_core() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 16 << 20) else {
        return;
    };
    let img = image(3, 31);
    let stored = compress("img.zst", &img);
    let s = Server::start();
    {
        let mut st = s.state.lock().unwrap();
        st.images.insert("d.img.zst".into(), stored.clone());
        st.faults.drop_after = Some(300_000);
    }
    let url = format!("{}/img/d.img.zst", s.base);
    let http = bty_agent::net::agent(bty_agent::net::Timeouts::default());
    let expect =
        bty_agent::flash::Expected::named("d", Some(&sha(&stored)), Some(stored.len() as u64))
            .unwrap();
    let console = Console::default();
    let name = PathBuf::from(&url);
    let mut job = LocalJob::new(&name, ImageFormat::Zst, Path::new(&lo.0), &console);
    job.remote = Some(local::Remote {
        http: &http,
        url: &url,
        expect: &expect,
        retry: bty_agent::source::Retry {
            base: std::time::Duration::from_millis(10),
            ..Default::default()
        },
    });
    let out = local::flash(&job, &mut |_| {}).unwrap();
    assert_eq!(out.sha256, sha(&img));
    assert_eq!(out.bytes, img.len() as u64);
    let on_disk = std::fs::read(&lo.0).unwrap();
    assert!(
        on_disk[..img.len()] == img[..],
        "the device is not the image"
    );
    let gets = s.state.lock().unwrap().image_gets.clone();
    assert!(
        gets.iter()
            .any(|(_, r)| r.as_deref().is_some_and(|r| r.starts_with("bytes=3"))),
        "no Range resume: {gets:?}"
    );
}

/// Other bytes than the catalog's: the flash fails after writing began,
/// and the head of the disk is zeroed, never the image's.
#[test]
fn a_remote_image_with_other_bytes_fails_and_does_not_boot() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 16 << 20) else {
        return;
    };
    let img = image(2, 32);
    let mut served = img.clone();
    served[(1 << 20) + 9] ^= 0xff;
    let s = Server::start();
    s.state
        .lock()
        .unwrap()
        .images
        .insert("d.img".into(), served);
    let url = format!("{}/img/d.img", s.base);
    let http = bty_agent::net::agent(bty_agent::net::Timeouts::default());
    let expect =
        bty_agent::flash::Expected::named("d", Some(&sha(&img)), Some(img.len() as u64)).unwrap();
    let console = Console::default();
    let name = PathBuf::from(&url);
    let mut job = LocalJob::new(&name, ImageFormat::Raw, Path::new(&lo.0), &console);
    job.remote = Some(local::Remote {
        http: &http,
        url: &url,
        expect: &expect,
        retry: bty_agent::source::Retry::default(),
    });
    let e = local::flash(&job, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::ChecksumMismatch {
                what: "download",
                ..
            }
        ),
        "{e}"
    );
    let on_disk = std::fs::read(&lo.0).unwrap();
    assert!(
        on_disk[..1 << 20].iter().all(|&b| b == 0),
        "the first MiB is not zeroed after the failure"
    );
}

/// A remote image whose container says it decodes to more than the
/// device holds is refused before the first write (the Range probe of the
/// zstd header), as the network agent refuses it.
#[test]
fn a_remote_image_too_big_is_refused_before_any_write() {
    let t = tempfile::tempdir().unwrap();
    let Some(lo) = loopdev(&t, 4 << 20) else {
        return;
    };
    // zstd's bulk API writes the decoded size into the frame header.
    let stored = zstd::bulk::compress(&image(8, 33), 3).unwrap();
    let s = Server::start();
    s.state
        .lock()
        .unwrap()
        .images
        .insert("big.img.zst".into(), stored.clone());
    let url = format!("{}/img/big.img.zst", s.base);
    let http = bty_agent::net::agent(bty_agent::net::Timeouts::default());
    let expect =
        bty_agent::flash::Expected::named("big", Some(&sha(&stored)), Some(stored.len() as u64))
            .unwrap();
    let console = Console::default();
    let name = PathBuf::from(&url);
    let mut job = LocalJob::new(&name, ImageFormat::Zst, Path::new(&lo.0), &console);
    job.remote = Some(local::Remote {
        http: &http,
        url: &url,
        expect: &expect,
        retry: bty_agent::source::Retry::default(),
    });
    let mut wrote = false;
    let e = local::flash(&job, &mut |p| wrote |= p.writing).unwrap_err();
    assert!(matches!(&e, Error::TargetTooSmall { .. }), "{e}");
    assert!(!wrote, "the flash began writing");
    let on_disk = std::fs::read(&lo.0).unwrap();
    assert!(on_disk.iter().all(|&b| b == FILL), "the device was written");
}
