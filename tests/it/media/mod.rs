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

mod boot;
mod build;
mod contents;
mod modules;
mod secure_boot;
mod status;
mod wizard;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::util::{bin, have_tool, ok, on_path, stderr, stdout};

const KERNEL: &str = "bty-netboot-x86_64.vmlinuz";
pub const INITRD: &str = "bty-netboot-x86_64.initrd";
pub const IPXE: [&str; 3] = ["ipxe.efi", "snponly.efi", "undionly.kpxe"];
/// The Secure Boot bootfiles: shim, then the GRUB it fetches.
pub const SIGNED: [&str; 2] = ["shimx64.efi", "grubx64.efi"];
pub const WANTED: [&str; 27] = [
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
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "ohci_pci",
    "usb_storage",
    "uas",
    "ext4",
    "usbhid",
    "hid_generic",
];

/// `exe args` with extra environment; stdin closed.
pub fn lab_env(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(exe);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running bty-lab")
}

pub fn sha256(p: &Path) -> String {
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

pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A fresh directory under target/tmp/media-it (kept between runs so the
/// shared media do not pile up in /tmp).
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("media-it")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory holding exactly the kernel, busybox-static, ipxe,
/// shim-signed and grub-efi-amd64-signed .debs
/// (symlinks into the download store), or None to skip.
pub fn debs() -> Option<&'static Path> {
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

pub fn find_deb(dir: &Path, prefix: &str) -> PathBuf {
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
pub struct Built {
    exe: PathBuf,
    out: PathBuf,
    cache: PathBuf,
    stderr: String,
}

pub fn build(name: &str, exe: &Path, env: &[(&str, &str)]) -> Option<Built> {
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
pub fn media_a() -> Option<&'static Built> {
    static A: OnceLock<Option<Built>> = OnceLock::new();
    A.get_or_init(|| build("a", &bin(), &[])).as_ref()
}

/// Media built by another binary (this one plus a byte), with the iPXE
/// bootfiles taken from the ipxe .deb (no host iPXE dir).
pub fn media_other() -> Option<&'static Built> {
    static B: OnceLock<Option<Built>> = OnceLock::new();
    B.get_or_init(|| {
        debs()?;
        let d = scratch("other-bin");
        let exe = d.join("bty-lab");
        // Written by a child process: a file this (multi-threaded) test
        // process had open for writing can be inherited by a sibling test's
        // fork, and exec'ing it then fails with "Text file busy".
        let st = Command::new("sh")
            .args(["-c", "cp \"$1\" \"$2\" && printf '\\n' >> \"$2\""])
            .arg("sh")
            .arg(bin())
            .arg(&exe)
            .status()
            .unwrap();
        assert!(st.success(), "copying the binary");
        build("other", &exe, &[("BTY_IPXE_DIR", "/nonexistent/ipxe")])
    })
    .as_ref()
}

/// A gzip'd newc initrd holding only the info file `media inspect` reads,
/// saying its agent is `agent_version` (an old or a newer media, without
/// building one with another binary).
pub fn fake_initrd(path: &Path, agent_version: &str) {
    let info = serde_json::json!({
        "version": format!("{agent_version}-k6.1.0-test-amd64"),
        "agent_version": agent_version,
        "agent_sha256": "0".repeat(64),
        "kernel": "linux-image-test",
    });
    let body = serde_json::to_vec(&info).unwrap();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut w = cpio::newc::Builder::new("etc/bty-media.json")
        .mode(0o100644)
        .write(gz, body.len() as u32);
    w.write_all(&body).unwrap();
    let gz = cpio::newc::trailer(w.finish().unwrap()).unwrap();
    gz.finish().unwrap();
}

/// `bty-lab media status --json --initrd FILE` by this binary: what the
/// initrd says its agent is.
pub fn initrd_info(initrd: &Path) -> serde_json::Value {
    let o = lab_env(
        &bin(),
        &[
            "media",
            "status",
            "--json",
            "--initrd",
            initrd.to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    s["initrd"]["info"].clone()
}
