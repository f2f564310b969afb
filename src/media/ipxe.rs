//! The iPXE bootfiles (`ipxe.efi`, `snponly.efi`, `undionly.kpxe`): from
//! the host's `/usr/lib/ipxe` (Debian's `ipxe` package) when all three are
//! there, else out of the `ipxe` .deb, obtained like the kernel. Never
//! silently missing: without either, the build fails and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::deb::{Deb, Flow, Kind};
use crate::stack::IPXE_FILES;

/// Where Debian's `ipxe` package puts the bootfiles.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";

/// The three files and where they came from.
#[derive(Debug, Clone)]
pub struct Bootfiles {
    /// (name, bytes) in [`IPXE_FILES`] order.
    pub files: Vec<(String, Vec<u8>)>,
    /// For media.json: `host /usr/lib/ipxe` or `ipxe <version>`.
    pub source: String,
}

/// Where the host keeps them: `$BTY_IPXE_DIR` (a test seam, also useful
/// for a locally built iPXE) or /usr/lib/ipxe.
pub fn host_dir() -> PathBuf {
    std::env::var_os("BTY_IPXE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| IPXE_DIR.into())
}

/// All three from `dir` (following symlinks: Debian's ipxe.efi is a link
/// to /boot/ipxe.efi), or None if any is missing.
pub fn from_host(dir: &Path) -> Result<Option<Bootfiles>> {
    if !IPXE_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(None);
    }
    let mut files = Vec::new();
    for f in IPXE_FILES {
        let p = dir.join(f);
        files.push((
            f.to_string(),
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        ));
    }
    Ok(Some(Bootfiles {
        files,
        source: format!("host {}", dir.display()),
    }))
}

/// All three out of the `ipxe` package (`usr/lib/ipxe/<name>`, through
/// the package's own symlinks).
pub fn from_deb(deb: &Deb, version: &str) -> Result<Bootfiles> {
    let mut regular: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let wanted = |p: &str| p.starts_with("usr/lib/ipxe/") || p.starts_with("boot/");
    deb.each_data(None, |e| {
        if !wanted(&e.path) {
            return Ok(Flow::Continue);
        }
        match e.kind {
            Kind::File => {
                let mut b = Vec::with_capacity(e.size as usize);
                e.data.read_to_end(&mut b)?;
                regular.insert(e.path, b);
            }
            Kind::Symlink(ref t) => {
                links.insert(e.path.clone(), resolve(&e.path, t));
            }
            _ => {}
        }
        Ok(Flow::Continue)
    })?;
    let mut files = Vec::new();
    for f in IPXE_FILES {
        let mut p = format!("usr/lib/ipxe/{f}");
        for _ in 0..8 {
            match links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        let bytes = regular.remove(&p).with_context(|| {
            format!(
                "{}: the ipxe package has no usr/lib/ipxe/{f}",
                deb.path.display()
            )
        })?;
        files.push((f.to_string(), bytes));
    }
    Ok(Bootfiles {
        files,
        source: format!("ipxe {version}"),
    })
}

/// A symlink target as a path in the archive (no leading `/`).
fn resolve(link: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return abs.to_string();
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        assert_eq!(
            resolve("usr/lib/ipxe/ipxe.efi", "/boot/ipxe.efi"),
            "boot/ipxe.efi"
        );
        assert_eq!(
            resolve("usr/lib/ipxe/x.rom", "qemu/pxe.rom"),
            "usr/lib/ipxe/qemu/pxe.rom"
        );
        assert_eq!(resolve("usr/lib/ipxe/x", "../../../boot/y"), "boot/y");
    }

    #[test]
    fn host_dir_needs_all_three() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ipxe.efi"), b"a").unwrap();
        std::fs::write(d.path().join("snponly.efi"), b"b").unwrap();
        assert!(from_host(d.path()).unwrap().is_none());
        std::fs::write(d.path().join("undionly.kpxe"), b"c").unwrap();
        let b = from_host(d.path()).unwrap().unwrap();
        let undi = b.files.iter().find(|(n, _)| n == "undionly.kpxe");
        assert_eq!(undi, Some(&("undionly.kpxe".to_string(), b"c".to_vec())));
    }
}
