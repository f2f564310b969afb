//! Getting the three images into the engine: built FROM scratch out of this
//! very binary (air-gapped labs), pulled from a registry, already there, or
//! `auto`: whichever of those fits, said in one line.
//!
//! Images built here carry this binary's netboot media in `/srv/bty/boot`
//! ([`BootFiles`]): bty-web's the kernel, the initrd and the iPXE
//! bootfiles, bty-tftp's the iPXE bootfiles. bty-web copies them into its
//! boot dir at start (crate::internal), so a pulled image flashes with no
//! build on the host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bollard::image::{BuildImageOptions, CreateImageOptions};
use futures::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

use super::{engine_msg, is_not_found, Engine};
use crate::media::{self, Media};
use crate::render;
use crate::stack::{self, Service};

/// Label on locally built images: the sha256 of the bty-lab binary inside.
/// `--images auto` reuses an image only when it matches the running binary.
pub const LABEL_BINARY: &str = "dev.bty.binary";
/// Label on locally built images: the sha256 of the boot files baked in
/// (names and contents; see [`BootFiles::digest`]).
pub const LABEL_BOOTFILES: &str = "dev.bty.bootfiles";

/// How long a pull under `--images auto` may go without a progress message
/// before it counts as failed (`BTY_LAB_PULL_STALL_SECS` overrides).
pub const PULL_STALL: Duration = Duration::from_secs(30);

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

/// The running bty-lab executable: what the images are built from.
pub struct SelfBinary {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Hex sha256 of `bytes` (the [`LABEL_BINARY`] value).
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
        if elf_is_dynamic(&self.bytes).with_context(|| format!("inspecting {exe}"))? {
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

/// The executable to put into the images, checked to be static.
pub fn static_self() -> Result<SelfBinary> {
    let me = SelfBinary::read()?;
    me.require_static()?;
    Ok(me)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One boot file to bake in: its name in the image's boot dir and its bytes.
pub type BootFile = (String, Vec<u8>);

/// The files the images carry in their boot dir (`/srv/bty/boot`), read
/// from one directory: the iPXE bootfiles (bty-web and bty-tftp) and, for
/// bty-web only, `web_only` (the netboot kernel and initrd). Files missing
/// from `dir` are left out and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub dir: PathBuf,
    /// Names only bty-web's image carries.
    pub web_only: Vec<String>,
}

impl BootFiles {
    /// A media directory: bty-web carries its kernel, initrd and iPXE
    /// bootfiles, bty-tftp the iPXE bootfiles.
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
        let mut v: Vec<String> = stack::IPXE_FILES.iter().map(|f| f.to_string()).collect();
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

    /// The [`LABEL_BOOTFILES`] value for `files` (as [`BootFiles::load`]
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

/// The boot files images built here carry: this binary's netboot media,
/// got (cached, else built: [`media::ensure`]) only when an image is built
/// or an image of this binary is checked, and only once per command.
pub struct Boot {
    opts: media::Options,
    /// Appended to the error when the media cannot be had: the ways out
    /// of the command at hand.
    hint: String,
    got: Option<Result<(Media, BootFiles), String>>,
}

impl Boot {
    pub fn new(opts: media::Options, hint: impl Into<String>) -> Boot {
        Boot {
            opts,
            hint: hint.into(),
            got: None,
        }
    }

    /// The media and the boot files from it; an error (the same one on
    /// every call) that names the ways out when the media cannot be had.
    pub async fn get(&mut self) -> Result<&(Media, BootFiles)> {
        if self.got.is_none() {
            let opts = self.opts.clone();
            let r = tokio::task::spawn_blocking(move || media::ensure(&opts))
                .await
                .context("the media build panicked")?;
            self.got = Some(match r {
                Ok(m) => {
                    let b = BootFiles::from_media(&m);
                    Ok((m, b))
                }
                Err(e) => Err(format!(
                    "the netboot media the images carry cannot be had: {e:#}\n{}",
                    self.hint
                )),
            });
        }
        match self.got.as_ref().expect("set above") {
            Ok(x) => Ok(x),
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
        for (name, data) in boot {
            add(&mut tar, &format!("boot/{name}"), data, 0o644)?;
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

/// Build the images of `services` tagged `image(svc)` from `me` (checked to
/// be static) and `boot`, labelled with the binary's and the boot files'
/// digests so `--images auto` can tell they are current.
pub async fn build_local(
    engine: &Engine,
    services: &[Service],
    image: impl Fn(&Service) -> String,
    me: &SelfBinary,
    boot: &BootFiles,
) -> Result<()> {
    me.require_static()?;
    let mp = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    for svc in services {
        let tag = image(svc);
        let (files, missing) = boot.load(svc)?;
        if !missing.is_empty() {
            crate::ui::warn(format!(
                "{tag}: no {} in {}; the image is built without {}",
                missing.join(", "),
                boot.dir.display(),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
        let ctx = build_context(svc, stack::VERSION, &me.bytes, &files)?;
        let pb = spinner(&mp, format!("building {tag} from {}", me.path.display()));
        let opts = BuildImageOptions {
            dockerfile: "Containerfile".to_string(),
            t: tag.clone(),
            rm: true,
            forcerm: true,
            labels: HashMap::from([
                (LABEL_BINARY.to_string(), me.sha256.clone()),
                (LABEL_BOOTFILES.to_string(), BootFiles::digest(&files)),
            ]),
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

/// Pull one ref with a progress bar. `stall`: give up when the engine sends
/// nothing for that long. Err is the engine's message (or the stall).
async fn pull_one(
    engine: &Engine,
    mp: &MultiProgress,
    r: &str,
    stall: Option<Duration>,
) -> Result<(), String> {
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
    let result = loop {
        let next = match stall {
            Some(t) => match tokio::time::timeout(t, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    break Err(format!(
                        "no progress for {} s (BTY_LAB_PULL_STALL_SECS)",
                        t.as_secs()
                    ))
                }
            },
            None => stream.next().await,
        };
        let Some(item) = next else { break Ok(()) };
        let info = match item {
            Ok(i) => i,
            Err(e) => break Err(engine_msg(&e)),
        };
        if let Some(err) = info.error {
            break Err(format!("the engine said: {err}"));
        }
        if let (Some(id), Some(d)) = (info.id, info.progress_detail) {
            if let (Some(cur), Some(tot)) = (d.current, d.total) {
                layers.insert(id, (cur.max(0) as u64, tot.max(0) as u64));
                pb.set_length(layers.values().map(|l| l.1).sum());
                pb.set_position(layers.values().map(|l| l.0).sum());
            }
        }
    };
    pb.finish_and_clear();
    result?;
    engine
        .api
        .inspect_image(r)
        .await
        .map_err(|e| engine_msg(&e))?;
    Ok(())
}

/// Pull `refs` with one progress bar each (`--images pull`: no stall limit).
pub async fn pull(engine: &Engine, refs: &[String]) -> Result<()> {
    let mp = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    for r in refs {
        pull_one(engine, &mp, r, None).await.map_err(|why| {
            anyhow::anyhow!(
                "pulling {r}: {why}\n(is the registry reachable? With --images auto, the \
                 default for new deploys, bty-lab builds the images from this binary when a pull \
                 fails; the choice is recorded for later deploys and upgrades)"
            )
        })?;
        crate::ui::detail(format!("pulled {r}"));
    }
    Ok(())
}

/// What the engine holds under an image tag, judged for `--images auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Built locally from this very binary and these boot files.
    Current,
    /// Pulled from a registry (not built by bty-lab here).
    Pulled,
    /// There but not to be used; says why.
    Unusable(String),
}

/// What the engine holds under `tag`: its labels and registry digests, or
/// None when it is not there.
async fn facts(
    engine: &Engine,
    tag: &str,
) -> Result<Option<(HashMap<String, String>, Vec<String>)>> {
    let img = match engine.api.inspect_image(tag).await {
        Ok(i) => i,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => bail!("inspecting image {tag}: {}", engine_msg(&e)),
    };
    let labels = img.config.and_then(|c| c.labels).unwrap_or_default();
    Ok(Some((labels, img.repo_digests.unwrap_or_default())))
}

/// Judge an image (its labels and registry digests) against this binary
/// (`sha256`) and the boot files it would get (`boot_digest`; None when
/// this binary's media cannot be had here, then the binary alone decides:
/// an image built from this binary carries this binary's media). A
/// bty-lab-built image (it has the binary label) must match both. One
/// without it counts as pulled when a registry digest is recorded for its
/// repository; anything else (`docker load`, a foreign build) is not used:
/// `--images present` is the way to run such images.
pub fn judge_labels(
    tag: &str,
    labels: &HashMap<String, String>,
    repo_digests: &[String],
    sha256: &str,
    boot_digest: Option<&str>,
) -> Found {
    match labels.get(LABEL_BINARY) {
        Some(b) if b != sha256 => Found::Unusable(format!(
            "{tag} was built from another bty-lab binary (sha256 {})",
            short(b)
        )),
        Some(_)
            if boot_digest
                .is_some_and(|d| labels.get(LABEL_BOOTFILES).map(String::as_str) != Some(d)) =>
        {
            Found::Unusable(format!("{tag} was built with other boot files"))
        }
        Some(_) => Found::Current,
        None => {
            let (repo, _) = split_ref(tag);
            if repo_digests
                .iter()
                .any(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
            {
                Found::Pulled
            } else {
                Found::Unusable(format!(
                    "{tag} was neither built by this bty-lab nor pulled"
                ))
            }
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `--images auto`: keep the images that are current (built from this
/// binary and its media, or pulled), pull the others, and if a pull fails
/// for any reason build what is still missing from this binary (with its
/// media from `boot`). Returns the one line that says which happened and
/// why.
pub async fn auto(
    engine: &Engine,
    services: &[Service],
    image: impl Fn(&Service) -> String,
    boot: &mut Boot,
) -> Result<String> {
    let me = SelfBinary::read()?;
    let mut found = Vec::new();
    for svc in services {
        found.push((*svc, facts(engine, &image(svc)).await?));
    }
    // An image of this binary is current only with this binary's media:
    // get it (a cache hit, normally) to compare the boot files.
    let ours = found.iter().any(|(_, f)| {
        f.as_ref()
            .is_some_and(|(l, _)| l.get(LABEL_BINARY) == Some(&me.sha256))
    });
    let checked = if ours {
        boot.get().await.ok().map(|(_, b)| b.clone())
    } else {
        None
    };
    let mut kept: Vec<(String, Found)> = Vec::new();
    // Services still to get, with why the image present is not used.
    let mut todo: Vec<(Service, Option<String>)> = Vec::new();
    for (svc, f) in found {
        let Some((labels, digests)) = f else {
            todo.push((svc, None));
            continue;
        };
        let digest = match &checked {
            Some(b) => Some(BootFiles::digest(&b.load(&svc)?.0)),
            None => None,
        };
        match judge_labels(
            &image(&svc),
            &labels,
            &digests,
            &me.sha256,
            digest.as_deref(),
        ) {
            Found::Unusable(why) => todo.push((svc, Some(why))),
            f => kept.push((svc.name.to_string(), f)),
        }
    }
    if todo.is_empty() {
        let how = if kept.iter().all(|(_, f)| *f == Found::Current) {
            format!(
                "built from this binary: {}, sha256 {}",
                me.path.display(),
                short(&me.sha256)
            )
        } else if kept.iter().all(|(_, f)| *f == Found::Pulled) {
            "pulled earlier".to_string()
        } else {
            "pulled earlier or built from this binary".to_string()
        };
        let unchecked = if ours && checked.is_none() {
            "; their netboot media not checked: this binary's cannot be had here"
        } else {
            ""
        };
        return Ok(format!(
            "images: reused the ones in {} ({how}){unchecked}; nothing to pull or build",
            engine.kind
        ));
    }
    // The first present-but-unusable image says why it is replaced.
    let stale = todo.iter().find_map(|(_, why)| why.clone());
    let stall = std::env::var("BTY_LAB_PULL_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(PULL_STALL);
    let mp = MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut pulled = Vec::new();
    let mut failure = None;
    while let Some((svc, _)) = todo.first() {
        let r = image(svc);
        match pull_one(engine, &mp, &r, Some(stall)).await {
            Ok(()) => {
                pulled.push(r);
                todo.remove(0);
            }
            Err(e) => {
                failure = Some((r, e));
                break;
            }
        }
    }
    let Some((failed_ref, why)) = failure else {
        return Ok(format!(
            "images: pulled {} ({})",
            pulled.join(", "),
            stale.unwrap_or_else(|| format!("not in {} yet", engine.kind))
        ));
    };
    let build: Vec<Service> = todo.iter().map(|(svc, _)| *svc).collect();
    let because = format!(
        "{}pull of {failed_ref} failed: {}",
        stale.map(|s| format!("{s}; ")).unwrap_or_default(),
        one_line(&why, 160)
    );
    if let Err(e) = me.require_static() {
        bail!("{because}, and the images cannot be built here instead: {e:#}");
    }
    let boot = match boot.get().await {
        Ok((_, b)) => b,
        Err(e) => bail!("{because}, and the images cannot be built here instead: {e:#}"),
    };
    build_local(engine, &build, &image, &me, boot).await?;
    Ok(format!(
        "images: built locally from {} ({because})",
        me.path.display()
    ))
}

/// `msg` on one line; when longer than `max` characters, its end (where
/// the root cause of an engine error is), after "... ".
pub fn one_line(msg: &str, max: usize) -> String {
    let flat = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = flat.chars().count();
    if n <= max {
        return flat;
    }
    let tail: String = flat.chars().skip(n - max).collect();
    format!("... {}", tail.trim_start())
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
        assert_eq!(web_missing, ["initrd", "snponly.efi"]);
        // bty-tftp gets the iPXE files only; withcache none.
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
                "ipxe.efi",
                "snponly.efi",
                "undionly.kpxe"
            ]
        );
        assert_eq!(b.names(&stack::TFTP).len(), 3);
    }

    #[test]
    fn auto_reuses_only_images_of_this_binary_or_pulled_ones() {
        let tag = "127.0.0.1:5000/bty/bty-web:0.1.0";
        let ours = HashMap::from([
            (LABEL_BINARY.to_string(), "aa".to_string()),
            (LABEL_BOOTFILES.to_string(), "bb".to_string()),
        ]);
        assert_eq!(
            judge_labels(tag, &ours, &[], "aa", Some("bb")),
            Found::Current
        );
        // This binary's media not to be had here: the binary decides.
        assert_eq!(judge_labels(tag, &ours, &[], "aa", None), Found::Current);
        let Found::Unusable(why) = judge_labels(tag, &ours, &[], "cc", Some("bb")) else {
            panic!("another binary's image reused")
        };
        assert!(why.contains("another bty-lab binary"), "{why}");
        assert!(matches!(
            judge_labels(tag, &ours, &[], "aa", Some("dd")),
            Found::Unusable(w) if w.contains("other boot files")
        ));
        // A pulled image has a registry digest for its repository.
        let none = HashMap::new();
        let digests = vec!["127.0.0.1:5000/bty/bty-web@sha256:0123".to_string()];
        assert_eq!(
            judge_labels(tag, &none, &digests, "aa", Some("bb")),
            Found::Pulled
        );
        let other = vec!["elsewhere/bty-web@sha256:0123".to_string()];
        assert!(matches!(
            judge_labels(tag, &none, &other, "aa", Some("bb")),
            Found::Unusable(_)
        ));
        assert!(matches!(
            judge_labels(tag, &none, &[], "aa", Some("bb")),
            Found::Unusable(_)
        ));
    }

    #[test]
    fn one_line_keeps_the_end_of_long_messages() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        let long = format!("{} no such host", "x".repeat(300));
        let l = one_line(&long, 40);
        assert!(l.starts_with("... ") && l.ends_with("no such host"), "{l}");
        assert!(l.chars().count() <= 44);
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
