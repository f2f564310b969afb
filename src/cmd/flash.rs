//! `bty-lab flash IMAGE DEVICE` and `bty-lab usb write FILE DEVICE`: an
//! image onto a local disk with the agent's own write-and-verify path
//! ([`bty_agent::local`]), behind checks that refuse the wrong disk before
//! anything is written:
//!
//! 1. the target is a whole disk (not a partition) or an existing regular
//!    file; a missing path is refused (a typo in /dev/sdX must not become a
//!    file in /dev);
//! 2. not the disk the running system's `/` is on, nothing mounted from it,
//!    no holder (device mapper, md), no swap;
//! 3. the operator sees the disk (model, size, serial, what is on it) and
//!    types its serial (else its model, else its kernel name), or passes
//!    `--yes`; with no terminal and no `--yes`, refused;
//! 4. then the agent checks the image (its stored sha256 when given, its
//!    size against the disk) before the first write, writes, reads back, and
//!    writes the first MiB last.
//!
//! A URL is downloaded to a temporary file first, then flashed: the stored
//! sha256 and the size are then checked before the disk is touched, so a
//! broken or truncated download never costs the disk its old content
//! (streaming would have wiped it before learning the download was bad).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bty_agent::console::Console;
use bty_agent::local::{self, LocalJob};
use bty_agent::target::{self, Host};
use bty_proto::ImageFormat;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{FlashArgs, UsbWriteArgs};
use crate::exit;

/// `bty-lab flash`.
pub fn run(a: FlashArgs) -> Result<()> {
    let format = match &a.format {
        Some(f) => f
            .parse::<ImageFormat>()
            .map_err(|e| exit::coded(exit::Code::Usage, format!("--format: {e}")))?,
        None => ImageFormat::from_file_name(file_name(&a.image)).ok_or_else(|| {
            exit::coded(
                exit::Code::Usage,
                format!(
                    "cannot tell the format of {} from its name; pass --format (img, img.gz, \
                     img.xz, img.zst, img.bz2, qcow2)",
                    a.image
                ),
            )
        })?,
    };
    // Before the operator is asked anything: the image is there.
    if !is_url(&a.image) {
        std::fs::metadata(&a.image)
            .map_err(|e| exit::refused(format!("image {}: {e}; nothing was written", a.image)))?;
    }
    let disk = inspect(&Host::default(), &a.device)?;
    disk.show(&format!("Flashing {} ({format}) onto:", a.image));
    confirm(&disk, a.yes)?;
    let downloaded;
    let source = if is_url(&a.image) {
        downloaded = download(&a.image)?;
        downloaded.0.clone()
    } else {
        PathBuf::from(&a.image)
    };
    write(&source, format, &a.device, a.sha256.as_deref())
}

/// `bty-lab usb write`: a stick image (raw, as `usb build` makes it).
pub fn usb_write(a: UsbWriteArgs) -> Result<()> {
    std::fs::metadata(&a.file).map_err(|e| {
        exit::refused(format!(
            "stick image {}: {e}; nothing was written",
            a.file.display()
        ))
    })?;
    let disk = inspect(&Host::default(), &a.device)?;
    disk.show(&format!(
        "This will erase everything on this disk and write the stick image {} onto it:",
        a.file.display()
    ));
    if disk.kind == Kind::Disk && !disk.removable && disk.tran.as_deref() != Some("usb") {
        crate::ui::warn(format!(
            "{} is neither removable nor on USB; is it really the stick?",
            a.device.display()
        ));
    }
    confirm(&disk, a.yes)?;
    write(&a.file, ImageFormat::Raw, &a.device, None)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The last path segment of a path or URL (query and fragment dropped).
fn file_name(image: &str) -> &str {
    let path = if is_url(image) {
        image.split(['?', '#']).next().unwrap_or(image)
    } else {
        image
    };
    path.rsplit('/').next().unwrap_or(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disk,
    File,
}

/// The target as the operator is shown it.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    kind: Kind,
    /// Kernel name (file name for a regular file).
    name: String,
    model: Option<String>,
    serial: Option<String>,
    size: u64,
    removable: bool,
    tran: Option<String>,
    /// What is on it, a line each (partitions, file systems).
    contents: Vec<String>,
}

impl Target {
    /// What the operator must type: the serial, else the model, else the
    /// kernel name (loop devices and virtual disks have neither).
    fn token(&self) -> (&'static str, &str) {
        match (&self.serial, &self.model) {
            (Some(s), _) => ("serial", s),
            (None, Some(m)) => ("model", m),
            (None, None) if self.kind == Kind::File => ("file name", &self.name),
            (None, None) => ("kernel name", &self.name),
        }
    }

    fn show(&self, title: &str) {
        eprintln!("{title}");
        eprintln!(
            "  {}  {}",
            self.path.display(),
            if self.kind == Kind::File {
                "(a regular file)".to_string()
            } else {
                format!("({})", self.name)
            }
        );
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        if self.kind == Kind::Disk {
            eprintln!("  model    {}", or_none(&self.model));
            eprintln!("  serial   {}", or_none(&self.serial));
            let mut how = Vec::new();
            if let Some(t) = &self.tran {
                how.push(t.clone());
            }
            if self.removable {
                how.push("removable".into());
            }
            if !how.is_empty() {
                eprintln!("  bus      {}", how.join(", "));
            }
        }
        eprintln!("  size     {} ({} bytes)", human(self.size), self.size);
        if self.contents.is_empty() {
            eprintln!("  on it    no partitions or file systems seen");
        } else {
            eprintln!("  on it");
            for l in &self.contents {
                eprintln!("    {l}");
            }
        }
    }
}

/// Refuse what must never be written, and describe the rest.
fn inspect(host: &Host, device: &Path) -> Result<Target> {
    let meta = std::fs::metadata(device).map_err(|e| {
        exit::refused(format!(
            "{}: {e}; give an existing whole disk (see lsblk) or regular file",
            device.display()
        ))
    })?;
    if meta.is_file() {
        let name = device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Target {
            path: device.to_path_buf(),
            kind: Kind::File,
            name,
            model: None,
            serial: None,
            size: meta.len(),
            removable: false,
            tran: None,
            contents: Vec::new(),
        });
    }
    let name = local::disk_name(host, device)
        .map_err(|e| exit::refused(format!("{e}; nothing was written")))?
        .ok_or_else(|| {
            exit::refused(format!(
                "{} is neither a block device nor a regular file; nothing was written",
                device.display()
            ))
        })?;
    if target::root_disks(host).contains(&name) {
        return Err(exit::refused(format!(
            "{} ({name}) is the disk the running system's / is on; refusing to write to it",
            device.display()
        )));
    }
    target::check_free(host, &name)
        .map_err(|e| exit::refused(format!("{e}; unmount it first. Nothing was written")))?;
    let d = bty_agent::inventory::read_disk(&host.sys, &name);
    Ok(Target {
        path: device.to_path_buf(),
        kind: Kind::Disk,
        contents: contents(host, &name),
        name,
        model: d.model,
        serial: d.serial,
        size: d.size_bytes.unwrap_or(0),
        removable: d.removable,
        tran: d.tran,
    })
}

/// Partitions and file systems on the disk: lsblk's view when lsblk is
/// there (it reads the signatures: file system types and labels), else
/// the partitions sysfs lists.
fn contents(host: &Host, name: &str) -> Vec<String> {
    let dev = host.dev.join(name);
    let lsblk = std::process::Command::new("lsblk")
        .args(["-n", "-o", "NAME,SIZE,FSTYPE,LABEL,MOUNTPOINTS"])
        .arg(&dev)
        .output();
    if let Some(o) = lsblk.ok().filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        // One line is the disk itself: worth showing only when it carries a
        // file system (a whole-disk ext4, an ISO).
        let bare = lines.len() == 1 && lines.iter().all(|l| l.split_whitespace().count() <= 2);
        return if bare { Vec::new() } else { lines };
    }
    let dir = host.sys.join("block").join(name);
    let mut parts: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| {
                    let size = std::fs::read_to_string(e.path().join("size"))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(|s| human(s * 512))
                        .unwrap_or_default();
                    format!("{} {size}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts
}

/// The typed confirmation; `--yes` skips it, no terminal refuses.
fn confirm(t: &Target, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(exit::refused(
            "refusing to erase a disk unattended: no terminal to confirm on; re-run with --yes \
             after checking the device. Nothing was written",
        ));
    }
    let (what, token) = t.token();
    let typed: String = dialoguer::Input::new()
        .with_prompt(format!(
            "Everything on {} will be lost. Type its {what} ({token}) to go on",
            t.path.display()
        ))
        .allow_empty(true)
        .interact_text()
        .context("reading the confirmation")?;
    if typed.trim() != token.trim() {
        return Err(exit::refused(format!(
            "typed {:?}, not the {what} {token:?}; nothing was written",
            typed.trim()
        )));
    }
    Ok(())
}

/// A downloaded image, removed when dropped.
struct Downloaded(PathBuf);

impl Drop for Downloaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Download `url` into `$TMPDIR` with the agent's resuming HTTP source.
fn download(url: &str) -> Result<Downloaded> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        ".bty-flash-{}-{}",
        std::process::id(),
        file_name(url)
    ));
    let out = Downloaded(path);
    let mut file = std::fs::File::create(&out.0)
        .with_context(|| format!("creating {} (set TMPDIR elsewhere?)", out.0.display()))?;
    let http = bty_agent::net::agent(Default::default());
    let fetched = Arc::new(AtomicU64::new(0));
    let mut src = bty_agent::source::HttpSource::open(
        http,
        url,
        Default::default(),
        Console::default(),
        fetched,
    )
    .with_context(|| format!("downloading {url}"))?;
    let pb = bar(src.object_len());
    pb.set_message("downloading");
    std::io::copy(&mut pb.wrap_read(&mut src), &mut file)
        .with_context(|| format!("downloading {url} into {}", out.0.display()))?;
    pb.finish_and_clear();
    file.sync_all()?;
    Ok(out)
}

fn bar(total: Option<u64>) -> ProgressBar {
    let pb = ProgressBar::new(total.unwrap_or(0));
    let template = if total.is_some() {
        "{msg:10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{msg:10} {spinner} {bytes} {binary_bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// The flash itself, with a progress bar.
fn write(source: &Path, format: ImageFormat, device: &Path, sha256: Option<&str>) -> Result<()> {
    let console = Console::default();
    let mut job = LocalJob::new(source, format, device, &console);
    job.expect_stored_sha256 = sha256;
    let pb = bar(None);
    pb.set_message(if sha256.is_some() {
        "checking"
    } else {
        "writing"
    });
    let mut writing = false;
    let mut sized = false;
    let r = local::flash(&job, &mut |p| {
        if p.writing && !writing {
            writing = true;
            pb.set_message("writing");
        }
        if let (Some(t), false) = (p.total, sized) {
            sized = true;
            pb.set_length(t);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
        }
        pb.set_position(p.written);
    });
    pb.finish_and_clear();
    match r {
        Ok(out) => {
            eprintln!(
                "wrote and verified {} ({} bytes) on {} in {:.1}s, sha256 {}",
                source.display(),
                out.bytes,
                device.display(),
                out.duration.as_secs_f64(),
                out.sha256
            );
            Ok(())
        }
        // Before the first write nothing changed: a refusal.
        Err(e) if !writing => Err(exit::refused(format!("{e}; nothing was written"))),
        Err(e) => bail!(
            "{e}; the first and last MiB of {} were zeroed, so it will not boot the half-written \
             image: flash it again",
            device.display()
        ),
    }
}

fn human(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
