//! The EFI system partition, built as a FAT32 file of its own (then copied
//! to its offset in the stick): the kernel and initrd under `/bty`,
//! systemd-boot as the removable-media loader `/EFI/BOOT/BOOTX64.EFI` for
//! UEFI, and syslinux (its VBR and `ldlinux.sys` installed by the
//! mtools-based `syslinux --install`, which works on a file) for BIOS.
//! Both loaders start the same kernel with the same command line.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::tools;

/// The kernel command line of both loaders: the wizard, on the screen and
/// on the first serial port (the last `console=` is /dev/console, where
/// the initramfs logs).
pub fn cmdline() -> String {
    format!(
        "{} console=tty0 console=ttyS0,115200n8",
        bty_proto::stick::MODE_ARG
    )
}

/// The kernel's path in the ESP.
pub const KERNEL: &str = "/bty/vmlinuz";
/// The initrd's path in the ESP.
pub const INITRD: &str = "/bty/initrd";

/// syslinux.cfg: boot at once, mirror syslinux's own output to COM1.
pub fn syslinux_cfg() -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT bty\nPROMPT 0\nTIMEOUT 0\n\n\
         LABEL bty\n  LINUX {KERNEL}\n  INITRD {INITRD}\n  APPEND {}\n",
        cmdline()
    )
}

/// systemd-boot's loader.conf: the one entry, no menu (holding a key
/// shows it), no editor.
pub fn loader_conf() -> String {
    "default bty.conf\ntimeout 0\neditor no\n".to_string()
}

/// systemd-boot's entry (Boot Loader Specification type 1).
pub fn entry_conf() -> String {
    format!(
        "title bty (USB stick)\nlinux {KERNEL}\ninitrd {INITRD}\noptions {}\n",
        cmdline()
    )
}

/// Bytes the ESP must hold besides the loaders' small files.
pub fn content_bytes(kernel: &Path, initrd: &Path) -> Result<u64> {
    let mut n = 0;
    for p in [kernel, initrd, Path::new(tools::SYSTEMD_BOOT)] {
        n += std::fs::metadata(p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
    }
    // ldlinux.sys + ldlinux.c32 and the config files.
    Ok(n + (1 << 20))
}

/// Write the ESP as a FAT32 file system of `size` bytes into `esp` (a new
/// file), with both loaders, `kernel` and `initrd`.
pub fn build_esp(esp: &Path, size: u64, kernel: &Path, initrd: &Path, work: &Path) -> Result<()> {
    let kib = (size / 1024).to_string();
    let esp_os = esp.as_os_str();
    tools::run(
        "mkfs.fat",
        &[
            OsStr::new("-C"),
            OsStr::new("-F"),
            OsStr::new("32"),
            OsStr::new("-S"),
            OsStr::new("512"),
            OsStr::new("-s"),
            OsStr::new("1"),
            OsStr::new("-n"),
            OsStr::new(bty_proto::stick::ESP_LABEL),
            esp_os,
            OsStr::new(&kib),
        ],
    )
    .context("making the ESP's FAT file system")?;
    let img = |p: &str| format!("::{p}");
    for dir in [
        "/bty",
        "/syslinux",
        "/EFI",
        "/EFI/BOOT",
        "/loader",
        "/loader/entries",
    ] {
        tools::run("mmd", &[OsStr::new("-i"), esp_os, OsStr::new(&img(dir))])
            .with_context(|| format!("making {dir} in the ESP"))?;
    }
    tools::run(
        "syslinux",
        &[
            OsStr::new("--install"),
            OsStr::new("--directory"),
            OsStr::new("/syslinux"),
            esp_os,
        ],
    )
    .context("installing syslinux into the ESP")?;
    let cfgs = [
        ("syslinux.cfg", syslinux_cfg(), "/syslinux/syslinux.cfg"),
        ("loader.conf", loader_conf(), "/loader/loader.conf"),
        ("bty.conf", entry_conf(), "/loader/entries/bty.conf"),
    ];
    let mut files: Vec<(std::path::PathBuf, &str)> = vec![
        (kernel.to_path_buf(), KERNEL),
        (initrd.to_path_buf(), INITRD),
        (tools::SYSTEMD_BOOT.into(), "/EFI/BOOT/BOOTX64.EFI"),
    ];
    for (name, text, to) in &cfgs {
        let p = work.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        files.push((p, to));
    }
    for (from, to) in &files {
        tools::run(
            "mcopy",
            &[
                OsStr::new("-i"),
                esp_os,
                from.as_os_str(),
                OsStr::new(&img(to)),
            ],
        )
        .with_context(|| format!("copying {} to {to} in the ESP", from.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_loaders_boot_the_same_kernel_in_wizard_mode() {
        let want = "bty.mode=wizard console=tty0 console=ttyS0,115200n8";
        assert_eq!(cmdline(), want);
        let sys = syslinux_cfg();
        assert!(sys.contains(&format!("APPEND {want}\n")), "{sys}");
        assert!(sys.contains("LINUX /bty/vmlinuz") && sys.contains("INITRD /bty/initrd"));
        let e = entry_conf();
        assert!(e.contains(&format!("options {want}\n")), "{e}");
        assert!(e.contains("linux /bty/vmlinuz") && e.contains("initrd /bty/initrd"));
        assert!(loader_conf().contains("default bty.conf"));
    }
}
