//! `usb build`: check the tools, get the netboot media, stage the images,
//! build the ESP, then partition a temp file next to `--out`, copy the
//! ESP in, make the data partition in place and rename the file onto
//! `--out`. Every piece lives in one temp dir next to `--out` that goes
//! away on failure, so `--out` is either the old file or a whole stick.

use std::ffi::OsStr;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use bty_proto::stick::{Manifest, DATA_LABEL, MANIFEST_FILE};
use indicatif::{ProgressBar, ProgressStyle};

use super::layout::{self, Layout};
use super::server::{self, Server};
use super::{images, loader, tools};
use crate::media::{self, Media};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The stick image to write.
    pub out: PathBuf,
    /// `--image NAME=PATH|URL`, in order.
    pub images: Vec<String>,
    /// A bty-web URL for the manifest: URL images come through its
    /// withcache and a stick key is minted there.
    pub server: Option<String>,
    /// Admin user at `server`.
    pub user: String,
    /// `server`'s password from stdin's first line.
    pub password_stdin: bool,
    /// The stick key's label (default [`server::default_label`]).
    pub key_label: Option<String>,
    /// `--auto image=...,disk-serial=...,after=...`.
    pub auto: Option<String>,
    /// Build the media from the .debs in this directory.
    pub from: Option<PathBuf>,
    /// The operator's media directory.
    pub netboot: Option<PathBuf>,
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    /// The partition layout written.
    pub layout: Layout,
    /// The manifest on the data partition.
    pub manifest: Manifest,
    /// The label of the stick key minted on `server`.
    pub key_label: Option<String>,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("usb: {}", msg.as_ref());
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("literal template"),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// Build the stick image at `o.out`.
pub fn build(o: &Options) -> Result<Built> {
    tools::require()?;
    let mut specs = images::parse_specs(&o.images)?;
    // Checked alone first (no server asked yet): a typo fails at once.
    if let Some(a) = o.auto.as_deref() {
        images::parse_auto(a, &specs, o.server.is_some())?;
    }
    if let Some(s) = &o.server {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            bail!("--server {s:?}: expected an http:// or https:// URL of a bty-web");
        }
    }
    if specs.is_empty() && o.server.is_none() {
        bail!("a stick needs something to flash: give --image NAME=PATH|URL (or --server URL for a bty-web's catalog)");
    }
    if o.out.is_dir() {
        bail!(
            "--out {} is a directory; name the image file to write",
            o.out.display()
        );
    }
    let parent = match o.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Next to --out: hard links to the images work there when on the same
    // file system, and the final rename is atomic.
    let work = tempfile::Builder::new()
        .prefix(".bty-usb-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot write next to --out {} (does {} exist and is it writable?)",
                o.out.display(),
                parent.display()
            )
        })?;

    // Log in (and route URL images through the server's withcache) before
    // the slow steps, so a wrong password fails in a second.
    let (mut server, catalog) = match &o.server {
        Some(url) => {
            let mut sv = Server::new(url, &o.user, o.password_stdin)?;
            let names = images::runtime()?.block_on(sv.through_cache(&mut specs))?;
            (Some(sv), names)
        }
        None => (None, Vec::new()),
    };
    let auto = o
        .auto
        .as_deref()
        .map(|a| images::check_auto_image(images::parse_auto(a, &specs, true)?, &specs, &catalog))
        .transpose()?;

    let media = get_media(o)?;
    let kernel = media.dir.join(media::KERNEL);
    let initrd = media.dir.join(media::INITRD);
    say(format!("netboot media from {}", media.dir.display()));

    let data_root = work.path().join("data");
    std::fs::create_dir(&data_root).with_context(|| format!("creating {}", data_root.display()))?;
    let entries = images::stage(&specs, &data_root)?;
    let image_bytes: u64 = entries.iter().map(|e| e.stored_size).sum();
    let key = match server.as_mut() {
        Some(sv) => {
            let label = o
                .key_label
                .clone()
                .unwrap_or_else(|| server::default_label(&o.out));
            Some(images::runtime()?.block_on(sv.mint_key(&label))?)
        }
        None => None,
    };
    let mut manifest = images::manifest(entries, o.server.clone(), auto);
    manifest.key = key.as_ref().map(|k| k.key.clone());
    let text = serde_json::to_string_pretty(&manifest).context("encoding the manifest")?;
    std::fs::write(data_root.join(MANIFEST_FILE), text + "\n")
        .with_context(|| format!("writing {MANIFEST_FILE}"))?;

    let layout = Layout::new(loader::content_bytes(&kernel, &initrd)?, image_bytes);
    let esp = work.path().join("esp.img");
    let pb = spinner(format!(
        "building the EFI system partition ({} MiB)",
        layout.esp_size >> 20
    ));
    let r = loader::build_esp(&esp, layout.esp_size, &kernel, &initrd, work.path());
    pb.finish_and_clear();
    r?;

    let stick = work.path().join("stick.img");
    std::fs::File::create(&stick).with_context(|| format!("creating {}", stick.display()))?;
    layout.partition(&stick)?;
    copy_at(&esp, &stick, layout.esp_start)?;
    let pb = spinner(format!(
        "writing the data partition ({} MiB, mke2fs)",
        layout.data_size >> 20
    ));
    let r = make_data(&stick, &layout, &data_root);
    pb.finish_and_clear();
    r?;
    let mbr = std::fs::read(tools::GPTMBR).with_context(|| format!("reading {}", tools::GPTMBR))?;
    layout::install_mbr(&stick, &mbr)?;
    std::fs::File::open(&stick)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", stick.display()))?;
    std::fs::rename(&stick, &o.out)
        .with_context(|| format!("moving the stick image to {}", o.out.display()))?;
    say(format!(
        "{}: {} MiB, {} image(s); write it with `bty-lab usb write {} /dev/sdX` or dd",
        o.out.display(),
        layout.total >> 20,
        manifest.images.len(),
        o.out.display()
    ));
    Ok(Built {
        layout,
        manifest,
        key_label: key.map(|k| k.label),
    })
}

/// The media the stick boots, got as `serve` gets it ([`media::obtain`]).
fn get_media(o: &Options) -> Result<Media> {
    media::obtain(o.netboot.as_deref(), o.from.clone())
        .map(|(m, _)| m)
        .map_err(|e| anyhow!("no netboot media for the stick: {e:#}"))
}

/// Copy `from` into `to` at `offset`, skipping all-zero MiBs (the target
/// is a fresh sparse file: zeros are already there).
fn copy_at(from: &Path, to: &Path, offset: u64) -> Result<()> {
    let mut r = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(to)
        .with_context(|| format!("opening {}", to.display()))?;
    let mut buf = vec![0u8; layout::MIB as usize];
    let mut at = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let k = r.read(&mut buf[filled..])?;
            if k == 0 {
                break;
            }
            filled += k;
        }
        if filled == 0 {
            return Ok(());
        }
        let chunk = &buf[..filled];
        if chunk.iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(at))?;
            w.write_all(chunk)
                .with_context(|| format!("writing {} into {}", from.display(), to.display()))?;
        }
        at += filled as u64;
    }
}

/// mke2fs straight into the data partition (`-E offset=`): the images are
/// copied once, from the staging tree, with no intermediate file.
fn make_data(stick: &Path, l: &Layout, root: &Path) -> Result<()> {
    let offset = format!("offset={}", l.data_start);
    let size = format!("{}k", l.data_size / 1024);
    tools::run(
        "mke2fs",
        &[
            OsStr::new("-q"),
            OsStr::new("-F"),
            OsStr::new("-t"),
            OsStr::new("ext4"),
            OsStr::new("-L"),
            OsStr::new(DATA_LABEL),
            // Few, big files; nothing to reserve for root on a stick.
            OsStr::new("-T"),
            OsStr::new("largefile"),
            OsStr::new("-m"),
            OsStr::new("0"),
            OsStr::new("-E"),
            OsStr::new(&offset),
            OsStr::new("-d"),
            root.as_os_str(),
            stick.as_os_str(),
            OsStr::new(&size),
        ],
    )
    .context("making the data partition's ext4 file system")?;
    let len = std::fs::metadata(stick)?.len();
    if len != l.total {
        bail!(
            "mke2fs changed {}'s size from {} to {len} bytes (an e2fsprogs without -E offset support?)",
            stick.display(),
            l.total
        );
    }
    Ok(())
}
