//! One media build, start to finish, into a directory that is renamed into
//! the cache only when complete; and copying cached media out (`--out`).
//!
//! Steps: this binary (static, hashed) → the packages ([`packages`]) →
//! the kernel and module closure ([`kernel`]) → busybox and its applet
//! list → the iPXE bootfiles ([`ipxe`]) → the Secure Boot bootfiles
//! ([`signed`]: shim and GRUB, checked) → the initramfs tree and archive
//! → `media.json`. Any failure removes the build directory: nothing
//! half-built is ever in the cache or in `--out`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::cache::{Cache, SelfExe};
use super::packages::{self, Pkg};
use super::{apt, cpio, initramfs, ipxe, kernel, modules, place, signed};
use super::{FileSum, Info, Manifest, Media, Options, INITRD, KERNEL, MANIFEST};

/// gzip level of the initramfs. 6 (zlib's default) packs the ~95 MB debug
/// agent in a few seconds, where 9 takes about twice as long for ~1% less;
/// see docs/netboot-media.md for the figures.
const GZIP_LEVEL: u32 = 6;

/// The file mtime inside the initramfs: `$SOURCE_DATE_EPOCH`, else 0.
fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds")),
        _ => Ok(0),
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("media: {}", msg.as_ref());
}

fn bar(mp: &MultiProgress, msg: &str, len: u64) -> ProgressBar {
    let pb = mp.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("literal template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// The media of `dir` if it is complete and built from `sha256`.
fn cached(dir: &Path, sha256: &str) -> Option<Media> {
    let m = Manifest::read(dir).ok()?;
    let complete = m
        .files
        .iter()
        .all(|(name, f)| std::fs::metadata(dir.join(name)).is_ok_and(|md| md.len() == f.size));
    if !complete || m.info.agent_sha256 != sha256 {
        return None;
    }
    // Used now: the cache's pruning keeps the most recently used media.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    Some(Media {
        dir: dir.to_path_buf(),
        info: m.info,
    })
}

/// [`super::ensure`], and with `force` a rebuild even on a cache hit.
pub fn ensure_with(opts: &Options, force: bool) -> Result<Media> {
    let exe = SelfExe::read()?.require_static()?;
    let cache = Cache::open(opts.cache.as_deref())?;
    let key = exe.key();
    let dir = cache.media(&key);
    if !force {
        if let Some(m) = cached(&dir, &exe.sha256) {
            say(format!(
                "using the cached media {} in {}",
                m.info.version,
                dir.display()
            ));
            return Ok(m);
        }
    }
    let _lock = cache.lock()?;
    if !force {
        // Another process may have built it while we waited.
        if let Some(m) = cached(&dir, &exe.sha256) {
            say(format!(
                "using the cached media {} in {}",
                m.info.version,
                dir.display()
            ));
            return Ok(m);
        }
    }
    let started = Instant::now();
    let tmp = cache.build_dir(&key)?;
    if let Err(e) = build_into(&tmp, exe, opts, &cache) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context("building the netboot media"));
    }
    if dir.exists() {
        let old = cache.media(&format!(".old-{key}-{}", std::process::id()));
        std::fs::rename(&dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
        let _ = std::fs::remove_dir_all(old);
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    cache.prune(&key);
    let media = Media::from_dir(&dir)?;
    say(format!(
        "built {} in {:.1}s: {}",
        media.info.version,
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    Ok(media)
}

/// Build everything into the empty directory `dir`.
fn build_into(dir: &Path, exe: SelfExe, opts: &Options, cache: &Cache) -> Result<()> {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mtime = source_date_epoch()?;
    say(format!(
        "building for {} {} (sha256 {})",
        exe.path.display(),
        exe.version,
        &exe.sha256[..16]
    ));
    let host_ipxe = ipxe::from_host(&ipxe::host_dir())?;
    let need_ipxe = host_ipxe.is_none();
    let inputs = match &opts.from {
        Some(d) => packages::from_dir(d, need_ipxe)?,
        None => packages::from_apt(&cache.debs(), need_ipxe, &mp)?,
    };
    let kc = &inputs.kernel.control;
    say(format!(
        "kernel {} {}, busybox-static {}",
        kc.package, kc.version, inputs.busybox.control.version
    ));

    let pb = bar(&mp, "reading the kernel package", 0);
    let kernel = kernel::read(&inputs.kernel.deb, kc, modules::WANTED, Some(&pb))?;
    pb.finish_and_clear();
    if !kernel.closure.missing.is_empty() {
        say(format!(
            "not in {}, left out: {}",
            kc.package,
            kernel.closure.missing.join(" ")
        ));
    }
    say(format!(
        "{} modules for {} (built in: {})",
        kernel.closure.modules.len(),
        modules::WANTED.len(),
        if kernel.closure.builtin.is_empty() {
            "none".into()
        } else {
            kernel.closure.builtin.join(" ")
        }
    ));

    let busybox = busybox_binary(&inputs.busybox)?;
    let applets = applets(&busybox, dir)?;

    let bootfiles = match host_ipxe {
        Some(b) => b,
        None => {
            let p = inputs.ipxe.as_ref().expect("asked for when needed");
            ipxe::from_deb(&p.deb, &p.control.version)?
        }
    };
    say(format!("iPXE bootfiles from {}", bootfiles.source));
    let secure = signed::read(&inputs.shim, &inputs.grub)?;
    say(format!(
        "Secure Boot bootfiles: {}",
        secure
            .iter()
            .map(|b| format!(
                "{} ({} {})",
                b.origin.file, b.origin.package, b.origin.version
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let info = Info {
        version: format!("{}-k{}", exe.version, kernel.release),
        agent_version: exe.version.to_string(),
        agent_sha256: exe.sha256.clone(),
        kernel: kc.package.clone(),
        kernel_version: kc.version.clone(),
        kernel_release: kernel.release.clone(),
        busybox: inputs.busybox.control.version.clone(),
        modules: kernel.closure.modules.clone(),
        source_date_epoch: mtime,
    };
    let parts = initramfs::Parts {
        agent: exe.bytes,
        busybox,
        applets,
    };
    let entries = initramfs::entries(parts, &kernel, &info)?;
    let pb = bar(&mp, "packing the initramfs", cpio::payload(&entries));
    let t = Instant::now();
    cpio::write_gz(&entries, mtime, GZIP_LEVEL, &dir.join(INITRD), Some(&pb))?;
    pb.finish_and_clear();
    drop(entries);
    say(format!(
        "initramfs: {} in {:.1}s",
        human(std::fs::metadata(dir.join(INITRD))?.len()),
        t.elapsed().as_secs_f64()
    ));

    std::fs::write(dir.join(KERNEL), &kernel.vmlinuz)?;
    for (name, bytes) in &bootfiles.files {
        std::fs::write(dir.join(name), bytes)?;
    }
    for b in &secure {
        std::fs::write(dir.join(&b.origin.file), &b.bytes)?;
    }
    let mut files = std::collections::BTreeMap::new();
    for name in std::iter::once(KERNEL)
        .chain(std::iter::once(INITRD))
        .chain(bootfiles.files.iter().map(|(n, _)| n.as_str()))
        .chain(secure.iter().map(|b| b.origin.file.as_str()))
    {
        let p = dir.join(name);
        files.insert(
            name.to_string(),
            FileSum {
                sha256: apt::sha256_file(&p)?,
                size: std::fs::metadata(&p)?.len(),
            },
        );
    }
    let manifest = Manifest {
        schema: 1,
        info,
        ipxe: bootfiles.source,
        secure_boot: secure.into_iter().map(|b| b.origin).collect(),
        files,
    };
    std::fs::write(
        dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok(())
}

/// `1.2 MiB` style.
pub fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// `bin/busybox` (or `usr/bin/busybox`) out of busybox-static.
fn busybox_binary(p: &Pkg) -> Result<Vec<u8>> {
    let b = p
        .deb
        .read_file(|path| path == "bin/busybox" || path == "usr/bin/busybox")?
        .with_context(|| format!("{}: no bin/busybox in the package", p.deb.path.display()))?;
    if crate::elf::is_dynamic(&b)? {
        bail!(
            "{}: bin/busybox is dynamically linked",
            p.deb.path.display()
        );
    }
    Ok(b)
}

/// busybox's applets where busybox would install them (`bin/sh`,
/// `sbin/modprobe`, ...), from `busybox --list-full` (run from the build
/// directory: busybox-static runs anywhere this binary does).
/// `/sbin/modprobe` matters: it is the kernel's `modprobe_path`, through
/// which drivers request the modules they need (see modules.rs).
fn applets(busybox: &[u8], dir: &Path) -> Result<Vec<String>> {
    // Named `busybox`: busybox picks the applet by argv[0]'s file name.
    let tools = dir.join(".tools");
    std::fs::create_dir_all(&tools)?;
    let p = tools.join("busybox");
    std::fs::write(&p, busybox)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    let out = Command::new(&p).arg("--list-full").output();
    let _ = std::fs::remove_dir_all(&tools);
    let out = out.context("running busybox --list-full")?;
    if !out.status.success() {
        bail!("busybox --list-full failed ({})", out.status);
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for need in ["bin/sh", "sbin/modprobe", "sbin/udhcpc"] {
        if !list.iter().any(|a| a == need) {
            bail!("busybox --list-full names no {need}; the /init needs it");
        }
    }
    Ok(list)
}

/// Put `media` into `out`: a new directory is filled under a temp name
/// next to it and renamed; an existing one gets each file replaced
/// atomically (media.json last).
pub fn copy_out(media: &Media, out: &Path) -> Result<()> {
    let manifest = Manifest::read(&media.dir)?;
    let mut names: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
    names.push(MANIFEST);
    if !out.exists() {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp: PathBuf = parent.join(format!(
            ".{}.tmp-{}",
            out.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let r = (|| -> Result<()> {
            std::fs::create_dir_all(&tmp)?;
            for n in &names {
                std::fs::copy(media.dir.join(n), tmp.join(n))
                    .with_context(|| format!("copying {n} into {}", tmp.display()))?;
            }
            std::fs::rename(&tmp, out)
                .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
        })();
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        return r;
    }
    for n in &names {
        place::copy_atomic(&media.dir.join(n), &out.join(n))
            .with_context(|| format!("placing {n} in {}", out.display()))?;
    }
    Ok(())
}

/// `media download`: the .debs a build needs, into `out`.
pub fn download(out: &Path) -> Result<Vec<PathBuf>> {
    if !apt::available() {
        bail!("`media download` needs apt-get and apt-cache (a Debian or Ubuntu host)");
    }
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut got = Vec::new();
    for name in packages::apt_names(true)? {
        let c = apt::candidate(&name)?;
        let p = apt::fetch(&c, out, &mp)?;
        say(format!("{} {}: {}", c.package, c.version, p.display()));
        got.push(p);
    }
    Ok(got)
}
