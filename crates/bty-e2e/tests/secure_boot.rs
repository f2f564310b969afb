//! Issue 14: the Secure Boot disk image on its own. The flash tests
//! (`tests/flash.rs`: `readme_serve_secure_boot_flashes_through_the_signed_chain`,
//! `uefi_secure_boot_flash_always_three_cycles`) write this image to a
//! machine with Secure Boot on and wait for its marker after the flash;
//! this test proves the image itself boots under Secure Boot, with no
//! network and no bty service, so a failure there is the flash's or the
//! chain's, not the image's.

use std::time::Duration;

use bty_e2e::disk::{secure_boot_image, AfterMarker};
use bty_e2e::vm::{Disk, Firmware, StickConfig, Vm};

/// OVMF's Secure Boot build with Microsoft's keys, no NIC, the image as
/// its only disk: the firmware verifies the disk's shim (Microsoft's
/// signature), shim verifies GRUB (Debian's), GRUB prints the marker and
/// powers off. Nothing unsigned is on the disk, so the marker proves the
/// signed chain ran under Secure Boot.
#[test]
fn secure_boot_disk_image_boots_shim_then_grub() {
    let test = "secure_boot_disk_image_boots_shim_then_grub";
    let Some(_gate) = bty_e2e::gate(test) else {
        return;
    };
    let tools = ["sfdisk", "mkfs.fat", "mmd", "mcopy"];
    let files = [
        bty_e2e::disk::SIGNED_SHIM,
        bty_e2e::disk::SIGNED_GRUB,
        bty_e2e::vm::OVMF_CODE_SECBOOT,
        bty_e2e::vm::OVMF_VARS_MS,
    ];
    let missing = tools
        .iter()
        .find(|t| !bty_e2e::on_path(t))
        .or_else(|| files.iter().find(|f| !std::path::Path::new(f).exists()));
    if let Some(m) = missing {
        if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: BTY_REQUIRE_TOOLS=1 but {m} is missing (packages fdisk, dosfstools, mtools, shim-signed, grub-efi-amd64-signed, ovmf)");
        }
        eprintln!("skipping: {m} not installed ({test})");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = "BTY-E2E-SB-DISK-BOOTED";
    let image = secure_boot_image(marker, AfterMarker::Halt, 8 << 20, dir.path())
        .expect("building the Secure Boot disk image");
    assert_eq!(image.len(), 8 << 20);
    let path = dir.path().join("disk.img");
    std::fs::write(&path, &image).expect("writing the image");
    // The image as flashed: on a larger disk (the backup GPT is then not
    // at the disk's end, as on a real target).
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(16 << 20))
        .expect("growing the disk");
    let mut vm = Vm::start_stick(
        dir.path(),
        &StickConfig {
            firmware: Firmware::UefiSecureBoot,
            stick: None,
            disks: vec![Disk {
                path: path.clone(),
                serial: "BTYSB".into(),
            }],
            memory_mb: 256,
            no_reboot: true,
            lan: None,
        },
    )
    .expect("starting qemu");
    vm.expect(marker, Duration::from_secs(120));
    let booted = vm.elapsed();
    let text = vm.serial();
    // GRUB (not the firmware's fallback) printed it: Secure Boot refuses
    // anything unsigned, and this GRUB runs only when shim verified it.
    if text.contains("Access Denied") || text.contains("Security Violation") {
        panic!(
            "{}",
            vm.report("the firmware refused something on the disk")
        );
    }
    vm.expect_exit(Duration::from_secs(60));
    println!(
        "bty-e2e timing: Secure Boot disk image, accel tcg: power-on -> marker {:.1} s",
        booted.as_secs_f64()
    );
    // The firmware wrote nothing to the disk (no GPT repair): a flashed
    // disk stays byte for byte the image.
    let after = std::fs::read(&path).expect("reading the disk");
    assert!(
        after[..image.len()] == image[..],
        "the firmware changed the disk"
    );
}
