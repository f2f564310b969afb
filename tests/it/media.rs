//! `bty-lab media`: real Debian packages, downloaded once through apt by
//! `bty-lab media download` into `target/tmp/media-debs` (or taken from
//! `$BTY_MEDIA_DEBS`), real tools to check what bty-lab writes (cpio,
//! dpkg-deb, kmod's depmod/modprobe, busybox's modprobe) and one real boot
//! of the result in qemu (TCG).
//!
//! Builds are ~10 s each on two cores (mostly xz-decoding the kernel
//! package), so two built media are shared: [`media_a`] by this test
//! binary, [`media_other`] by a copy of it with one byte appended (another
//! binary) and no host iPXE dir (bootfiles from the ipxe .deb). Their
//! directories live under `target/tmp/media-it/` and are rebuilt on every
//! run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util::{bin, fails_with, have_tool, ok, on_path, stderr, stdout, TestDir};

const KERNEL: &str = "bty-netboot-x86_64.vmlinuz";
const INITRD: &str = "bty-netboot-x86_64.initrd";
const IPXE: [&str; 3] = ["ipxe.efi", "snponly.efi", "undionly.kpxe"];
const WANTED: [&str; 18] = [
    "virtio_pci",
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "r8169",
    "tg3",
    "bnxt_en",
    "mlx5_core",
    "virtio_blk",
    "virtio_scsi",
    "ahci",
    "nvme",
    "sd_mod",
    "af_packet",
];

/// `exe args` with extra environment; stdin closed.
fn lab_env(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(exe);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running bty-lab")
}

fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A fresh directory under target/tmp/media-it (kept between runs so the
/// shared media do not pile up in /tmp).
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("media-it")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory holding exactly the kernel, busybox-static and ipxe .debs
/// (symlinks into the download store), or None to skip.
fn debs() -> Option<&'static Path> {
    static DEBS: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEBS.get_or_init(|| {
        if let Some(d) = std::env::var_os("BTY_MEDIA_DEBS").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d));
        }
        if !have_tool(
            "apt-get (the tests download Debian's packages once)",
            on_path("apt-get"),
        ) {
            return None;
        }
        let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("media-debs");
        let o = lab_env(
            &bin(),
            &["media", "download", "--out", store.to_str().unwrap()],
            &[],
        );
        ok(&o);
        let dir = scratch("debs");
        for line in stdout(&o).lines().filter(|l| l.ends_with(".deb")) {
            let p = Path::new(line);
            std::os::unix::fs::symlink(p, dir.join(p.file_name().unwrap())).unwrap();
        }
        Some(dir)
    })
    .as_deref()
}

fn find_deb(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(prefix) && n.ends_with(".deb")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.deb in {}", dir.display()))
}

/// One built media: `out` (what `--out` got), `cache`, the build's stderr.
struct Built {
    exe: PathBuf,
    out: PathBuf,
    cache: PathBuf,
    stderr: String,
}

fn build(name: &str, exe: &Path, env: &[(&str, &str)]) -> Option<Built> {
    let from = debs()?;
    let d = scratch(name);
    let (out, cache) = (d.join("out"), d.join("cache"));
    let o = lab_env(
        exe,
        &[
            "media",
            "build",
            "--from",
            from.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        env,
    );
    ok(&o);
    Some(Built {
        exe: exe.to_path_buf(),
        out,
        cache,
        stderr: stderr(&o),
    })
}

/// Media built by this test binary.
fn media_a() -> Option<&'static Built> {
    static A: OnceLock<Option<Built>> = OnceLock::new();
    A.get_or_init(|| build("a", &bin(), &[])).as_ref()
}

/// Media built by another binary (this one plus a byte), with the iPXE
/// bootfiles taken from the ipxe .deb (no host iPXE dir).
fn media_other() -> Option<&'static Built> {
    static B: OnceLock<Option<Built>> = OnceLock::new();
    B.get_or_init(|| {
        debs()?;
        let d = scratch("other-bin");
        let exe = d.join("bty-lab");
        std::fs::copy(bin(), &exe).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&exe)
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        build("other", &exe, &[("BTY_IPXE_DIR", "/nonexistent/ipxe")])
    })
    .as_ref()
}

#[test]
fn two_builds_give_the_same_bytes_and_from_needs_no_apt() {
    let Some(a) = media_a() else { return };
    let from = debs().unwrap();
    // The second build with a PATH that has no apt-get (nor anything else):
    // --from needs no network and no apt.
    let empty = TestDir::new();
    let d = scratch("repro");
    let out = d.join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            from.to_str().unwrap(),
            "--cache",
            d.join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    ok(&o);
    for f in [KERNEL, INITRD, "media.json"].iter().chain(IPXE.iter()) {
        assert_eq!(
            sha256(&a.out.join(f)),
            sha256(&out.join(f)),
            "{f} differs between two builds"
        );
    }
    // What media.json says is what is there.
    let m = json(&out.join("media.json"));
    for f in [KERNEL, INITRD].iter().chain(IPXE.iter()) {
        assert_eq!(m["files"][f]["sha256"], sha256(&out.join(f)), "{f}");
        assert_eq!(
            m["files"][f]["size"],
            std::fs::metadata(out.join(f)).unwrap().len(),
            "{f}"
        );
    }
    assert_eq!(m["info"]["agent_sha256"], sha256(&bin()));
    assert_eq!(m["info"]["agent_version"], env!("CARGO_PKG_VERSION"));
    // gzip header: deflate, no FNAME/FCOMMENT flags, MTIME 0.
    let head = std::fs::read(out.join(INITRD)).unwrap()[..10].to_vec();
    assert_eq!(&head[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "{head:02x?}");
}

#[test]
fn a_second_build_is_a_cache_hit_and_force_rebuilds() {
    let Some(a) = media_a() else { return };
    assert!(a.stderr.contains("media: building for"), "{}", a.stderr);
    let args = ["media", "build", "--cache", a.cache.to_str().unwrap()];
    let t = Instant::now();
    // No --from and a PATH without apt: a cache hit needs neither.
    let empty = TestDir::new();
    let o = lab_env(&bin(), &args, &[("PATH", empty.path().to_str().unwrap())]);
    ok(&o);
    assert!(
        stderr(&o).contains("using the cached media"),
        "{}",
        stderr(&o)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "cache hit took {:?}",
        t.elapsed()
    );
    let dir = PathBuf::from(stdout(&o).trim());
    assert_eq!(sha256(&dir.join(INITRD)), sha256(&a.out.join(INITRD)));
    // --force builds again (and without --from or apt, that fails clearly).
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = lab_env(&bin(), &forced, &[("PATH", empty.path().to_str().unwrap())]);
    fails_with(&o, "no apt-get");
    assert!(
        dir.join(INITRD).is_file(),
        "a failed rebuild must leave the cached media alone"
    );
}

#[test]
fn no_apt_and_no_from_names_both_ways_out_and_places_nothing() {
    let t = TestDir::new();
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("PATH", t.path().to_str().unwrap())],
    );
    fails_with(&o, "no apt-get");
    let err = stderr(&o);
    assert!(
        err.contains("--from DIR") && err.contains("bty-lab media download"),
        "{err}"
    );
    assert!(!out.exists(), "{} was created", out.display());
}

/// A copy of the debs dir with the kernel .deb replaced by `damage` of it.
fn damaged_debs(t: &TestDir, damage: impl Fn(&mut Vec<u8>)) -> (PathBuf, String) {
    let from = debs().unwrap();
    let dir = t.path().join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::symlink(
            std::fs::canonicalize(&p).unwrap(),
            dir.join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    let k = find_deb(&dir, "linux-image-");
    let name = k.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&k).unwrap();
    std::fs::remove_file(&k).unwrap();
    damage(&mut bytes);
    std::fs::write(&k, bytes).unwrap();
    (dir, name)
}

fn assert_nothing_placed(t: &TestDir, out: &Path) {
    assert!(
        !out.exists(),
        "{} exists after a failed build",
        out.display()
    );
    let media = t.path().join("cache/media");
    let left: Vec<_> = std::fs::read_dir(&media)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", media.display());
}

#[test]
fn a_truncated_deb_is_named_and_nothing_is_placed() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    let (dir, name) = damaged_debs(&t, |b| b.truncate(b.len() / 2));
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            dir.to_str().unwrap(),
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&o, &name);
    fails_with(&o, "data.tar.xz is truncated");
    assert_nothing_placed(&t, &out);
}

#[test]
fn a_corrupted_deb_is_named_and_nothing_is_placed() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    // Scribble over 64 KiB in the middle of the compressed data.
    let (dir, name) = damaged_debs(&t, |b| {
        let mid = b.len() / 2;
        for (i, x) in b[mid..mid + 65536].iter_mut().enumerate() {
            *x ^= (i as u8).wrapping_mul(31) | 1;
        }
    });
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            dir.to_str().unwrap(),
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&o, &name);
    fails_with(&o, "data.tar.xz is corrupt");
    assert_nothing_placed(&t, &out);
}

fn status(exe: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["media", "status", "--json"];
    a.extend_from_slice(args);
    let o = lab_env(exe, &a, &[]);
    ok(&o);
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn status_says_match_and_mismatch() {
    let (Some(a), Some(b)) = (media_a(), media_other()) else {
        return;
    };
    let cache = a.cache.to_str().unwrap();
    // Our own media, in the cache, in a boot dir and as a bare initrd.
    let s = status(
        &bin(),
        &["--cache", cache, "--boot-dir", a.out.to_str().unwrap()],
    );
    assert_eq!(s["binary"]["sha256"], sha256(&bin()));
    assert_eq!(s["cache"]["matches"], true, "{s:#}");
    assert_eq!(s["boot_dir"]["matches"], true, "{s:#}");
    assert_eq!(
        s["boot_dir"]["info"]["agent_version"],
        env!("CARGO_PKG_VERSION")
    );
    // The other binary's initrd: same version, another build.
    let s = status(
        &bin(),
        &[
            "--cache",
            cache,
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
    );
    assert_eq!(s["initrd"]["matches"], false, "{s:#}");
    assert_eq!(s["initrd"]["info"]["agent_sha256"], sha256(&b.exe));
    assert!(
        s["initrd"]["summary"]
            .as_str()
            .unwrap()
            .contains("another build"),
        "{s:#}"
    );
    // ... which is the other binary's own.
    let s = status(
        &b.exe,
        &[
            "--cache",
            b.cache.to_str().unwrap(),
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
    );
    assert_eq!(
        (&s["cache"]["matches"], &s["initrd"]["matches"]),
        (&true.into(), &true.into()),
        "{s:#}"
    );
    // No media for this binary in the other's cache; a foreign file.
    let t = TestDir::new();
    let junk = t.path().join("junk.initrd");
    std::fs::write(&junk, b"\x1f\x8b not really gzip").unwrap();
    let s = status(
        &bin(),
        &[
            "--cache",
            b.cache.to_str().unwrap(),
            "--initrd",
            junk.to_str().unwrap(),
        ],
    );
    assert_eq!(s["cache"]["info"], serde_json::Value::Null, "{s:#}");
    assert_eq!(s["initrd"]["matches"], false);
    // The text form says the same.
    let o = lab_env(
        &bin(),
        &[
            "media",
            "status",
            "--cache",
            cache,
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("matches this binary") && text.contains("another build than this binary"),
        "{text}"
    );
}

#[test]
fn ipxe_bootfiles_come_from_the_deb_without_a_host_ipxe_dir() {
    let Some(b) = media_other() else { return };
    if !have_tool("dpkg-deb", on_path("dpkg-deb")) {
        return;
    }
    let m = json(&b.out.join("media.json"));
    assert!(m["ipxe"].as_str().unwrap().starts_with("ipxe "), "{m:#}");
    let t = TestDir::new();
    let deb = find_deb(debs().unwrap(), "ipxe_");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(t.path())
        .status()
        .unwrap();
    assert!(st.success());
    for f in IPXE {
        // Debian's usr/lib/ipxe/ipxe.efi is a link to /boot/ipxe.efi.
        let mut p = t.path().join("usr/lib/ipxe").join(f);
        if let Ok(l) = std::fs::read_link(&p) {
            p = t.path().join(l.strip_prefix("/").unwrap_or(&l));
        }
        assert_eq!(sha256(&p), sha256(&b.out.join(f)), "{f}");
    }
}

/// The initrd unpacked by GNU cpio into a fresh directory.
fn unpack(initrd: &Path, into: &Path) {
    let gz = std::fs::read(initrd).unwrap();
    let mut raw = Vec::new();
    gunzip(&gz, &mut raw);
    let mut c = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(into)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&raw).unwrap();
    assert!(c.wait().unwrap().success(), "cpio -i failed");
}

/// gunzip with the real tool (the test checks bty-lab's gzip, not ours).
fn gunzip(gz: &[u8], out: &mut Vec<u8>) {
    let mut c = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = gz.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    c.stdout.take().unwrap().read_to_end(out).unwrap();
    w.join().unwrap().unwrap();
    assert!(c.wait().unwrap().success(), "gzip -d failed");
}

#[test]
fn the_initrd_is_what_cpio_and_dpkg_deb_say() {
    let Some(a) = media_a() else { return };
    for tool in ["cpio", "gzip", "dpkg-deb"] {
        if !have_tool(tool, on_path(tool)) {
            return;
        }
    }
    let t = TestDir::new();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    unpack(&a.out.join(INITRD), &root);
    // cpio -tv: owners 0:0, one mtime, the console node, busybox links.
    let mut raw = Vec::new();
    gunzip(&std::fs::read(a.out.join(INITRD)).unwrap(), &mut raw);
    let mut c = Command::new("cpio")
        .args(["-tv", "--quiet", "--numeric-uid-gid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let w = std::thread::spawn(move || stdin.write_all(&raw));
    let mut listing = String::new();
    c.stdout
        .take()
        .unwrap()
        .read_to_string(&mut listing)
        .unwrap();
    w.join().unwrap().unwrap();
    assert!(c.wait().unwrap().success());
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines[0].ends_with(" etc") && lines[1].ends_with(" etc/bty-media.json"),
        "{:?}",
        &lines[..3]
    );
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "owner of {l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("crw-------") && l.ends_with(" dev/console")),
        "no /dev/console"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("sbin/modprobe -> /bin/busybox")),
        "no /sbin/modprobe link"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("bin/sh -> /bin/busybox")),
        "no /bin/sh link"
    );

    // The agent is this binary; the init has no wget clock hack.
    assert_eq!(sha256(&root.join("bin/bty")), sha256(&bin()));
    let init = std::fs::read_to_string(root.join("init")).unwrap();
    assert!(
        init.contains("/bin/bty --set-clock") && !init.contains("wget"),
        "{init}"
    );
    let info = json(&root.join("etc/bty-media.json"));
    assert_eq!(info, json(&a.out.join("media.json"))["info"]);

    // dpkg-deb agrees with bty-lab's reading of the packages.
    let from = debs().unwrap();
    let field = |deb: &Path, f: &str| {
        let o = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let kdeb = find_deb(from, "linux-image-");
    let bdeb = find_deb(from, "busybox-static_");
    assert_eq!(info["kernel"], field(&kdeb, "Package"));
    assert_eq!(info["kernel_version"], field(&kdeb, "Version"));
    assert_eq!(info["busybox"], field(&bdeb, "Version"));
    let x = t.path().join("bb");
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&bdeb)
        .arg(&x)
        .status()
        .unwrap()
        .success());
    assert_eq!(
        sha256(&x.join("bin/busybox")),
        sha256(&root.join("bin/busybox"))
    );
    let release = info["kernel_release"].as_str().unwrap();
    let fsys = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO ./boot/vmlinuz-{release} | sha256sum",
            kdeb.display()
        ))
        .output()
        .unwrap();
    let vm = String::from_utf8_lossy(&fsys.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(vm, sha256(&a.out.join(KERNEL)));
}

/// `lib/modules/<release>/modules.dep` as module name → dependency names.
fn deps_of(text: &str) -> BTreeMap<String, Vec<String>> {
    let name = |p: &str| {
        let b = p.rsplit('/').next().unwrap();
        b.split('.').next().unwrap().replace('-', "_")
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (name(m), d.split_whitespace().map(name).collect()))
        .collect()
}

#[test]
fn module_closure_agrees_with_kmod_and_busybox_modprobe_reads_it() {
    let Some(a) = media_a() else { return };
    for tool in ["cpio", "gzip", "dpkg-deb", "depmod", "modprobe"] {
        let present = on_path(tool) || Path::new("/sbin").join(tool).is_file();
        if !have_tool(tool, present) {
            return;
        }
    }
    let sbin = |t: &str| {
        if on_path(t) {
            PathBuf::from(t)
        } else {
            Path::new("/sbin").join(t)
        }
    };
    let info = json(&a.out.join("media.json"))["info"].clone();
    let release = info["kernel_release"].as_str().unwrap().to_string();
    let t = TestDir::new();
    let (root, kroot) = (t.path().join("root"), t.path().join("kernel"));
    std::fs::create_dir_all(&root).unwrap();
    unpack(&a.out.join(INITRD), &root);
    let ours =
        std::fs::read_to_string(root.join(format!("lib/modules/{release}/modules.dep"))).unwrap();
    let ours = deps_of(&ours);

    // TESTING.md's example: virtio_net and virtio_pci with their closures.
    for m in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_pci_legacy_dev",
        "virtio_pci_modern_dev",
        "failover",
        "net_failover",
        "virtio_net",
    ] {
        assert!(ours.contains_key(m), "{m} not in the image");
    }
    let vn: BTreeSet<&str> = ours["virtio_net"].iter().map(String::as_str).collect();
    assert_eq!(
        vn,
        BTreeSet::from(["virtio", "virtio_ring", "net_failover", "failover"])
    );

    // kmod over the whole kernel package: the same set of modules.
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(find_deb(debs().unwrap(), "linux-image-"))
        .arg(&kroot)
        .status()
        .unwrap()
        .success());
    assert!(Command::new(sbin("depmod"))
        .arg("-b")
        .arg(&kroot)
        .arg(&release)
        .status()
        .unwrap()
        .success());
    let mut kmod_set = BTreeSet::new();
    for m in WANTED {
        let o = Command::new(sbin("modprobe"))
            .arg("-d")
            .arg(&kroot)
            .args(["-S", &release, "--show-depends", m])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kmod modprobe --show-depends {m}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(p) = l.strip_prefix("insmod ") {
                let p = p.split_whitespace().next().unwrap();
                kmod_set.insert(deps_of(&format!("{p}:")).into_keys().next().unwrap());
            }
        }
    }
    let our_set: BTreeSet<String> = ours.keys().cloned().collect();
    assert_eq!(
        our_set, kmod_set,
        "module closure differs from kmod's --show-depends"
    );
    let listed: BTreeSet<String> = info["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, our_set);

    // kmod's depmod over the image's own files: the same dependencies per
    // module, and ours lists each module before what it needs (busybox
    // loads a line back to front).
    let o = Command::new(sbin("depmod"))
        .arg("-n")
        .arg("-b")
        .arg(&root)
        .arg(&release)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let dep_part: String = text
        .lines()
        .take_while(|l| !l.starts_with("# Soft"))
        .map(|l| format!("{l}\n"))
        .collect();
    let theirs = deps_of(&dep_part);
    for (m, d) in &ours {
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (d.iter().collect(), theirs[m].iter().collect());
        assert_eq!(a, b, "dependencies of {m}");
        for (i, x) in d.iter().enumerate() {
            for y in &d[i + 1..] {
                assert!(
                    !ours[y].contains(x),
                    "{m}: {x} listed before {y}, which needs it"
                );
            }
        }
    }

    // busybox's modprobe reads our modules.dep and modules.alias: dry runs
    // (-D) in a chroot of the image (it looks under /lib/modules/`uname -r`).
    if !have_tool("root (chroot for busybox modprobe)", is_root()) {
        return;
    }
    let host_release =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let host_release = host_release.trim();
    if host_release != release {
        std::os::unix::fs::symlink(&release, root.join("lib/modules").join(host_release)).unwrap();
    }
    let bb = |arg: &str| -> Vec<String> {
        let o = Command::new("chroot")
            .arg(&root)
            .args(["/bin/busybox", "modprobe", "-D", arg])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "busybox modprobe -D {arg}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|p| {
                deps_of(&format!("{}:", p.trim()))
                    .into_keys()
                    .next()
                    .unwrap()
            })
            .collect()
    };
    let order = bb("virtio_net");
    assert_eq!(
        order.last().map(String::as_str),
        Some("virtio_net"),
        "{order:?}"
    );
    let at = |m: &str| {
        order
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{m} not loaded: {order:?}"))
    };
    assert!(
        at("failover") < at("net_failover")
            && at("virtio_ring") < at("virtio")
            && at("virtio") < at("virtio_net"),
        "{order:?}"
    );
    // By modalias, as the /init asks: a virtio NIC and an Intel 82540EM.
    assert_eq!(
        bb("virtio:d00000001v00001AF4").last().map(String::as_str),
        Some("virtio_net")
    );
    assert_eq!(
        bb("pci:v00008086d0000100Esv00008086sd00001100bc02sc00i00")
            .last()
            .map(String::as_str),
        Some("e1000")
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

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
    // whose crypto (crct10dif) the kernel requests through /sbin/modprobe.
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
