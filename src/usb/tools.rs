//! The host programs and files a stick build drives. The FAT, ext4 and
//! GPT work is done by Debian's own tools on plain files (no mount, no
//! loop device, no root): they are the reference implementations, and the
//! boot loaders ship only with them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// A program on PATH, with the Debian package that ships it.
const PROGRAMS: &[(&str, &str)] = &[
    ("sfdisk", "fdisk"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("syslinux", "syslinux"),
    ("mke2fs", "e2fsprogs"),
];

/// syslinux's MBR boot code for GPT disks: it loads the VBR of the
/// partition with the legacy-BIOS-bootable attribute.
pub const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
/// systemd-boot for x86-64 UEFI.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

const FILES: &[(&str, &str)] = &[
    (GPTMBR, "syslinux-common"),
    (SYSTEMD_BOOT, "systemd-boot-efi"),
];

/// Every program and file the build needs, in the order [`PROGRAMS`] and
/// [`FILES`] list them: (what, package).
pub fn missing() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (prog, pkg) in PROGRAMS {
        if find(prog).is_none() {
            out.push((prog.to_string(), *pkg));
        }
    }
    for (file, pkg) in FILES {
        if !Path::new(file).is_file() {
            out.push((file.to_string(), *pkg));
        }
    }
    out
}

/// Refuse to start when a tool is missing, naming all of them and the
/// apt-get line that installs them.
pub fn require() -> Result<()> {
    match refusal(&missing()) {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

/// What [`require`] says about `m` (none missing: nothing).
fn refusal(m: &[(String, &str)]) -> Option<String> {
    if m.is_empty() {
        return None;
    }
    let what: Vec<String> = m.iter().map(|(w, p)| format!("{w} ({p})")).collect();
    let mut pkgs: Vec<&str> = m.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    Some(format!(
        "building a USB stick needs {}; install with: apt-get install -y {}",
        what.join(", "),
        pkgs.join(" ")
    ))
}

/// `prog` on PATH, else in the sbin dirs (mkfs.fat and sfdisk live there
/// and a non-root PATH may lack them).
pub fn find(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Run `prog args...`; an error carries its stderr.
pub fn run(prog: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    run_with_stdin(prog, args, None)
}

/// Like [`run`], feeding `stdin`.
pub fn run_with_stdin(prog: &str, args: &[&std::ffi::OsStr], stdin: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let path = find(prog).with_context(|| format!("{prog} is not installed"))?;
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // mtools refuses images whose geometry it finds odd unless told.
        .env("MTOOLS_SKIP_CHECK", "1");
    let shown = format!(
        "{prog} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .with_context(|| format!("feeding {prog}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        assert_eq!(refusal(&[]), None);
        let m = vec![
            ("mcopy".to_string(), "mtools"),
            ("mmd".to_string(), "mtools"),
            (GPTMBR.to_string(), "syslinux-common"),
        ];
        assert_eq!(
            refusal(&m).unwrap(),
            "building a USB stick needs mcopy (mtools), mmd (mtools), \
             /usr/lib/syslinux/mbr/gptmbr.bin (syslinux-common); \
             install with: apt-get install -y mtools syslinux-common"
        );
    }
}
