//! The Secure Boot bootfiles: Debian's Microsoft-signed shim
//! (`shim-signed`: `usr/lib/shim/shimx64.efi.signed`) as `shimx64.efi`, the
//! file a UEFI machine's firmware fetches over PXE/TFTP, and Debian's signed
//! GRUB network image (`grub-efi-amd64-signed`:
//! `usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed`) as `grubx64.efi`,
//! the name shim fetches next (from the TFTP root, whatever the bootfile's
//! directory; docs/netboot-media.md, "Secure Boot bootfiles").
//!
//! Always out of the two .debs, never from the host's /usr/lib: the media
//! records each file's package version, and a host copy has none to give.

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::packages::Pkg;

/// Both, in the order the firmware fetches them.
pub use crate::stack::SIGNED_FILES as FILES;
/// The names in the media: shim (the UEFI bootfile) and GRUB (what shim
/// fetches after itself), as the boot chain's contract spells them.
pub use bty_proto::relay::{GRUB, SHIM};

/// Where each comes from in its package.
const SHIM_PATH: &str = "usr/lib/shim/shimx64.efi.signed";
const GRUB_PATH: &str = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";

/// One signed bootfile's origin, as `media.json` records it (its SHA-256
/// and size are in the manifest's `files`, like every file's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The name in the media (`shimx64.efi`).
    pub file: String,
    /// The Debian package (`shim-signed`).
    pub package: String,
    /// Its version (`1.51~1+deb12u1+16.1-2~deb12u1`).
    pub version: String,
    /// The file's path in the package.
    pub path: String,
}

/// A bootfile read out of its package and checked.
#[derive(Debug, Clone)]
pub struct Bootfile {
    pub origin: Origin,
    pub bytes: Vec<u8>,
}

/// shim out of `shim-signed` and GRUB out of `grub-efi-amd64-signed`, each
/// checked to be a signed x86-64 PE image.
pub fn read(shim: &Pkg, grub: &Pkg) -> Result<Vec<Bootfile>> {
    [(shim, SHIM, SHIM_PATH), (grub, GRUB, GRUB_PATH)]
        .into_iter()
        .map(|(pkg, file, path)| {
            let bytes = extract(pkg, path)?;
            check_signed_pe(&bytes).with_context(|| {
                format!(
                    "{}: {path} is not a signed UEFI binary",
                    pkg.deb.path.display()
                )
            })?;
            Ok(Bootfile {
                origin: Origin {
                    file: file.to_string(),
                    package: pkg.control.package.clone(),
                    version: pkg.control.version.clone(),
                    path: path.to_string(),
                },
                bytes,
            })
        })
        .collect()
}

fn extract(pkg: &Pkg, path: &str) -> Result<Vec<u8>> {
    pkg.deb.read_file(|p| p == path)?.with_context(|| {
        format!(
            "{}: the {} package has no {path}",
            pkg.deb.path.display(),
            pkg.control.package
        )
    })
}

/// Is `b` an x86-64 PE/COFF image carrying an Authenticode signature?
///
/// Hand-written (~30 lines) rather than a PE crate: it reads four header
/// fields and one data-directory entry (PE/COFF spec, "Optional Header
/// Data Directories", entry 4 = the attribute certificate table, whose
/// address is a file offset). It does not verify the signature — the
/// firmware and shim do that at boot, against keys this host does not
/// have — it catches the wrong file (an unsigned build, a renamed ELF, a
/// truncated download) before it is served as a Secure Boot bootfile.
pub fn check_signed_pe(b: &[u8]) -> Result<()> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if !b.starts_with(b"MZ") {
        bail!("no MZ header: not a PE image");
    }
    let pe = u32_at(0x3c).context("truncated DOS header")? as usize;
    if b.get(pe..pe + 4) != Some(b"PE\0\0".as_slice()) {
        bail!("no PE signature at offset {pe:#x}: not a PE image");
    }
    let machine = u16_at(pe + 4).context("truncated COFF header")?;
    if machine != 0x8664 {
        bail!("machine type {machine:#06x}, not x86-64 (0x8664)");
    }
    let opt = pe + 24;
    // PE32+ (0x20b): 16 data directories from offset 112 of the optional
    // header; PE32 (0x10b), which UEFI x86-64 never uses: refused.
    if u16_at(opt) != Some(0x20b) {
        bail!("not a PE32+ optional header");
    }
    let count = u32_at(opt + 108).context("truncated optional header")?;
    let (off, size) = match (count > 4, u32_at(opt + 112 + 32), u32_at(opt + 116 + 32)) {
        (true, Some(o), Some(s)) => (o as usize, s as usize),
        _ => bail!("no certificate table entry: unsigned"),
    };
    if size == 0 {
        bail!("the certificate table is empty: unsigned");
    }
    if off.checked_add(size).is_none_or(|end| end > b.len()) {
        bail!("the certificate table ({size} bytes at {off:#x}) runs past the end of the file");
    }
    // WIN_CERTIFICATE: dwLength, wRevision, wCertificateType (2 =
    // PKCS#7 SignedData, i.e. Authenticode).
    if u16_at(off + 6) != Some(2) {
        bail!("the certificate table holds no Authenticode (PKCS#7) signature");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ header, with a certificate table of `cert` bytes at
    /// the end of the file when `cert` is not empty.
    pub fn pe(cert: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        let opt = 0x80 + 24;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        if !cert.is_empty() {
            let off = b.len() as u32;
            b[opt + 144..opt + 148].copy_from_slice(&off.to_le_bytes());
            b[opt + 148..opt + 152].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            b.extend_from_slice(cert);
        }
        b
    }

    fn win_cert(kind: u16) -> Vec<u8> {
        let mut c = 16u32.to_le_bytes().to_vec();
        c.extend_from_slice(&0x0200u16.to_le_bytes());
        c.extend_from_slice(&kind.to_le_bytes());
        c.extend_from_slice(&[0x30; 8]);
        c
    }

    fn err(b: &[u8]) -> String {
        format!("{:#}", check_signed_pe(b).unwrap_err())
    }

    #[test]
    fn signed_and_unsigned_pe() {
        check_signed_pe(&pe(&win_cert(2))).unwrap();
        assert!(err(&pe(&[])).contains("unsigned"), "{}", err(&pe(&[])));
        assert!(err(&pe(&win_cert(1))).contains("no Authenticode"));
        let mut cut = pe(&win_cert(2));
        cut.truncate(cut.len() - 4);
        assert!(err(&cut).contains("runs past the end"), "{}", err(&cut));
        let mut arm = pe(&win_cert(2));
        arm[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        assert!(err(&arm).contains("not x86-64"));
        assert!(err(b"\x7fELF\x02\x01\x01").contains("no MZ header"));
        assert!(err(b"MZ").contains("truncated"));
        let mut no_pe = pe(&[]);
        no_pe[0x80] = b'X';
        assert!(err(&no_pe).contains("no PE signature"));
    }

    /// The real files: Debian's signed shim and GRUB pass; the unsigned
    /// iPXE build Debian ships (what Secure Boot refuses) does not.
    #[test]
    fn real_debian_binaries() {
        for (p, signed) in [
            ("/usr/lib/shim/shimx64.efi.signed", true),
            (
                "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
                true,
            ),
            ("/usr/lib/ipxe/ipxe.efi", false),
        ] {
            let b = std::fs::read(p)
                .unwrap_or_else(|e| panic!("{p}: {e} (scripts/setup.sh installs it)"));
            assert_eq!(check_signed_pe(&b).is_ok(), signed, "{p}");
        }
    }
}
