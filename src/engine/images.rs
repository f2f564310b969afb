//! Getting the three images into the engine: built FROM scratch out of this
//! very binary (air-gapped labs), pulled from a registry, or already there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use bollard::image::{BuildImageOptions, CreateImageOptions};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{engine_msg, is_not_found, Engine};
use crate::render;
use crate::stack::{self, Service};

/// iPXE bootfiles copied into the bty-web and bty-tftp images when present.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// The iPXE bootfiles by name (what the images carry in their boot dir).
pub const IPXE_FILES: &[&str] = &["ipxe.efi", "snponly.efi", "undionly.kpxe"];
/// Where packaged netboot media (kernel + initrd) live on the host. They are
/// not baked into the images: `deploy` copies them into the bind-mounted
/// boot dir (see crate::netboot), so new media need no image rebuild.
pub const NETBOOT_DIR: &str = "/usr/share/bty/netboot";

/// Does the ELF file ask for a dynamic loader (PT_INTERP)? A FROM scratch
/// image has no loader, so such a binary cannot start there. Parsed by hand:
/// it is 20 lines and the only ELF fact we need.
pub fn elf_is_dynamic(bytes: &[u8]) -> Result<bool> {
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

/// The executable to put into the images, checked to be static.
pub fn static_self() -> Result<(PathBuf, Vec<u8>)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    if elf_is_dynamic(&bytes).with_context(|| format!("inspecting {}", exe.display()))? {
        bail!(
            "{} is dynamically linked, so it cannot run in a FROM scratch image.\n\
             Build a static bty-lab for --images local:\n  \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target x86_64-unknown-linux-gnu\n\
             and run target/x86_64-unknown-linux-gnu/release/bty-lab, or use --images pull.",
            exe.display()
        );
    }
    Ok((exe, bytes))
}

fn boot_files() -> Vec<PathBuf> {
    IPXE_FILES
        .iter()
        .map(|f| Path::new(IPXE_DIR).join(f))
        .filter(|p| p.is_file())
        .collect()
}

/// The in-memory build context for one service's image.
pub fn build_context(svc: &Service, version: &str, exe: &[u8]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let add = |tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    add(
        &mut tar,
        "Containerfile",
        render::containerfile(svc, version)?.as_bytes(),
        0o644,
    )?;
    add(&mut tar, "bty-lab", exe, 0o755)?;
    if svc.bootfiles {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, "boot/", std::io::empty())?;
        for f in boot_files() {
            let data = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            let name = format!("boot/{}", f.file_name().unwrap().to_string_lossy());
            add(&mut tar, &name, &data, 0o644)?;
        }
    }
    Ok(tar.into_inner()?)
}

fn spinner(mp: &MultiProgress, msg: String) -> ProgressBar {
    let pb = mp.add(ProgressBar::new_spinner());
    pb.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

/// Build the images of `services` tagged `image(svc)` from this binary.
pub async fn build_local(
    engine: &Engine,
    services: &[Service],
    image: impl Fn(&Service) -> String,
) -> Result<()> {
    let (exe_path, exe) = static_self()?;
    let mp = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    for svc in services {
        let tag = image(svc);
        let ctx = build_context(svc, stack::VERSION, &exe)?;
        let pb = spinner(&mp, format!("building {tag} from {}", exe_path.display()));
        let opts = BuildImageOptions {
            dockerfile: "Containerfile".to_string(),
            t: tag.clone(),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        // An empty credentials map, not None: Podman's compat API answers 400
        // to the empty X-Registry-Config header bollard sends for None.
        let mut stream = engine
            .api
            .build_image(opts, Some(HashMap::new()), Some(ctx.into()));
        let mut last = Vec::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| anyhow::anyhow!("building {tag}: {}", engine_msg(&e)))?;
            if let Some(err) = info.error {
                pb.finish_and_clear();
                bail!("building {tag}: the engine said: {err}\n{}", last.join(""));
            }
            if let Some(s) = info.stream {
                last.push(s);
                if last.len() > 10 {
                    last.remove(0);
                }
            }
        }
        // Podman's compat build reports some failures only by not tagging.
        engine.api.inspect_image(&tag).await.map_err(|e| {
            anyhow::anyhow!(
                "building {tag} left no image: {}\n{}",
                engine_msg(&e),
                last.join("")
            )
        })?;
        pb.finish_and_clear();
        crate::ui::detail(format!("built {tag}"));
    }
    Ok(())
}

/// Pull `refs` with one progress bar each.
pub async fn pull(engine: &Engine, refs: &[String]) -> Result<()> {
    let mp = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    for r in refs {
        let (repo, tag) = split_ref(r);
        let pb = mp.add(ProgressBar::new(0));
        pb.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap()
                .progress_chars("=> "),
        );
        pb.set_message(format!("pulling {r}"));
        let opts = CreateImageOptions {
            from_image: repo.to_string(),
            tag: tag.to_string(),
            ..Default::default()
        };
        // Explicit empty credentials for the same reason as in build_local.
        let creds = bollard::auth::DockerCredentials::default();
        let mut stream = engine.api.create_image(Some(opts), None, Some(creds));
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                anyhow::anyhow!(
                    "pulling {r}: {}\n(is the registry reachable? an air-gapped lab can use --images local)",
                    engine_msg(&e)
                )
            })?;
            if let Some(err) = info.error {
                bail!("pulling {r}: the engine said: {err}");
            }
            if let (Some(id), Some(d)) = (info.id, info.progress_detail) {
                if let (Some(cur), Some(tot)) = (d.current, d.total) {
                    layers.insert(id, (cur.max(0) as u64, tot.max(0) as u64));
                    pb.set_length(layers.values().map(|l| l.1).sum());
                    pb.set_position(layers.values().map(|l| l.0).sum());
                }
            }
        }
        engine
            .api
            .inspect_image(r)
            .await
            .map_err(|e| anyhow::anyhow!("pulling {r}: {}", engine_msg(&e)))?;
        pb.finish_and_clear();
        crate::ui::detail(format!("pulled {r}"));
    }
    Ok(())
}

/// Check that every ref is already in the engine.
pub async fn require_present(engine: &Engine, refs: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for r in refs {
        match engine.api.inspect_image(r).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => missing.push(r.clone()),
            Err(e) => bail!("inspecting image {r}: {}", engine_msg(&e)),
        }
    }
    if !missing.is_empty() {
        bail!(
            "images not in the {} engine: {}\nload them (docker load / podman load), or use --images local or --images pull",
            engine.kind,
            missing.join(", ")
        );
    }
    Ok(())
}

/// `reg:5000/a/b:tag` → (`reg:5000/a/b`, `tag`).
pub fn split_ref(r: &str) -> (&str, &str) {
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (r, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_ref("127.0.0.1:5000/bty/bty-web:0.1.0"),
            ("127.0.0.1:5000/bty/bty-web", "0.1.0")
        );
        assert_eq!(
            split_ref("127.0.0.1:5000/bty/bty-web"),
            ("127.0.0.1:5000/bty/bty-web", "latest")
        );
    }

    #[test]
    fn elf_interp_detection() {
        // /bin/sh on Debian is dynamic.
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(elf_is_dynamic(&sh).unwrap());
        assert!(elf_is_dynamic(b"not an elf").is_err());
        // A minimal static ELF: one PT_LOAD program header, no PT_INTERP.
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(!elf_is_dynamic(&elf).unwrap());
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(elf_is_dynamic(&elf).unwrap());
    }

    #[test]
    fn build_context_holds_binary_and_containerfile() {
        let ctx = build_context(&stack::WEB, "0.1.0", b"\x7fELFfake").unwrap();
        let mut ar = tar::Archive::new(&ctx[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"Containerfile".to_string()));
        assert!(names.contains(&"bty-lab".to_string()));
        assert!(names.iter().any(|n| n.starts_with("boot")));
    }
}
