//! Issue 13: the USB stick `bty-lab usb build` writes boots on both
//! firmwares. A VM with no network gets the stick as USB mass storage on
//! xHCI (bootindex 0); SeaBIOS (gptmbr.bin → syslinux) and OVMF
//! (`\EFI\BOOT\BOOTX64.EFI` = systemd-boot) each must reach the netboot
//! kernel with `bty.mode=wizard` on its command line and the initramfs's
//! /init. What the wizard does then is tested with the wizard.
//!
//! The stick carries the real netboot media (`$BTY_E2E_MEDIA`, else built
//! by the bty-lab under test) and one small image.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bty_e2e::vm::{Firmware, Vm};

/// The usb build's own tools, with their packages.
const STICK_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/sfdisk", "fdisk"),
    ("/usr/sbin/mkfs.fat", "dosfstools"),
    ("/usr/bin/mcopy", "mtools"),
    ("/usr/bin/syslinux", "syslinux"),
    ("/usr/sbin/mke2fs", "e2fsprogs"),
    ("/usr/lib/syslinux/mbr/gptmbr.bin", "syslinux-common"),
    (
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "systemd-boot-efi",
    ),
];

fn stick_tools(test: &str) -> bool {
    let Some((what, pkg)) = STICK_TOOLS.iter().find(|(p, _)| !Path::new(p).exists()) else {
        return true;
    };
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: BTY_REQUIRE_TOOLS=1 but {what} ({pkg}) is missing");
    }
    eprintln!("skipping: {what} ({pkg}) not installed ({test})");
    false
}

/// Build a stick with the bty-lab under test; its path.
fn build_stick(lab: &Path, dir: &Path) -> std::path::PathBuf {
    let media = bty_e2e::media::netboot_dir(lab).expect("the netboot media");
    let image = dir.join("tiny.img");
    std::fs::write(&image, vec![0x5au8; 1 << 20]).unwrap();
    let stick = dir.join("stick.img");
    let out = Command::new(lab)
        .args(["usb", "build", "--out"])
        .arg(&stick)
        .arg("--netboot")
        .arg(&media)
        .arg("--image")
        .arg(format!("tiny={}", image.display()))
        .output()
        .expect("running bty-lab usb build");
    assert!(
        out.status.success(),
        "usb build failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stick
}

/// Boot `stick` (a copy: a guest may write to its disk) with `firmware`;
/// the seconds from qemu's start to the initramfs's first line.
fn boots_to_the_initramfs(dir: &Path, stick: &Path, firmware: Firmware) -> f64 {
    let copy = dir.join(format!("stick-{firmware:?}.img"));
    std::fs::copy(stick, &copy).unwrap();
    let mut vm = Vm::start_stick(dir, firmware, &copy, 512).expect("starting qemu");
    let started = Instant::now();
    // The kernel prints its command line first thing; under TCG the whole
    // way (firmware, loader, ~24 MiB read over emulated USB, kernel) takes
    // tens of seconds: the deadlines leave room for a loaded CI machine.
    vm.expect("Command line:", Duration::from_secs(240));
    vm.expect("bty.mode=wizard", Duration::from_secs(5));
    vm.expect("bty-netboot: init", Duration::from_secs(240));
    let secs = started.elapsed().as_secs_f64();
    let serial = vm.serial();
    let line = serial
        .lines()
        .find(|l| l.contains("Command line:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("console=ttyS0,115200n8"),
        "{}",
        vm.report(&format!(
            "the command line lacks the serial console: {line}"
        ))
    );
    // Which way it came: syslinux (its banner on COM1, BOOT_IMAGE= on
    // the command line) or OVMF's boot manager starting the USB disk's
    // removable-media loader, systemd-boot (the kernel's EFI stub).
    let (marks, via): (&[&str], _) = match firmware {
        Firmware::Bios => (&["SYSLINUX 6", "BOOT_IMAGE=/bty/vmlinuz"], "syslinux"),
        _ => (
            &["BdsDxe: starting", "USB HARDDRIVE", "EFI stub:"],
            "OVMF and systemd-boot",
        ),
    };
    for m in marks {
        assert!(
            serial.contains(m),
            "{}",
            vm.report(&format!(
                "booted, but not via {via}: no {m:?} on the console"
            ))
        );
    }
    vm.kill();
    eprintln!("usb stick, {firmware:?}: the initramfs's /init after {secs:.1} s (TCG)");
    secs
}

#[test]
fn usb_stick_boots_on_seabios_and_ovmf_into_the_wizard_kernel() {
    const TEST: &str = "usb_stick_boots_on_seabios_and_ovmf_into_the_wizard_kernel";
    let Some(_gate) = bty_e2e::gate(TEST) else {
        return;
    };
    if !stick_tools(TEST) {
        return;
    }
    let Some(lab) = bty_e2e::lab_bin(TEST) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("bty-usb-e2e")
        .tempdir()
        .unwrap();
    let stick = build_stick(&lab, dir.path());
    let bios = boots_to_the_initramfs(dir.path(), &stick, Firmware::Bios);
    let uefi = boots_to_the_initramfs(dir.path(), &stick, Firmware::UefiDisk);
    eprintln!("usb stick boot to initramfs under TCG: SeaBIOS {bios:.1} s, OVMF {uefi:.1} s");
}
