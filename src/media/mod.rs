//! The netboot media: Debian's kernel, an initramfs with busybox, the
//! kernel modules for common NICs and disks and this very binary as the
//! agent (`/bin/bty`), and the iPXE bootfiles. Built in Rust from Debian
//! packages (through the host's apt, or from a directory of .debs),
//! reproducibly, cached per binary, and placed into a boot dir atomically.
//!
//! The flow of a build, one module each: [`packages`] (which .debs: [`apt`]
//! or `--from`) → [`deb`] (reading them) → [`kernel`] (vmlinuz and the
//! module closure, [`modules`]) → [`initramfs`] (the tree) → [`cpio`] (the
//! archive) → [`build`] (the output directory, [`cache`]d). [`place`] puts
//! media into a boot dir, [`status`] says what is where.
//!
//! Callers (`deploy`, `serve`, `upgrade`, the image builder) use
//! [`ensure`], [`place`] and [`inspect`]; all are synchronous (run them
//! with `spawn_blocking` from async code).

mod apt;
pub mod build;
mod cache;
mod cpio;
mod deb;
mod initramfs;
mod ipxe;
mod kernel;
mod modules;
mod packages;
pub mod place;
pub mod signed;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

pub use build::{copy_out, download, ensure_with};
pub use place::{place, report, summary, Mode, OperatorRecord};

/// The kernel's file name in the media and bty-web's default `[boot] kernel`.
pub const KERNEL: &str = "bty-netboot-x86_64.vmlinuz";
/// The initrd's file name in the media and bty-web's default `[boot] initrd`.
pub const INITRD: &str = "bty-netboot-x86_64.initrd";
/// The manifest of a media directory.
pub const MANIFEST: &str = "media.json";
/// The info file inside the initramfs.
pub const INFO_PATH: &str = "etc/bty-media.json";
/// What `media/build.sh` put there before (`<agent version>-k<release>`).
const LEGACY_VERSION_PATH: &str = "etc/bty-netboot-version";

/// How to get the media.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Take the .debs from this directory (no network, no apt).
    pub from: Option<PathBuf>,
    /// Cache directory; `None`: `/var/cache/bty` as root, else the XDG
    /// cache dir.
    pub cache: Option<PathBuf>,
}

/// A directory holding the kernel, the initrd, the three iPXE bootfiles,
/// the two Secure Boot bootfiles ([`signed`]) and `media.json`.
#[derive(Debug, Clone)]
pub struct Media {
    pub dir: PathBuf,
    pub info: Info,
}

/// What a media is: written as `/etc/bty-media.json` in the initramfs and
/// inside `media.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// `<agent version>-k<kernel release>`.
    pub version: String,
    /// The agent's (= bty-lab's) version.
    pub agent_version: String,
    /// SHA-256 of the agent binary (`/bin/bty`): which build it is.
    pub agent_sha256: String,
    /// The kernel package (`linux-image-6.1.0-57-amd64`).
    pub kernel: String,
    /// Its Debian version (`6.1.192-3`).
    #[serde(default)]
    pub kernel_version: String,
    /// `uname -r` of that kernel (`6.1.0-57-amd64`).
    #[serde(default)]
    pub kernel_release: String,
    /// busybox-static's Debian version.
    #[serde(default)]
    pub busybox: String,
    /// The modules in the image (the closure of the wanted drivers).
    #[serde(default)]
    pub modules: Vec<String>,
    /// The mtime of every file in the initramfs.
    #[serde(default)]
    pub source_date_epoch: u32,
}

/// One file of a media directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub size: u64,
}

/// `media.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub info: Info,
    /// Where the iPXE bootfiles came from.
    #[serde(default)]
    pub ipxe: String,
    /// The Secure Boot bootfiles (`shimx64.efi`, `grubx64.efi`): which
    /// package and version each came from (media built before they existed
    /// have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_boot: Vec<signed::Origin>,
    pub files: BTreeMap<String, FileSum>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }
}

impl Media {
    /// The media in `dir` (an `--out` of `media build`, a `--netboot DIR`):
    /// described by its `media.json`, else by the info inside its initrd,
    /// else (media from elsewhere) by an empty [`Info`].
    pub fn from_dir(dir: &Path) -> Result<Media> {
        let info = if dir.join(MANIFEST).is_file() {
            Manifest::read(dir)?.info
        } else if dir.join(INITRD).is_file() {
            inspect(&dir.join(INITRD))?.unwrap_or_default()
        } else {
            Info::default()
        };
        Ok(Media {
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// Refuse a directory without the kernel or the initrd (an operator's
    /// `--netboot DIR` must hold both: they are one unit).
    pub fn require_pair(&self) -> Result<()> {
        let missing: Vec<&str> = [KERNEL, INITRD]
            .into_iter()
            .filter(|f| !self.dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "{} has no {} (a media directory holds {KERNEL} and {INITRD}: \
                 `bty-lab media build --out DIR` writes one)",
                self.dir.display(),
                missing.join(" and ")
            );
        }
        Ok(())
    }
}

/// What to do when this binary's netboot media cannot be had; `pull`:
/// the command can use pulled images instead (they carry the media).
pub fn ways_out(pull: bool, netboot: bool) -> String {
    let mut ways = vec![
        "let this host's apt download Debian's kernel, busybox-static, shim-signed and \
         grub-efi-amd64-signed packages (a Debian \
         or Ubuntu host; `apt-get update` if its indexes are stale)"
            .to_string(),
        "pass --from DIR with those .debs (`bty-lab media download --out DIR` fills DIR on a \
         host with apt)"
            .to_string(),
    ];
    if pull {
        ways.push(
            "use --images pull where a registry has the images (they carry the media)".into(),
        );
    }
    if netboot {
        ways.push(
            "pass --netboot DIR with media built elsewhere (`bty-lab media build --out DIR`)"
                .into(),
        );
    }
    format!("Ways out: {}.", ways.join("; or "))
}

/// The media a command boots machines with: the operator's `netboot` dir
/// (both files there, else an error), else this binary's, cached or built
/// now (`from`: from those .debs, no apt). Blocking (a build takes a
/// minute); the error carries the ways out.
pub fn obtain(netboot: Option<&Path>, from: Option<PathBuf>) -> Result<(Media, Mode)> {
    if let Some(dir) = netboot {
        let m =
            Media::from_dir(dir).with_context(|| format!("reading --netboot {}", dir.display()))?;
        m.require_pair().context("--netboot")?;
        return Ok((m, Mode::Operator));
    }
    let opts = Options { from, cache: None };
    let m = ensure(&opts).map_err(|e| anyhow::anyhow!("{e:#}\n{}", ways_out(false, true)))?;
    Ok((m, Mode::Auto))
}

/// The media for this binary: cached, else built (progress on stderr).
/// Never returns a half-built directory.
pub fn ensure(opts: &Options) -> Result<Media> {
    ensure_with(opts, false)
}

/// Read the info file out of an initrd (`None`: not a bty initrd). Media
/// from `media/build.sh` carry only a version line; their info has no
/// agent SHA-256.
pub fn inspect(initrd: &Path) -> Result<Option<Info>> {
    let Some((name, bytes)) = cpio::find_in_initrd(initrd, &[INFO_PATH, LEGACY_VERSION_PATH])?
    else {
        return Ok(None);
    };
    if name == INFO_PATH {
        let info = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {name} in {}", initrd.display()))?;
        return Ok(Some(info));
    }
    let version = String::from_utf8_lossy(&bytes).trim().to_string();
    let (agent, release) = version.split_once("-k").unwrap_or((&version, ""));
    Ok(Some(Info {
        agent_version: agent.to_string(),
        kernel_release: release.to_string(),
        version,
        ..Info::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_initrd_version_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("old.initrd");
        let e = vec![
            cpio::Entry {
                path: "./etc".into(),
                mode: 0o755,
                node: cpio::Node::Dir,
            },
            cpio::Entry {
                path: "./etc/bty-netboot-version".into(),
                mode: 0o644,
                node: cpio::Node::File(b"0.1.0-k6.1.0-57-amd64\n".to_vec()),
            },
        ];
        cpio::write_gz(&e, 0, 6, &p, None).unwrap();
        let i = inspect(&p).unwrap().unwrap();
        assert_eq!(
            (i.agent_version.as_str(), i.kernel_release.as_str()),
            ("0.1.0", "6.1.0-57-amd64")
        );
        assert!(i.agent_sha256.is_empty());
    }
}
