//! The one ELF fact bty-lab needs: does an executable ask for a dynamic
//! loader? A FROM scratch image and the netboot initramfs have none, so
//! only a static binary can go into either.

use anyhow::{bail, Result};

/// Does the ELF file ask for a dynamic loader (PT_INTERP)? A FROM scratch
/// image has no loader, so such a binary cannot start there. Parsed by hand:
/// it is 20 lines and the only ELF fact we need.
pub fn is_dynamic(bytes: &[u8]) -> Result<bool> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        bail!("not a 64-bit little-endian ELF executable");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(t) = bytes.get(o..o + 4) else {
            bail!("truncated program header")
        };
        if u32::from_le_bytes(t.try_into().unwrap()) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interp_detection() {
        // /bin/sh on Debian is dynamic.
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(is_dynamic(&sh).unwrap());
        assert!(is_dynamic(b"not an elf").is_err());
        // A minimal static ELF: one PT_LOAD program header, no PT_INTERP.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(!is_dynamic(&elf).unwrap());
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(is_dynamic(&elf).unwrap());
    }
}
