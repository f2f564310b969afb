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

/// The directory holding the netboot kernel and initrd: `$BTY_E2E_MEDIA`
/// if set (it must hold them), else `target/e2e-media` of this checkout,
/// filled by `lab media build --out` (the media of that very bty-lab
/// binary, so the agent the VMs run is the binary under test; Debian
/// packages through apt on the first run, then bty-lab's cache answers in
/// seconds).
pub fn netboot_dir(lab: &Path) -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("BTY_E2E_MEDIA").filter(|v| !v.is_empty()) {
        let d = PathBuf::from(d);
        if !has_media(&d) {
            bail!(
                "BTY_E2E_MEDIA={} holds no {KERNEL} and {INITRD}; build them with `bty-lab media build --out DIR`",
                d.display()
            );
        }
        return Ok(d);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e-media");
    let _lock = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "bty-e2e: netboot media from `{} media build --out {}` (set BTY_E2E_MEDIA to use others)",
        lab.display(),
        out.display()
    );
    let status = Command::new(lab)
        .args(["media", "build", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {} media build", lab.display()))?;
    if !status.success() || !has_media(&out) {
        bail!(
            "{} media build failed ({status}); see its output above",
            lab.display()
        );
    }
    Ok(out)
}

/// Copy the netboot kernel and initrd from `src` into `boot_dir`.
pub fn install_from(src: &Path, boot_dir: &Path) -> anyhow::Result<()> {
    for f in [KERNEL, INITRD] {
        std::fs::copy(src.join(f), boot_dir.join(f))
            .with_context(|| format!("copying {} into {}", f, boot_dir.display()))?;
    }
    Ok(())
}
