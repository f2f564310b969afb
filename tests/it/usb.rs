//! `bty-lab usb build`: the stick image checked with the real tools
//! (sfdisk, mtools, debugfs), and its refusals. The boot test (SeaBIOS
//! and OVMF booting the stick in qemu) is crates/bty-e2e/tests/usb.rs.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::util::{fails_with, have_tool, ok, on_path, run, TestDir};

const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Every tool the build and these checks run (sbin dirs included: mkfs.fat
/// and sfdisk live there).
fn tools_present() -> bool {
    let sbin = |p: &str| on_path(p) || Path::new("/usr/sbin").join(p).is_file();
    let progs = [
        "sfdisk", "mkfs.fat", "mcopy", "mmd", "mdir", "mtype", "syslinux", "mke2fs", "debugfs",
    ];
    have_tool(
        "the usb build tools (fdisk dosfstools mtools syslinux syslinux-common systemd-boot-efi e2fsprogs)",
        progs.iter().all(|p| sbin(p))
            && Path::new(GPTMBR).is_file()
            && Path::new(SYSTEMD_BOOT).is_file(),
    )
}

fn fake_media(dir: &Path) -> PathBuf {
    let m = dir.join("fake-media");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("bty-netboot-x86_64.vmlinuz"), b"fake kernel").unwrap();
    std::fs::write(m.join("bty-netboot-x86_64.initrd"), b"fake initrd").unwrap();
    m
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes that are not all one value, so a wrong offset shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn tool(prog: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(prog)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(prog: &str, args: &[&str]) -> String {
    String::from_utf8(tool(prog, args)).unwrap()
}

/// Copy `len` bytes at `start` of `from` into a new file.
fn extract(from: &Path, start: u64, len: u64, to: &Path) {
    let mut f = std::fs::File::open(from).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    std::io::copy(&mut f.take(len), &mut out).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A stick from fake media and two images, checked part by part with the
/// tools that read such disks.
#[test]
fn usb_build_writes_a_gpt_stick_with_both_loaders_and_the_images() {
    if !tools_present() {
        return;
    }
    let t = TestDir::new();
    let media = fake_media(t.path());
    let raw = pattern(3 << 20, 7);
    std::fs::write(t.path().join("debian-12.img"), &raw).unwrap();
    let zst = zstd::encode_all(&pattern(1 << 20, 9)[..], 3).unwrap();
    std::fs::write(t.path().join("win.img.zst"), &zst).unwrap();
    let out = t.path().join("out").join("stick.img");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    let o = run(&[
        "usb",
        "build",
        "--out",
        out.to_str().unwrap(),
        "--netboot",
        media.to_str().unwrap(),
        "--image",
        &format!("deb12={}", t.path().join("debian-12.img").display()),
        "--image",
        &format!("win={}", t.path().join("win.img.zst").display()),
        "--auto",
        "image=deb12,disk-serial=WD-123,after=poweroff",
    ]);
    ok(&o);
    assert_eq!(
        entries(out.parent().unwrap()),
        ["stick.img"],
        "no temp left"
    );
    let stick = out.to_str().unwrap();

    // GPT: the ESP (legacy-BIOS-bootable, for gptmbr.bin) then the data
    // partition, named as their file systems are labelled.
    let j: serde_json::Value = serde_json::from_str(&text("sfdisk", &["--json", stick])).unwrap();
    let pt = &j["partitiontable"];
    assert_eq!(pt["label"], "gpt", "{j}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{j}");
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["name"], "BTY-EFI");
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(parts[1]["name"], "BTY-DATA");
    assert!(parts[1].get("attrs").is_none(), "{j}");
    let sector = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap() * 512;
    let (esp_at, data_at, data_len) = (
        sector(&parts[0], "start"),
        sector(&parts[1], "start"),
        sector(&parts[1], "size"),
    );
    assert_eq!(esp_at % (1 << 20), 0);
    assert_eq!(data_at % (1 << 20), 0);

    // The protective MBR carries syslinux's GPT boot code, then its own
    // 0xEE entry and the signature.
    let mut mbr = [0u8; 512];
    std::fs::File::open(&out)
        .unwrap()
        .read_exact(&mut mbr)
        .unwrap();
    let code = std::fs::read(GPTMBR).unwrap();
    assert_eq!(&mbr[..code.len()], &code[..], "gptmbr.bin in the MBR");
    assert_eq!(mbr[450], 0xEE, "protective MBR entry");
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);

    // The ESP: FAT labelled BTY-EFI, both loaders, the media's kernel and
    // initrd, one command line.
    let img = format!("{stick}@@{esp_at}");
    let dir = text("mdir", &["-i", &img, "::/"]);
    assert!(dir.contains("BTY-EFI"), "{dir}");
    assert_eq!(
        tool("mtype", &["-i", &img, "::/bty/vmlinuz"]),
        b"fake kernel"
    );
    assert_eq!(
        tool("mtype", &["-i", &img, "::/bty/initrd"]),
        b"fake initrd"
    );
    let efi = t.path().join("BOOTX64.EFI");
    tool(
        "mcopy",
        &["-i", &img, "::/EFI/BOOT/BOOTX64.EFI", efi.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(&efi).unwrap(),
        std::fs::read(SYSTEMD_BOOT).unwrap()
    );
    let sys = text("mtype", &["-i", &img, "::/syslinux/syslinux.cfg"]);
    let cmdline = "bty.mode=wizard console=tty0 console=ttyS0,115200n8";
    assert!(sys.contains(&format!("APPEND {cmdline}")), "{sys}");
    assert!(
        sys.contains("LINUX /bty/vmlinuz") && sys.contains("INITRD /bty/initrd"),
        "{sys}"
    );
    let entry = text("mtype", &["-i", &img, "::/loader/entries/bty.conf"]);
    assert!(entry.contains(&format!("options {cmdline}")), "{entry}");
    assert!(entry.contains("linux /bty/vmlinuz"), "{entry}");
    let conf = text("mtype", &["-i", &img, "::/loader/loader.conf"]);
    assert!(conf.contains("default bty.conf"), "{conf}");
    let hidden = text("mdir", &["-a", "-i", &img, "::/syslinux"]);
    assert!(
        hidden.contains("ldlinux  sys") && hidden.contains("ldlinux  c32"),
        "{hidden}"
    );

    // The data partition: ext4 BTY-DATA with the manifest and the images.
    let data = t.path().join("data.ext4");
    extract(&out, data_at, data_len, &data);
    let d = data.to_str().unwrap();
    assert_eq!(text("e2label", &[d]).trim(), "BTY-DATA");
    let m: serde_json::Value =
        serde_json::from_slice(&tool("debugfs", &["-R", "cat /bty-stick.json", d])).unwrap();
    assert_eq!(m["version"], 1, "{m}");
    // No --server: no server and no key (the server's test is
    // usb_build_with_server_fetches_through_its_withcache_and_mints_a_stick_key).
    assert!(m.get("server").is_none() && m.get("key").is_none(), "{m}");
    assert_eq!(m["auto"]["image"], "deb12");
    assert_eq!(m["auto"]["disk_serial"], "WD-123");
    assert_eq!(m["auto"]["after"], "poweroff");
    let imgs = m["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0]["name"], "deb12");
    assert_eq!(imgs[0]["file"], "images/deb12.img");
    assert_eq!(imgs[0]["format"], "img");
    assert_eq!(imgs[0]["stored_size"], raw.len() as u64);
    assert_eq!(imgs[0]["stored_sha256"], sha256(&raw));
    assert_eq!(imgs[0]["size"], raw.len() as u64, "raw: decoded = stored");
    assert_eq!(imgs[0]["sha256"], sha256(&raw));
    assert_eq!(imgs[1]["name"], "win");
    assert_eq!(imgs[1]["file"], "images/win.img.zst");
    assert_eq!(imgs[1]["format"], "img.zst");
    assert_eq!(imgs[1]["stored_size"], zst.len() as u64);
    assert_eq!(imgs[1]["stored_sha256"], sha256(&zst));
    for (i, bytes) in [(0, &raw), (1, &zst)] {
        let file = imgs[i]["file"].as_str().unwrap();
        let got = t.path().join(format!("got{i}"));
        tool(
            "debugfs",
            &["-R", &format!("dump /{file} {}", got.display()), d],
        );
        assert_eq!(&std::fs::read(&got).unwrap(), bytes, "{file} on the stick");
    }
}

/// `--image NAME=URL`: fetched over HTTP (a loopback server here, talking
/// like withcache: it names the blob's sha256); a blob whose bytes do not
/// match what the server claims is refused.
#[test]
fn usb_build_fetches_an_image_url() {
    if !tools_present() {
        return;
    }
    let t = TestDir::new();
    let media = fake_media(t.path());
    let body = pattern(600_000, 3);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = body.clone();
    let good = sha256(&body);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let mut req = [0u8; 4096];
            let n = s.read(&mut req).unwrap_or(0);
            let req = String::from_utf8_lossy(&req[..n]);
            let claim = if req.contains("/bad.img") {
                "0".repeat(64)
            } else {
                good.clone()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Withcache-Sha256: {claim}\r\n\
                 Connection: close\r\n\r\n",
                served.len()
            );
            let _ = s.write_all(&served);
        }
    });
    let out = t.path().join("stick.img");
    let o = run(&[
        "usb",
        "build",
        "--out",
        out.to_str().unwrap(),
        "--netboot",
        media.to_str().unwrap(),
        "--image",
        &format!("web=http://127.0.0.1:{port}/blobs/web.img?x=1"),
    ]);
    ok(&o);
    let data = data_partition(t.path(), &out);
    let d = data.to_str().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&tool("debugfs", &["-R", "cat /bty-stick.json", d])).unwrap();
    assert_eq!(m["images"][0]["format"], "img", "{m}");
    assert_eq!(m["images"][0]["stored_sha256"], sha256(&body), "{m}");
    let got = t.path().join("got");
    tool(
        "debugfs",
        &["-R", &format!("dump /images/web.img {}", got.display()), d],
    );
    assert_eq!(std::fs::read(&got).unwrap(), body);

    let o = run(&[
        "usb",
        "build",
        "--out",
        out.to_str().unwrap(),
        "--netboot",
        media.to_str().unwrap(),
        "--image",
        &format!("bad=http://127.0.0.1:{port}/b/key/bad.img"),
    ]);
    fails_with(&o, "the server said 0000");
}

/// Bad input is refused before anything is written, and a build that
/// fails half-way leaves the old --out as it was and no temp behind.
#[test]
fn usb_build_refuses_bad_input_and_leaves_nothing_behind() {
    if !tools_present() {
        return;
    }
    let t = TestDir::new();
    let media = fake_media(t.path());
    let m = media.to_str().unwrap();
    std::fs::write(t.path().join("a.img"), pattern(4096, 1)).unwrap();
    std::fs::write(t.path().join("a.iso"), pattern(4096, 1)).unwrap();
    let outdir = t.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("stick.img");
    std::fs::write(&out, b"the old stick").unwrap();
    let o = out.to_str().unwrap();
    let a = format!("a={}", t.path().join("a.img").display());
    let build = |extra: &[&str]| {
        let mut args = vec!["usb", "build", "--out", o];
        args.extend_from_slice(extra);
        run(&args)
    };
    let missing = format!("x={}", t.path().join("nope.img").display());
    fails_with(
        &build(&["--netboot", m, "--image", &missing]),
        "nope.img: cannot read the file",
    );
    let iso = format!("x={}", t.path().join("a.iso").display());
    fails_with(
        &build(&["--netboot", m, "--image", &iso]),
        "cannot tell the image format from the file name \"a.iso\"",
    );
    fails_with(
        &build(&[
            "--netboot",
            m,
            "--image",
            &a,
            "--auto",
            "image=b,disk-serial=S,after=reboot",
        ]),
        "--auto image=b: no --image of that name (given: a)",
    );
    fails_with(
        &build(&["--netboot", m, "--image", &a, "--image", &a]),
        "the name \"a\" is given twice",
    );
    fails_with(
        &build(&["--netboot", m]),
        "a stick needs something to flash",
    );
    // Fails after the temp dir is made: the media lacks its initrd.
    let half = t.path().join("half-media");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("bty-netboot-x86_64.vmlinuz"), b"k").unwrap();
    fails_with(
        &build(&["--netboot", half.to_str().unwrap(), "--image", &a]),
        "has no bty-netboot-x86_64.initrd",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the old stick");
    assert_eq!(entries(&outdir), ["stick.img"], "nothing but the old --out");

    // An --out nobody can write: its directory does not exist.
    let nowhere = t.path().join("no-such-dir").join("stick.img");
    fails_with(
        &run(&[
            "usb",
            "build",
            "--out",
            nowhere.to_str().unwrap(),
            "--netboot",
            m,
            "--image",
            &a,
        ]),
        "cannot write next to --out",
    );
    assert!(!t.path().join("no-such-dir").exists());
    fails_with(
        &run(&[
            "usb",
            "build",
            "--out",
            outdir.to_str().unwrap(),
            "--netboot",
            m,
            "--image",
            &a,
        ]),
        "is a directory",
    );
}

/// `usb build --server`: the password is checked before anything is
/// built; a URL image comes through that bty-web's withcache (the catalog
/// gains an entry for it, the origin is fetched once for two sticks); each
/// stick gets its own key, listed by label on the server and accepted by
/// its stick catalog; without the key the catalog is closed.
#[test]
fn usb_build_with_server_fetches_through_its_withcache_and_mints_a_stick_key() {
    if !tools_present() {
        return;
    }
    use crate::image::{hex_sha, http, origin, start_serve, PW};
    use crate::util::run_with;
    use std::sync::atomic::Ordering;

    let t = TestDir::new();
    let media = fake_media(t.path());
    let body = pattern(1_500_000, 7);
    let (origin_port, gets) = origin(body.clone());
    let (serve, web, _cache) = start_serve(&t);
    let src = format!("http://127.0.0.1:{origin_port}/lab.img");
    let server = format!("http://127.0.0.1:{web}");
    let out = t.path().join("stick.img");
    let build = |out: &Path, password: &str| {
        run_with(
            &crate::util::bin(),
            &[
                "usb",
                "build",
                "--out",
                out.to_str().unwrap(),
                "--netboot",
                media.to_str().unwrap(),
                "--image",
                &format!("lab={src}"),
                "--server",
                &server,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        )
    };

    // A wrong password: refused at once, no stick, no key, no image added.
    let o = build(&out, "not-the-password");
    fails_with(&o, "refused the login");
    assert!(!out.exists());
    assert_eq!(
        entries(t.path())
            .iter()
            .filter(|e| e.starts_with(".bty-usb"))
            .count(),
        0
    );
    let (code, b) = http(web, "GET", "/api/sticks", None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(gets.load(Ordering::SeqCst), 0, "nothing fetched");

    let o = build(&out, PW);
    ok(&o);
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(said.contains("added lab to the catalog"), "{said}");
    assert!(said.contains("comes through withcache"), "{said}");
    let m = stick_manifest(t.path(), &out);
    assert_eq!(m["server"], server.as_str(), "{m}");
    let key = m["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("btystick_") && key.len() > 40, "{m}");
    assert_eq!(m["images"][0]["stored_sha256"], hex_sha(&body), "{m}");
    // The catalog has the origin URL as an entry; its bytes came from
    // withcache, which fetched the origin once.
    let (_, b) = http(web, "GET", "/api/images", None);
    let images: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let lab = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lab")
        .unwrap_or_else(|| panic!("no entry lab: {images}"));
    assert_eq!(lab["src"], src.as_str(), "{lab}");
    assert_eq!(gets.load(Ordering::SeqCst), 1);

    // A second stick: the existing entry is used (no second add, the
    // origin is not fetched again) and a second key is minted.
    let out2 = t.path().join("stick2.img");
    let o = build(&out2, PW);
    ok(&o);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("added lab"));
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "the origin was fetched once for two sticks"
    );
    let key2 = stick_manifest(t.path(), &out2)["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(key, key2);
    let (_, b) = http(web, "GET", "/api/sticks", None);
    let sticks: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let labels: Vec<&str> = sticks
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "{sticks}");
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("stick.img (usb build on")),
        "{labels:?}"
    );
    assert!(
        !String::from_utf8_lossy(&b).contains(&key),
        "the list never shows a key"
    );

    // The key opens the stick catalog; no key does not.
    let catalog = |auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", web)).unwrap();
        let auth = auth
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET /stick/catalog HTTP/1.0\r\nHost: 127.0.0.1:{web}\r\n{auth}\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    };
    // (bty-web learns withcache's measurement on its next poll.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = catalog(Some(&key));
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        if answer.contains("\"lab\"") && answer.contains(&hex_sha(&body)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed: {answer}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let closed = catalog(None);
    assert!(closed.starts_with("HTTP/1.0 401"), "{closed}");
    drop(serve);
}

/// The data partition (the second) of the stick image `stick`, copied to
/// a file under `dir`.
fn data_partition(dir: &Path, stick: &Path) -> PathBuf {
    let j: serde_json::Value =
        serde_json::from_str(&text("sfdisk", &["--json", stick.to_str().unwrap()])).unwrap();
    let p = &j["partitiontable"]["partitions"][1];
    let name = stick.file_name().unwrap().to_string_lossy();
    let data = dir.join(format!("{name}.data.ext4"));
    extract(
        stick,
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
        &data,
    );
    data
}

/// The manifest on the data partition of the stick image `stick`.
fn stick_manifest(dir: &Path, stick: &Path) -> serde_json::Value {
    let data = data_partition(dir, stick);
    let m = tool(
        "debugfs",
        &["-R", "cat /bty-stick.json", data.to_str().unwrap()],
    );
    serde_json::from_slice(&m).unwrap()
}
