//! The netboot environment (kernel + initramfs with the agent) for flash
//! tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context};

/// File names bty-web serves by default.
pub const KERNEL: &str = "bty-netboot-x86_64.vmlinuz";
/// See [`KERNEL`].
pub const INITRD: &str = "bty-netboot-x86_64.initrd";

fn has_media(dir: &Path) -> bool {
    dir.join(KERNEL).is_file() && dir.join(INITRD).is_file()
}

static BUILD: Mutex<()> = Mutex::new(());

/// The directory holding the netboot kernel and initrd:
/// `$BTY_E2E_MEDIA` if set (it must hold them), else `media/out` of this
/// checkout, built there with `media/build.sh` if absent (a release build of
/// the static agent plus Debian packages: minutes, once).
pub fn netboot_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("BTY_E2E_MEDIA").filter(|v| !v.is_empty()) {
        let d = PathBuf::from(d);
        if !has_media(&d) {
            bail!(
                "BTY_E2E_MEDIA={} holds no {KERNEL} and {INITRD}; build them with media/build.sh --out DIR",
                d.display()
            );
        }
        return Ok(d);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = repo.join("media/out");
    let _lock = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if has_media(&out) {
        return Ok(out);
    }
    eprintln!(
        "bty-e2e: building the netboot environment with media/build.sh (once; set BTY_E2E_MEDIA to reuse a build)"
    );
    let status = Command::new("bash")
        .arg(repo.join("media/build.sh"))
        .arg("--out")
        .arg(&out)
        .status()
        .context("running media/build.sh")?;
    if !status.success() || !has_media(&out) {
        bail!("media/build.sh failed ({status}); see its output above");
    }
    Ok(out)
}

/// Copy the netboot kernel and initrd into `boot_dir`.
pub fn install(boot_dir: &Path) -> anyhow::Result<()> {
    install_from(&netboot_dir()?, boot_dir)
}

/// Copy the netboot kernel and initrd from `src` into `boot_dir`.
pub fn install_from(src: &Path, boot_dir: &Path) -> anyhow::Result<()> {
    for f in [KERNEL, INITRD] {
        std::fs::copy(src.join(f), boot_dir.join(f))
            .with_context(|| format!("copying {} into {}", f, boot_dir.display()))?;
    }
    Ok(())
}
