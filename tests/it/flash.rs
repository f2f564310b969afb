//! `bty-lab flash` and `bty-lab usb write` onto real loop devices (over
//! backing files pre-filled with 0xAA, so a byte not written shows), the
//! confirmation driven through a real pty (util-linux `script`). Needs root,
//! losetup, and for some tests mkfs.ext4, unshare and chroot.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::util::*;

const FILL: u8 = 0xaa;

/// A loop device, detached (and unmounted) on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

impl Loop {
    fn new(dir: &Path, size: usize) -> Option<Loop> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: loop devices need root");
            return None;
        }
        if !have_tool("losetup", on_path("losetup")) {
            return None;
        }
        let backing = dir.join(format!("backing-{size}-{}", rand_tag()));
        std::fs::write(&backing, vec![FILL; size]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        Some(Loop(String::from_utf8(out.stdout).unwrap().trim().into()))
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }

    fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `mib` MiB + 3000 bytes of pseudo-random data, every third 256 KiB zero
/// (the agent's test image shape).
fn image(mib: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; (mib << 20) + 3000];
    let mut x = seed | 1;
    for (i, chunk) in v.chunks_mut(256 << 10).enumerate() {
        if i % 3 == 1 {
            continue;
        }
        for b in chunk.iter_mut().step_by(3) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    v[..512].fill(0x55);
    v
}

/// 80% of its MiBs zero.
fn sparse(mib: usize) -> Vec<u8> {
    let mut v = image(mib, 7);
    for (i, c) in v.chunks_mut(1 << 20).enumerate() {
        if i % 5 != 0 {
            c.fill(0);
        }
    }
    v
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn flash(args: &[&str]) -> Output {
    let mut all = vec!["flash"];
    all.extend_from_slice(args);
    run(&all)
}

/// Run bty-lab on a pty (so dialoguer prompts) with `typed` piped in.
fn on_pty(args: &[&str], typed: &str) -> Output {
    let cmd = std::iter::once(bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn raw_zst_and_sparse_images_land_exactly() {
    let t = TestDir::new();
    let Some(lo) = Loop::new(t.path(), 24 << 20) else {
        return;
    };
    let img = image(6, 21);
    let sp = sparse(12);
    let raw = t.path().join("a.img");
    std::fs::write(&raw, &img).unwrap();
    let zst = t.path().join("a.img.zst");
    std::fs::write(&zst, zstd::encode_all(&img[..], 3).unwrap()).unwrap();
    let sparse_path = t.path().join("sparse.raw");
    std::fs::write(&sparse_path, &sp).unwrap();
    let zst_sha = sha(&std::fs::read(&zst).unwrap());
    for (src, want, extra) in [
        (&raw, &img, vec![]),
        (&zst, &img, vec!["--sha256", zst_sha.as_str()]),
        (&sparse_path, &sp, vec![]),
    ] {
        std::fs::write(&lo.0, vec![FILL; 24 << 20]).unwrap();
        let mut args = vec![src.to_str().unwrap(), lo.0.as_str(), "--yes"];
        args.extend(extra);
        let o = flash(&args);
        ok(&o);
        assert!(stderr(&o).contains(&sha(want)), "{}", stderr(&o));
        let dev = lo.bytes();
        assert!(
            dev[..want.len()] == want[..],
            "{}: device differs",
            src.display()
        );
        assert_eq!(dev[want.len() + 1000], FILL, "past the image: untouched");
    }
}

#[test]
fn a_stored_sha_mismatch_is_refused_and_writes_nothing() {
    let t = TestDir::new();
    let Some(lo) = Loop::new(t.path(), 8 << 20) else {
        return;
    };
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(2, 3)).unwrap();
    let o = flash(&[
        raw.to_str().unwrap(),
        &lo.0,
        "--yes",
        "--sha256",
        &sha(b"x"),
    ]);
    exits_with(&o, 3);
    fails_with(&o, "stored image sha256 mismatch");
    assert!(lo.bytes().iter().all(|&b| b == FILL));
}

#[test]
fn a_mounted_device_is_refused() {
    let t = TestDir::new();
    if !have_tool("mkfs.ext4", on_path("mkfs.ext4")) {
        return;
    }
    let Some(lo) = Loop::new(t.path(), 16 << 20) else {
        return;
    };
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F", &lo.0])
        .status()
        .unwrap()
        .success());
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount")
        .arg(&lo.0)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let before = lo.bytes();
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(2, 9)).unwrap();
    let o = flash(&[raw.to_str().unwrap(), &lo.0, "--yes"]);
    let after = lo.bytes();
    Command::new("umount").arg(&mnt).status().unwrap();
    exits_with(&o, 3);
    fails_with(&o, "mounted at");
    assert!(after == before, "the mounted device changed");
}

#[test]
fn a_too_small_target_is_refused_before_writing() {
    let t = TestDir::new();
    let Some(lo) = Loop::new(t.path(), 4 << 20) else {
        return;
    };
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(6, 5)).unwrap();
    let zst = t.path().join("a.img.zst");
    // bulk: the frame header carries the content size.
    std::fs::write(&zst, zstd::bulk::compress(&image(6, 5), 3).unwrap()).unwrap();
    for src in [&raw, &zst] {
        let o = flash(&[src.to_str().unwrap(), &lo.0, "--yes"]);
        exits_with(&o, 3);
        fails_with(&o, "nothing was written");
        fails_with(&o, "image needs");
        assert!(lo.bytes().iter().all(|&b| b == FILL), "{}", src.display());
    }
}

#[test]
fn the_typed_serial_must_match() {
    let t = TestDir::new();
    if !have_tool("script", on_path("script")) {
        return;
    }
    let Some(lo) = Loop::new(t.path(), 8 << 20) else {
        return;
    };
    let img = image(2, 17);
    let raw = t.path().join("a.img");
    std::fs::write(&raw, &img).unwrap();
    let args = ["flash", raw.to_str().unwrap(), lo.0.as_str()];
    // A loop device has no serial and no model: its kernel name is asked.
    let o = on_pty(&args, "sda\n");
    exits_with(&o, 3);
    let out = stdout(&o); // the pty merges stderr into script's stdout
    assert!(
        out.contains(&format!("kernel name ({})", lo.name())),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    assert!(lo.bytes().iter().all(|&b| b == FILL));

    let o = on_pty(&args, &format!("{}\n", lo.name()));
    ok(&o);
    assert!(lo.bytes()[..img.len()] == img[..]);

    // usb write asks the same way.
    std::fs::write(&lo.0, vec![FILL; 8 << 20]).unwrap();
    let o = on_pty(&["usb", "write", raw.to_str().unwrap(), &lo.0], "no\n");
    exits_with(&o, 3);
    assert!(
        stdout(&o).contains("This will erase everything"),
        "{}",
        stdout(&o)
    );
    assert!(lo.bytes().iter().all(|&b| b == FILL));
    let o = on_pty(
        &["usb", "write", raw.to_str().unwrap(), &lo.0],
        &format!("{}\n", lo.name()),
    );
    ok(&o);
    assert!(lo.bytes()[..img.len()] == img[..]);
}

#[test]
fn no_terminal_without_yes_is_refused() {
    let t = TestDir::new();
    let Some(lo) = Loop::new(t.path(), 8 << 20) else {
        return;
    };
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(2, 1)).unwrap();
    for args in [
        vec!["flash", raw.to_str().unwrap(), lo.0.as_str()],
        vec!["usb", "write", raw.to_str().unwrap(), lo.0.as_str()],
    ] {
        let o = run_with(&bin(), &args, Some("y\n"));
        exits_with(&o, 3);
        fails_with(&o, "no terminal to confirm on");
        assert!(lo.bytes().iter().all(|&b| b == FILL));
    }
}

#[test]
fn missing_paths_and_character_devices_are_refused_files_are_not() {
    let t = TestDir::new();
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(1, 1)).unwrap();
    for (dev, needle) in [
        ("/dev/null", "neither a block device nor a regular file"),
        ("/dev/bty-no-such-disk", "No such file"),
    ] {
        let o = flash(&[raw.to_str().unwrap(), dev, "--yes"]);
        exits_with(&o, 3);
        fails_with(&o, needle);
    }
    assert!(!Path::new("/dev/bty-no-such-disk").exists());
    let o = flash(&["/nonexistent/a.img", "/dev/null", "--yes"]);
    exits_with(&o, 3);
    fails_with(&o, "image /nonexistent/a.img");
    // A regular file is a valid target (a disk image file).
    let out = t.path().join("out.img");
    std::fs::write(&out, b"old").unwrap();
    let zst = t.path().join("b.img.zst");
    std::fs::write(&zst, zstd::encode_all(&image(1, 1)[..], 3).unwrap()).unwrap();
    ok(&flash(&[
        zst.to_str().unwrap(),
        out.to_str().unwrap(),
        "--yes",
    ]));
    assert!(std::fs::read(&out).unwrap() == image(1, 1));
}

#[test]
fn a_partition_is_refused_and_the_disk_named() {
    let t = TestDir::new();
    if !have_tool("sfdisk", on_path("sfdisk")) {
        return;
    }
    let Some(lo) = Loop::new(t.path(), 16 << 20) else {
        return;
    };
    let mut sf = Command::new("sfdisk")
        .args(["-q", &lo.0])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,8M\n")
        .unwrap();
    assert!(sf.wait().unwrap().success());
    // Have the kernel know the partition: sfdisk's re-read does it when the
    // loop device scans partitions; else partx adds it (its status is
    // not telling: "already exists" fails too).
    let part = format!("{}p1", lo.0);
    let _ = Command::new("partx").args(["-a", &lo.0]).output();
    for _ in 0..50 {
        if Path::new(&part).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(Path::new(&part).exists(), "{part} did not appear");
    let before = lo.bytes();
    let raw = t.path().join("a.img");
    std::fs::write(&raw, image(1, 2)).unwrap();
    let o = flash(&[raw.to_str().unwrap(), &part, "--yes"]);
    exits_with(&o, 3);
    fails_with(&o, &format!("give the whole disk ({})", lo.0));
    assert!(lo.bytes() == before, "the disk changed");
}

/// `/` is the loop device's file system (a chroot in a private mount
/// namespace): bty-lab refuses it before anything else.
#[test]
fn the_disk_of_root_is_refused() {
    let t = TestDir::new();
    for tool in ["mkfs.ext4", "unshare", "chroot"] {
        if !have_tool(tool, on_path(tool)) {
            return;
        }
    }
    let Some(lo) = Loop::new(t.path(), 32 << 20) else {
        return;
    };
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F", &lo.0])
        .status()
        .unwrap()
        .success());
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let exe = bin();
    let exe_dir = exe.parent().unwrap();
    // Bind what bty-lab needs (its libraries, /proc, /sys, /dev) under the
    // new root; the image lives on the loop file system itself.
    let script = format!(
        r#"set -e
R={root}
mount {dev} $R
mkdir -p $R/usr $R/proc $R/sys $R/dev $R/tmp $R{exe_dir}
for d in bin lib lib64 sbin; do
  if [ -L /$d ]; then cp -P /$d $R/$d; elif [ -d /$d ]; then mkdir -p $R/$d; mount --bind /$d $R/$d; fi
done
mount --bind /usr $R/usr
mount --rbind /proc $R/proc
mount --rbind /sys $R/sys
mount --rbind /dev $R/dev
mount --bind {exe_dir} $R{exe_dir}
head -c 1048576 /dev/urandom > $R/tmp/a.img
set +e
chroot $R {exe} flash /tmp/a.img {dev} --yes
echo "exit=$?"
"#,
        root = root.display(),
        dev = lo.0,
        exe_dir = exe_dir.display(),
        exe = exe.display(),
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    ok(&o);
    assert!(
        stdout(&o).contains("exit=3"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("is the disk the running system's / is on"),
        "{}",
        stderr(&o)
    );
}

/// A one-file HTTP server on loopback (GET only, whole body), for the URL
/// source.
fn serve(body: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut req = [0u8; 4096];
            let _ = c.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    format!("http://{addr}/disk.img.zst")
}

#[test]
fn a_url_is_downloaded_then_flashed() {
    let t = TestDir::new();
    let Some(lo) = Loop::new(t.path(), 8 << 20) else {
        return;
    };
    let img = image(3, 29);
    let packed = zstd::encode_all(&img[..], 3).unwrap();
    let url = serve(packed.clone());
    // A wrong sha256: the download is checked before the disk is touched.
    let o = flash(&[&url, &lo.0, "--yes", "--sha256", &sha(b"x")]);
    exits_with(&o, 3);
    assert!(lo.bytes().iter().all(|&b| b == FILL));
    let o = flash(&[&url, &lo.0, "--yes", "--sha256", &sha(&packed)]);
    ok(&o);
    assert!(lo.bytes()[..img.len()] == img[..]);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".bty-flash-"))
        .collect();
    assert!(leftovers.is_empty(), "download left behind: {leftovers:?}");
}
