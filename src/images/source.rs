//! What the images built here are made of: this very binary
//! ([`SelfBinary`]) and its netboot media ([`BootFiles`]), got through a
//! [`Source`], packed into an in-memory build context with the service's
//! Containerfile. bty-web copies the boot files into its boot dir at start
//! (crate::internal), so a pulled image flashes with no build on the host.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use crate::media::{self, Media};
use crate::render;
use crate::stack::{self, Service};

/// The running bty-lab executable: what the images are built from.
pub struct SelfBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Hex sha256 of `bytes` (the [`super::LABEL_BINARY`] value).
    pub sha256: String,
}

impl SelfBinary {
    /// Read and hash this executable.
    pub fn read() -> Result<SelfBinary> {
        let path = std::env::current_exe().context("finding this executable")?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(SelfBinary {
            path,
            bytes,
            sha256,
        })
    }

    /// Refuse a dynamically linked binary: it cannot start in a FROM
    /// scratch image.
    pub fn require_static(&self) -> Result<()> {
        let exe = self.path.display();
        if crate::elf::is_dynamic(&self.bytes).with_context(|| format!("inspecting {exe}"))? {
            bail!(
                "{exe} is dynamically linked, so it cannot run in a FROM scratch image.\n\
                 Build bty-lab as the README says; it is static by default (the workspace's \
                 .cargo/config.toml asks for crt-static):\n  \
                 cargo install --locked --path .\n\
                 then run that bty-lab (~/.cargo/bin/bty-lab), or use --images pull or --images present."
            );
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One boot file to bake in: its name in the image's boot dir and its bytes.
pub type BootFile = (String, Vec<u8>);

/// The files the images carry in their boot dir (`/srv/bty/boot`), read
/// from one directory: the bootfiles (iPXE, shim, GRUB; bty-web and
/// bty-tftp) and, for bty-web only, `web_only` (the netboot kernel and
/// initrd). Files missing
/// from `dir` are left out and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub dir: PathBuf,
    /// Names only bty-web's image carries.
    pub web_only: Vec<String>,
}

impl BootFiles {
    /// A media directory: bty-web carries its kernel, initrd and
    /// bootfiles, bty-tftp the bootfiles.
    pub fn from_media(m: &Media) -> BootFiles {
        BootFiles {
            dir: m.dir.clone(),
            web_only: vec![media::KERNEL.to_string(), media::INITRD.to_string()],
        }
    }

    /// The names `svc`'s image should carry, sorted.
    pub fn names(&self, svc: &Service) -> Vec<String> {
        if !svc.bootfiles {
            return Vec::new();
        }
        let mut v: Vec<String> = stack::bootfiles().map(|f| f.to_string()).collect();
        if svc.name == stack::WEB.name {
            v.extend(self.web_only.iter().cloned());
        }
        v.sort();
        v.dedup();
        v
    }

    /// (name, contents) of the files `svc` carries that exist in `dir`
    /// (symlinks followed: Debian's `ipxe.efi` is one), and the names missing.
    pub fn load(&self, svc: &Service) -> Result<(Vec<BootFile>, Vec<String>)> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in self.names(svc) {
            let p = self.dir.join(&name);
            if !p.is_file() {
                missing.push(name);
                continue;
            }
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            found.push((name, data));
        }
        Ok((found, missing))
    }

    /// The [`super::LABEL_BOOTFILES`] value for `files` (as [`BootFiles::load`]
    /// returns them): the same names with the same bytes give the same digest.
    pub fn digest(files: &[BootFile]) -> String {
        let mut h = Sha256::new();
        for (name, data) in files {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        hex(&h.finalize())
    }
}

/// What images built here are made of: this binary and its netboot media
/// (bty-web's image carries the kernel, the initrd and the bootfiles,
/// bty-tftp's the bootfiles). Each is got once per command and only
/// when needed: the media (cached, else built: [`media::ensure`]) when an
/// image is built or an image of this binary is checked.
pub struct Source {
    opts: media::Options,
    /// Appended to the error when the media cannot be had: the ways out
    /// of the command at hand.
    hint: String,
    me: Option<Arc<SelfBinary>>,
    media: Option<Result<(Media, BootFiles), String>>,
}

impl Source {
    pub fn new(opts: media::Options, hint: impl Into<String>) -> Source {
        Source {
            opts,
            hint: hint.into(),
            me: None,
            media: None,
        }
    }

    /// A source with both parts at hand (tests).
    #[cfg(test)]
    pub fn ready(me: SelfBinary, media: Media) -> Source {
        let files = BootFiles::from_media(&media);
        Source {
            opts: media::Options::default(),
            hint: String::new(),
            me: Some(Arc::new(me)),
            media: Some(Ok((media, files))),
        }
    }

    /// This executable, read and hashed once.
    pub fn me(&mut self) -> Result<Arc<SelfBinary>> {
        if self.me.is_none() {
            self.me = Some(Arc::new(SelfBinary::read()?));
        }
        Ok(self.me.clone().expect("set above"))
    }

    /// The media and the boot files from it; an error (the same one on
    /// every call) that names the ways out when the media cannot be had.
    pub async fn media(&mut self) -> Result<(Media, BootFiles)> {
        if self.media.is_none() {
            let opts = self.opts.clone();
            let r = tokio::task::spawn_blocking(move || media::ensure(&opts))
                .await
                .context("the media build panicked")?;
            self.media = Some(
                r.map(|m| (m.clone(), BootFiles::from_media(&m)))
                    .map_err(|e| {
                        format!(
                            "the netboot media the images carry cannot be had: {e:#}\n{}",
                            self.hint
                        )
                    }),
            );
        }
        match self.media.as_ref().expect("set above") {
            Ok(x) => Ok(x.clone()),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    }
}

/// The in-memory build context for one service's image: its Containerfile,
/// the binary, and (for services with bootfiles) `boot/<name>` for each of
/// `boot` (from [`BootFiles::load`]).
pub fn build_context(
    svc: &Service,
    version: &str,
    exe: &[u8],
    boot: &[BootFile],
) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let containerfile = render::containerfile(svc, version)?;
    add_file(&mut tar, "Containerfile", containerfile.as_bytes(), 0o644)?;
    add_file(&mut tar, "bty-lab", exe, 0o755)?;
    if svc.bootfiles {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "boot/", std::io::empty())?;
        for (name, data) in boot {
            add_file(&mut tar, &format!("boot/{name}"), data, 0o644)?;
        }
    }
    Ok(tar.into_inner()?)
}

/// One file in a build context, dated 0 so the same files give the same
/// context.
fn add_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_context_holds_binary_and_containerfile() {
        let boot = vec![("undionly.kpxe".to_string(), b"kpxe".to_vec())];
        let ctx = build_context(&stack::WEB, "0.1.0", b"\x7fELFfake", &boot).unwrap();
        let mut ar = tar::Archive::new(&ctx[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"Containerfile".to_string()));
        assert!(names.contains(&"bty-lab".to_string()));
        assert!(
            names.contains(&"boot/undionly.kpxe".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn boot_files_come_from_the_directory_given() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("undionly.kpxe"), b"bios").unwrap();
        std::fs::write(d.path().join("ipxe.efi"), b"efi").unwrap();
        std::fs::write(d.path().join("kernel"), b"vmlinuz").unwrap();
        let b = BootFiles {
            dir: d.path().to_path_buf(),
            web_only: vec!["kernel".into(), "initrd".into()],
        };
        let (web, web_missing) = b.load(&stack::WEB).unwrap();
        let names: Vec<&str> = web.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ipxe.efi", "kernel", "undionly.kpxe"]);
        assert_eq!(
            web_missing,
            ["grubx64.efi", "initrd", "shimx64.efi", "snponly.efi"]
        );
        // bty-tftp gets the bootfiles only; withcache none.
        let (tftp, _) = b.load(&stack::TFTP).unwrap();
        assert_eq!(tftp.len(), 2);
        assert!(b.load(&stack::CACHE).unwrap().0.is_empty());
        // The digest follows the bytes.
        let before = BootFiles::digest(&tftp);
        std::fs::write(d.path().join("ipxe.efi"), b"efi2").unwrap();
        assert_ne!(BootFiles::digest(&b.load(&stack::TFTP).unwrap().0), before);
        // A media directory: bty-web carries the kernel and the initrd too.
        let m = Media {
            dir: d.path().to_path_buf(),
            info: Default::default(),
        };
        let b = BootFiles::from_media(&m);
        assert_eq!(
            b.names(&stack::WEB),
            [
                media::INITRD,
                media::KERNEL,
                "grubx64.efi",
                "ipxe.efi",
                "shimx64.efi",
                "snponly.efi",
                "undionly.kpxe"
            ]
        );
        assert_eq!(
            b.names(&stack::TFTP),
            [
                "grubx64.efi",
                "ipxe.efi",
                "shimx64.efi",
                "snponly.efi",
                "undionly.kpxe"
            ]
        );
    }

    #[test]
    fn the_dynamic_binary_advice_is_the_readme_build() {
        let me = SelfBinary {
            path: "/bin/sh".into(),
            bytes: std::fs::read("/bin/sh").unwrap(),
            sha256: String::new(),
        };
        let e = me.require_static().unwrap_err().to_string();
        assert!(e.contains("cargo install --locked --path ."), "{e}");
        assert!(!e.contains("RUSTFLAGS"), "{e}");
    }
}
