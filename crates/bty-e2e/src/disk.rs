//! Small bootable test images, built by the test (no binaries committed).
//!
//! [`mbr_image`] is a raw disk whose first sector is a BIOS boot sector,
//! assembled here by hand, that writes a marker line to COM1 (port 0x3f8,
//! which qemu's `-serial file:` records; qemu's UART needs no setup for
//! writes) and halts. It is the fastest "the flashed disk boots" proof: the
//! bytes come from the flash, SeaBIOS (via iPXE's `sanboot`) executes them.
//! The rest of the image is a deterministic mix of dense and all-zero
//! blocks, so the agent's zero-skipping and the read-back digest are both
//! exercised.

use sha2::{Digest, Sha256};

/// The boot sector's code (16-bit real mode, loaded at 0x7c00):
///
/// ```text
/// 7c00  fa           cli
/// 7c01  31 c0        xor  ax, ax
/// 7c03  8e d8        mov  ds, ax
/// 7c05  be 1b 7c     mov  si, msg        ; 0x7c1b
/// 7c08  ba f8 03     mov  dx, 0x3f8      ; COM1 data
/// 7c0b  fc           cld
/// 7c0c  ac     next: lodsb
/// 7c0d  84 c0        test al, al
/// 7c0f  74 03        jz   done
/// 7c11  ee           out  dx, al
/// 7c12  eb f8        jmp  next
/// 7c14  b0 fe  done: mov  al, 0xfe       ; 8042 "pulse reset line"
/// 7c16  e6 64        out  0x64, al       ; (the halting variant: nop nop nop nop)
/// 7c18  f4     stop: hlt
/// 7c19  eb fd        jmp  stop
/// 7c1b         msg:  "\r\n<marker>\r\n", 0
/// ```
///
/// The rebooting variant lets a flash-always machine go round its cycle
/// (PXE, flash, reboot, PXE, disk, reboot, ...) in one qemu run.
const CODE_HEAD: &[u8] = &[
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0xbe, 0x1b, 0x7c, 0xba, 0xf8, 0x03, 0xfc, 0xac, 0x84, 0xc0, 0x74,
    0x03, 0xee, 0xeb, 0xf8,
];
const CODE_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64];
const CODE_NO_RESET: &[u8] = &[0x90, 0x90, 0x90, 0x90];
const CODE_TAIL: &[u8] = &[0xf4, 0xeb, 0xfd];

/// After printing its marker, the boot sector...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMarker {
    /// ...halts.
    Halt,
    /// ...resets the machine through the keyboard controller.
    Reboot,
}

/// A 512-byte BIOS boot sector printing `marker` on COM1.
pub fn boot_sector(marker: &str, after: AfterMarker) -> [u8; 512] {
    let code: Vec<u8> = [
        CODE_HEAD,
        match after {
            AfterMarker::Halt => CODE_NO_RESET,
            AfterMarker::Reboot => CODE_RESET,
        },
        CODE_TAIL,
    ]
    .concat();
    assert_eq!(code.len(), 0x1b);
    let msg = format!("\r\n{marker}\r\n");
    assert!(
        marker.is_ascii() && !marker.contains('\0') && code.len() + msg.len() < 440,
        "marker must be short ASCII"
    );
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[code.len()..code.len() + msg.len()].copy_from_slice(msg.as_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A raw image of `size` bytes (a multiple of 64 KiB, at least 2 MiB)
/// that boots to `marker`: the boot sector, then blocks alternating
/// between pseudo-random bytes (seeded by `marker`) and zeroes.
pub fn mbr_image(marker: &str, after: AfterMarker, size: usize) -> Vec<u8> {
    assert!(size >= 2 << 20 && size % (64 << 10) == 0);
    let mut img = vec![0u8; size];
    img[..512].copy_from_slice(&boot_sector(marker, after));
    // xorshift: deterministic filler, different per marker.
    let mut x: u64 = Sha256::digest(marker.as_bytes())[..8]
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15, |a, b| {
            (a << 8) ^ u64::from(*b) ^ (a >> 56)
        });
    for (i, block) in img.chunks_mut(64 << 10).enumerate() {
        // Keep block 0 (boot sector) and every third block all zero.
        if i == 0 || i % 3 == 2 {
            continue;
        }
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    img
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A minimal x86-64 EFI application (PE32+, one section, no relocations:
/// the code is position-independent) that prints `marker` with
/// `ConOut->OutputString` (OVMF mirrors ConOut on the serial port) and
/// then resets the machine with `RuntimeServices->ResetSystem(EfiResetCold)`
/// or spins.
///
/// ```text
/// 00  48 83 ec 28           sub  rsp, 0x28          ; shadow space, 16-byte aligned
/// 04  48 89 d3              mov  rbx, rdx           ; EFI_SYSTEM_TABLE*
/// 07  48 8b 4b 40           mov  rcx, [rbx+0x40]    ; ->ConOut
/// 0b  48 8d 15 16 00 00 00  lea  rdx, [rip+0x16]    ; msg (UTF-16)
/// 12  ff 51 08              call [rcx+0x08]         ; ->OutputString(ConOut, msg)
/// 15  48 8b 43 58           mov  rax, [rbx+0x58]    ; ->RuntimeServices
/// 19  31 c9                 xor  ecx, ecx           ; EfiResetCold
/// 1b  31 d2                 xor  edx, edx           ; EFI_SUCCESS
/// 1d  45 31 c0              xor  r8d, r8d
/// 20  45 31 c9              xor  r9d, r9d
/// 23  ff 50 68              call [rax+0x68]         ; ->ResetSystem
/// 26  eb fe                 jmp  $
/// 28  msg: L"\r\n<marker>\r\n\0"
/// ```
/// (the halting variant has NOPs from 0x15 to 0x25).
pub fn efi_app(marker: &str, after: AfterMarker) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0x48, 0x83, 0xec, 0x28, 0x48, 0x89, 0xd3, 0x48, 0x8b, 0x4b, 0x40, 0x48, 0x8d, 0x15, 0x16,
        0x00, 0x00, 0x00, 0xff, 0x51, 0x08,
    ];
    let reset: &[u8] = &[
        0x48, 0x8b, 0x43, 0x58, 0x31, 0xc9, 0x31, 0xd2, 0x45, 0x31, 0xc0, 0x45, 0x31, 0xc9, 0xff,
        0x50, 0x68,
    ];
    match after {
        AfterMarker::Reboot => code.extend_from_slice(reset),
        AfterMarker::Halt => code.extend(std::iter::repeat_n(0x90, reset.len())),
    }
    code.extend_from_slice(&[0xeb, 0xfe]);
    assert_eq!(code.len(), 0x28);
    for u in format!("\r\n{marker}\r\n").encode_utf16().chain([0]) {
        code.extend_from_slice(&u.to_le_bytes());
    }
    assert!(code.len() <= 0x200, "marker too long");
    code.resize(0x200, 0);

    let mut pe = vec![0u8; 0x200];
    let put = |pe: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        pe[off..off + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut pe, 0, b"MZ");
    put(&mut pe, 0x3c, &0x40u32.to_le_bytes()); // e_lfanew
    put(&mut pe, 0x40, b"PE\0\0");
    // COFF header
    put(&mut pe, 0x44, &0x8664u16.to_le_bytes()); // Machine: x86-64
    put(&mut pe, 0x46, &1u16.to_le_bytes()); // NumberOfSections
    put(&mut pe, 0x54, &240u16.to_le_bytes()); // SizeOfOptionalHeader
    put(&mut pe, 0x56, &0x0022u16.to_le_bytes()); // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE
                                                  // Optional header (PE32+)
    let o = 0x58;
    put(&mut pe, o, &0x20bu16.to_le_bytes()); // Magic
    put(&mut pe, o + 4, &0x200u32.to_le_bytes()); // SizeOfCode
    put(&mut pe, o + 16, &0x1000u32.to_le_bytes()); // AddressOfEntryPoint
    put(&mut pe, o + 20, &0x1000u32.to_le_bytes()); // BaseOfCode
    put(&mut pe, o + 24, &0x40_0000u64.to_le_bytes()); // ImageBase
    put(&mut pe, o + 32, &0x1000u32.to_le_bytes()); // SectionAlignment
    put(&mut pe, o + 36, &0x200u32.to_le_bytes()); // FileAlignment
    put(&mut pe, o + 56, &0x2000u32.to_le_bytes()); // SizeOfImage
    put(&mut pe, o + 60, &0x200u32.to_le_bytes()); // SizeOfHeaders
    put(&mut pe, o + 68, &10u16.to_le_bytes()); // Subsystem: EFI application
    put(&mut pe, o + 108, &16u32.to_le_bytes()); // NumberOfRvaAndSizes (all empty)
                                                 // Section header
    let s = o + 240;
    put(&mut pe, s, b".text\0\0\0");
    put(&mut pe, s + 8, &0x200u32.to_le_bytes()); // VirtualSize
    put(&mut pe, s + 12, &0x1000u32.to_le_bytes()); // VirtualAddress
    put(&mut pe, s + 16, &0x200u32.to_le_bytes()); // SizeOfRawData
    put(&mut pe, s + 20, &0x200u32.to_le_bytes()); // PointerToRawData
    put(&mut pe, s + 36, &0x6000_0020u32.to_le_bytes()); // CODE | EXECUTE | READ
    pe.extend_from_slice(&code);
    pe
}

/// A UEFI-bootable raw disk image of `size` bytes: an MBR partition table
/// with one EFI System Partition (type 0xEF) from 1 MiB to the end, FAT
/// formatted (`mkfs.fat`, package dosfstools) holding
/// `\EFI\BOOT\BOOTX64.EFI` = [`efi_app`] (copied in with mtools' `mmd` and
/// `mcopy`, so nothing is mounted).
pub fn uefi_image(
    marker: &str,
    after: AfterMarker,
    size: usize,
    tmp: &std::path::Path,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::{bail, Context};
    assert!(size >= 4 << 20 && size % (1 << 20) == 0);
    let fs = tmp.join("esp.fat");
    let app = tmp.join("BOOTX64.EFI");
    std::fs::write(&app, efi_app(marker, after))?;
    let _ = std::fs::remove_file(&fs);
    let part = size - (1 << 20);
    let run = |cmd: &mut std::process::Command| -> anyhow::Result<()> {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(std::process::Command::new("mkfs.fat")
        .args(["-C", "-n", "BTYE2E"])
        .arg(&fs)
        .arg((part / 1024).to_string()))?;
    let img = format!("{}", fs.display());
    run(std::process::Command::new("mmd").args(["-i", &img, "::/EFI", "::/EFI/BOOT"]))?;
    run(std::process::Command::new("mcopy")
        .args(["-i", &img])
        .arg(&app)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    let fat = std::fs::read(&fs)?;
    if fat.len() != part {
        bail!("mkfs.fat made {} bytes, expected {part}", fat.len());
    }
    let mut disk = vec![0u8; 1 << 20];
    // One partition entry at 0x1be: not active, CHS "beyond 1024", type
    // 0xEF (EFI System Partition), LBA 2048, the rest of the disk.
    let e = 0x1be;
    disk[e + 1..e + 4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    disk[e + 4] = 0xef;
    disk[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    disk[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
    disk[e + 12..e + 16].copy_from_slice(&((part / 512) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(&fat);
    Ok(disk)
}

/// Debian's Microsoft-signed shim (package shim-signed).
pub const SIGNED_SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// Debian's signed GRUB for disks (package grub-efi-amd64-signed; not the
/// network build): shim's second stage from the disk's `\EFI\BOOT`.
pub const SIGNED_GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

/// What a disk boots under Secure Boot with nothing unsigned: a raw image
/// of `size` bytes (at least 8 MiB, whole MiB) with a GPT (`sfdisk`) and
/// one EFI System Partition from 1 MiB to 1 MiB before the end (the
/// backup GPT lives in the last MiB), FAT formatted (`mkfs.fat`), filled
/// with mtools (nothing is mounted):
///
/// - `\EFI\BOOT\BOOTX64.EFI` = [`SIGNED_SHIM`] (the firmware checks it
///   against Microsoft's key),
/// - `\EFI\BOOT\grubx64.efi` = [`SIGNED_GRUB`] (shim checks it against
///   Debian's key, built into shim),
/// - `grub.cfg` in `\EFI\debian` (that GRUB's built-in `$prefix`, seen as
///   `(hd0,gpt1)/EFI/debian` in the spike) and `\EFI\BOOT` (its
///   `$cmdpath`, which its built-in config falls back to), which prints
///   `marker` and then reboots or powers off.
///
/// So the marker on the console means the firmware ran the disk's signed
/// chain: under Secure Boot nothing unsigned ran from the disk.
pub fn secure_boot_image(
    marker: &str,
    after: AfterMarker,
    size: usize,
    tmp: &std::path::Path,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::{bail, Context};
    assert!(size >= 8 << 20 && size % (1 << 20) == 0);
    assert!(
        marker.is_ascii() && !marker.contains(['"', '$', '\\', '\n']),
        "marker must be plain ASCII for GRUB's echo"
    );
    let run = |cmd: &mut std::process::Command| -> anyhow::Result<Vec<u8>> {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    let part = size - (2 << 20);
    let disk_path = tmp.join("sb-disk.img");
    let fs = tmp.join("sb-esp.fat");
    for f in [&disk_path, &fs] {
        let _ = std::fs::remove_file(f);
    }
    std::fs::File::create(&disk_path)
        .and_then(|f| f.set_len(size as u64))
        .with_context(|| format!("creating {}", disk_path.display()))?;
    let mut sfdisk = std::process::Command::new("sfdisk");
    sfdisk
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&disk_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().context("running sfdisk (package fdisk)")?;
    {
        use std::io::Write as _;
        let script = format!(
            "label: gpt\nstart=2048, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP\n",
            part / 512
        );
        child
            .stdin
            .take()
            .context("sfdisk's stdin")?
            .write_all(script.as_bytes())
            .context("writing sfdisk's script")?;
    }
    let out = child.wait_with_output().context("waiting for sfdisk")?;
    if !out.status.success() {
        bail!("sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    run(std::process::Command::new("mkfs.fat")
        .args(["-C", "-n", "BTYSBESP"])
        .arg(&fs)
        .arg((part / 1024).to_string()))?;
    let cfg = tmp.join("sb-grub.cfg");
    let end = match after {
        AfterMarker::Reboot => "reboot",
        AfterMarker::Halt => "halt",
    };
    std::fs::write(&cfg, format!("echo \"{marker}\"\nsleep 1\n{end}\n"))?;
    let img = fs.display().to_string();
    run(std::process::Command::new("mmd").args([
        "-i",
        &img,
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/debian",
    ]))?;
    for (from, to) in [
        (std::path::Path::new(SIGNED_SHIM), "::/EFI/BOOT/BOOTX64.EFI"),
        (std::path::Path::new(SIGNED_GRUB), "::/EFI/BOOT/grubx64.efi"),
        (cfg.as_path(), "::/EFI/BOOT/grub.cfg"),
        (cfg.as_path(), "::/EFI/debian/grub.cfg"),
    ] {
        run(std::process::Command::new("mcopy")
            .args(["-i", &img])
            .arg(from)
            .arg(to))?;
    }
    let fat = std::fs::read(&fs)?;
    if fat.len() != part {
        bail!("mkfs.fat made {} bytes, expected {part}", fat.len());
    }
    let mut disk = std::fs::read(&disk_path)?;
    disk[1 << 20..(1 << 20) + part].copy_from_slice(&fat);
    Ok(disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_layout() {
        for after in [AfterMarker::Halt, AfterMarker::Reboot] {
            let s = boot_sector("HELLO", after);
            assert_eq!(&s[510..], &[0x55, 0xaa]);
            // `mov si, msg` points at the message.
            let msg = u16::from_le_bytes([s[6], s[7]]) - 0x7c00;
            assert_eq!(&s[msg as usize..msg as usize + 9], b"\r\nHELLO\r\n");
            assert_eq!(s[msg as usize + 9], 0);
        }
        let img = mbr_image("X", AfterMarker::Halt, 2 << 20);
        assert_eq!(img.len(), 2 << 20);
        assert!(img[64 << 10..128 << 10].iter().any(|b| *b != 0));
        assert!(img[128 << 10..192 << 10].iter().all(|b| *b == 0));
    }
}
