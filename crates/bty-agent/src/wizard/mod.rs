//! `bty wizard`: flash this machine from a bty USB stick, at its console.
//!
//! The netboot /init runs it when the kernel command line has
//! [`bty_proto::stick::MODE_ARG`], with the stick's data partition mounted
//! read-only at `/stick`. It reads the manifest ([`stick`]), lists the
//! stick's images and the machine's disks ([`disks`]; never the stick's own
//! disk, never one too small for the image), has the technician pick both
//! and confirm by typing the disk's serial, then flashes with
//! [`crate::local::flash`] (the network flow's writer and verifier) under a
//! progress bar, and reboots or powers off. With `auto` in the manifest it
//! asks nothing.
//!
//! The UI ([`ui`]) is line-based and runs on the VGA console and the serial
//! console at once (see the module's docs for why).
//!
//! Exit codes: 0 flashed and verified (under `--after-exit`; otherwise the
//! machine reboots or powers off), 1 a flash failed or the technician quit,
//! 3 refused before anything was written (a newer manifest, an unattended
//! target that is absent or unfit).

pub mod disks;
pub mod stick;
pub mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use bty_proto::stick::{After, Manifest, StickImage};

use crate::console::Console;
use crate::local::{self, LocalJob};
use crate::target::Host;
use disks::{human, Disk, TestDisk};
use ui::Ui;

/// `bty wizard`: flash this machine from the stick mounted at `--stick`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Where the stick's data partition is mounted.
    #[arg(long, default_value = "/stick")]
    pub stick: PathBuf,
    /// Terminals to talk on, all at once (default: /dev/tty1, the VGA
    /// console, and /dev/ttyS0, the first serial port).
    #[arg(long = "tty", conflicts_with = "stdio")]
    pub ttys: Vec<PathBuf>,
    /// Talk on stdin and stdout instead of terminals.
    #[arg(long)]
    pub stdio: bool,
    /// Test seam: consider only these loop devices instead of the
    /// machine's disks, comma-separated, each optionally with the serial it
    /// pretends to have (`/dev/loop3=SERIAL,/dev/loop4`). Anything but a
    /// loop device is refused, so a test never writes to a real disk.
    #[arg(long)]
    pub disks: Option<String>,
    /// Exit after a verified flash instead of rebooting or powering off.
    #[arg(long)]
    pub after_exit: bool,
    /// sysfs root (test seam).
    #[arg(long, default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// procfs root (test seam).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
}

/// A refusal before anything was written (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Run the wizard; returns the process exit code.
pub fn main(args: &Args) -> ExitCode {
    let ttys = if args.ttys.is_empty() {
        vec![PathBuf::from("/dev/tty1"), PathBuf::from("/dev/ttyS0")]
    } else {
        args.ttys.clone()
    };
    let mut ui = if args.stdio {
        Ui::stdio()
    } else {
        match Ui::terminals(&ttys) {
            Ok(ui) => ui,
            Err(e) => {
                eprintln!("bty wizard: {e:#}");
                return ExitCode::from(1);
            }
        }
    };
    // The flash's own status lines (write mode, zeroing, digests) go to
    // stdout only (the /init sends it to /run/bty-wizard.log): on the
    // terminals they would land in the middle of the progress bar, and
    // the wizard says what the technician needs itself.
    let console = Console::new(&[]);
    ui.say(format!("bty {} — USB stick wizard", crate::VERSION));
    match run(args, &mut ui, &console) {
        Ok(code) => code,
        Err(e) => {
            ui.say(format!("error: {e:#}"));
            if e.downcast_ref::<Refused>().is_some() {
                ui.say("nothing was written");
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Everything the flows share.
struct Ctx<'a> {
    args: &'a Args,
    host: Host,
    manifest: Manifest,
    test_disks: Option<Vec<TestDisk>>,
    stick_disk: Option<String>,
    console: &'a Console,
}

impl Ctx<'_> {
    /// The disks worth listing: the machine's (or the test's), never the
    /// stick's.
    fn disks(&self) -> Vec<Disk> {
        disks::list(
            &self.host,
            self.test_disks.as_deref(),
            self.stick_disk.as_deref(),
        )
    }

    /// The stick's disk when it is one the machine has (under `--disks`,
    /// one of those), for the "never offered" line.
    fn stick_among_disks(&self) -> Option<&str> {
        let s = self.stick_disk.as_deref()?;
        match &self.test_disks {
            Some(t) => t.iter().any(|d| d.name == s).then_some(s),
            None => Some(s),
        }
    }
}

fn run(args: &Args, ui: &mut Ui, console: &Console) -> Result<ExitCode> {
    let manifest = stick::load(&args.stick).map_err(|e| Refused(format!("{e:#}")))?;
    let test_disks = args
        .disks
        .as_deref()
        .map(disks::parse_test_disks)
        .transpose()
        .map_err(|e| Refused(format!("{e:#}")))?;
    let host = Host {
        sys: args.sysfs_root.clone(),
        proc: args.proc_root.clone(),
        dev: "/dev".into(),
    };
    if let Some(t) = &test_disks {
        for d in t {
            disks::check_block(&host.dev.join(&d.name)).map_err(|e| Refused(format!("{e:#}")))?;
        }
    }
    let stick_disk = stick::disk_of(&host.proc, &host.sys, &args.stick);
    ui.say(format!(
        "stick: {} ({}), made by bty {}, {} image{}",
        args.stick.display(),
        stick_disk
            .as_deref()
            .map(|d| format!("on /dev/{d}, never a target"))
            .unwrap_or_else(|| "not on a disk of this machine".into()),
        manifest.built_by,
        manifest.images.len(),
        if manifest.images.len() == 1 { "" } else { "s" }
    ));
    let ctx = Ctx {
        args,
        host,
        manifest,
        test_disks,
        stick_disk,
        console,
    };
    if ctx.manifest.auto.is_some() {
        return unattended(&ctx, ui);
    }
    interactive(&ctx, ui)
}

/// What the image needs, for the menus.
fn image_line(img: &StickImage) -> String {
    let decoded = match (img.size, img.format) {
        (Some(s), bty_proto::ImageFormat::Raw) if s == img.stored_size => String::new(),
        (Some(s), _) => format!(", {} on disk", human(s)),
        (None, bty_proto::ImageFormat::Raw) => String::new(),
        (None, _) => ", size on disk unknown".into(),
    };
    format!(
        "{}  ({}, {}{decoded})",
        img.name,
        img.format.as_str(),
        human(img.stored_size)
    )
}

fn disk_line(d: &Disk) -> String {
    format!(
        "/dev/{}  {}  {}  serial {}\n       {}",
        d.name,
        human(d.size),
        d.model.as_deref().unwrap_or("(no model)"),
        d.serial.as_deref().unwrap_or("(none)"),
        d.contents
    )
}

/// A number from 1 to `n`, `None` for `back` (b) or `quit` (q, or closed
/// terminals: Err).
fn pick(ui: &mut Ui, prompt: &str, n: usize, back: bool) -> Result<Option<usize>> {
    loop {
        let Some(answer) = ui.ask(prompt) else {
            bail!("the consoles closed: nothing written");
        };
        match answer.as_str() {
            "q" | "quit" => bail!("quit: nothing written"),
            "b" | "back" if back => return Ok(None),
            a => match a.parse::<usize>() {
                Ok(i) if (1..=n).contains(&i) => return Ok(Some(i - 1)),
                _ => ui.say(format!(
                    "type a number from 1 to {n}{}, or q to quit",
                    if back { ", b to go back" } else { "" }
                )),
            },
        }
    }
}

fn interactive(ctx: &Ctx, ui: &mut Ui) -> Result<ExitCode> {
    if ctx.manifest.images.is_empty() {
        bail!(Refused(
            "the stick has no images: rebuild it with `bty-lab usb build`".into()
        ));
    }
    loop {
        ui.say("\nImages on the stick:");
        for (i, img) in ctx.manifest.images.iter().enumerate() {
            ui.say(format!("  {}) {}", i + 1, image_line(img)));
        }
        let Some(i) = pick(
            ui,
            "Image number (q to quit):",
            ctx.manifest.images.len(),
            false,
        )?
        else {
            continue;
        };
        let Some(img) = ctx.manifest.images.get(i) else {
            continue;
        };
        let Some(disk) = choose_disk(ctx, ui, img)? else {
            continue;
        };
        match flash(ctx, ui, img, &disk) {
            Ok(()) => {
                let after = match ui.ask(
                    "Flashed and verified. Remove the stick, then press Enter to boot the \
                     disk (or type off to power off):",
                ) {
                    Some(a) if a == "off" => After::Poweroff,
                    _ => After::Reboot,
                };
                return finish(ctx, ui, after);
            }
            Err(f) => {
                f.say(ui);
                ui.say("pick again to retry, or q to quit");
            }
        }
    }
}

/// The disk menu for `img`, then the typed confirmation; `None` to go back
/// to the images.
fn choose_disk(ctx: &Ctx, ui: &mut Ui, img: &StickImage) -> Result<Option<Disk>> {
    loop {
        let fit = show_disks(ctx, ui, img);
        if fit.is_empty() {
            ui.say("no disk on this machine can take this image");
            return Ok(None);
        }
        let prompt = "Disk number (b to go back, q to quit):";
        let Some(i) = pick(ui, prompt, fit.len(), true)? else {
            return Ok(None);
        };
        let Some(disk) = fit.get(i) else { continue };
        if confirm(ui, img, disk)? {
            return Ok(Some(disk.clone()));
        }
    }
}

/// List the disks for `img`: those that can take it, numbered, and the
/// ones never offered with why; returns the numbered ones.
fn show_disks(ctx: &Ctx, ui: &mut Ui, img: &StickImage) -> Vec<Disk> {
    let need = stick::needed_bytes(img);
    let (fit, small): (Vec<Disk>, Vec<Disk>) = ctx
        .disks()
        .into_iter()
        .partition(|d| need.is_none_or(|n| d.size >= n));
    ui.say(format!("\nDisks for {}:", img.name));
    for (i, d) in fit.iter().enumerate() {
        ui.say(format!("  {}) {}", i + 1, disk_line(d)));
    }
    for d in &small {
        ui.say(format!(
            "  -) /dev/{} {}: too small for this image (needs {}), not offered",
            d.name,
            human(d.size),
            human(need.unwrap_or(0))
        ));
    }
    if let Some(s) = ctx.stick_among_disks() {
        ui.say(format!("  -) /dev/{s}: the stick itself, never offered"));
    }
    fit
}

/// Say what is about to happen and have the disk's serial typed; false
/// (nothing written) on anything else.
fn confirm(ui: &mut Ui, img: &StickImage, disk: &Disk) -> Result<bool> {
    ui.say(format!(
        "\nThis ERASES /dev/{} ({}, {}) and writes {} onto it.",
        disk.name,
        human(disk.size),
        disk.model.as_deref().unwrap_or("no model"),
        img.name
    ));
    let what = if disk.serial.is_some() {
        "serial"
    } else {
        "name (it has no serial)"
    };
    let Some(typed) = ui.ask(&format!(
        "Type the disk's {what} {} to confirm (anything else goes back):",
        disk.confirm_word()
    )) else {
        bail!("the consoles closed: nothing written");
    };
    if disks::confirms(disk, &typed) {
        return Ok(true);
    }
    ui.say(format!(
        "{typed:?} is not {:?}: nothing written",
        disk.confirm_word()
    ));
    Ok(false)
}

/// Why a flash failed, and whether the disk was touched.
struct Failed {
    error: anyhow::Error,
    /// The disk was written to: its first and last MiB are now zeroed.
    wrote: bool,
}

impl Failed {
    fn say(&self, ui: &mut Ui) {
        ui.say(format!("FLASH FAILED: {:#}", self.error));
        ui.say(if self.wrote {
            "the disk does not boot now: its first and last MiB are zeroed"
        } else {
            "nothing was written: the disk is as it was"
        });
    }
}

/// Flash `img` onto `disk` with the progress bar; local::flash checks the
/// stored sha256 before the first write and verifies the read-back.
fn flash(ctx: &Ctx, ui: &mut Ui, img: &StickImage, disk: &Disk) -> Result<(), Failed> {
    let mut wrote = false;
    flash_inner(ctx, ui, img, disk, &mut wrote).map_err(|error| Failed { error, wrote })
}

fn flash_inner(
    ctx: &Ctx,
    ui: &mut Ui,
    img: &StickImage,
    disk: &Disk,
    wrote: &mut bool,
) -> Result<()> {
    let source = stick::file_of(&ctx.args.stick, img)?;
    ui.say(format!("flashing {} onto /dev/{}", img.name, disk.name));
    let job = LocalJob {
        source: &source,
        format: img.format,
        device: &disk.path,
        expect_stored_sha256: Some(&img.stored_sha256),
        expect_sha256: img.sha256.as_deref(),
        expect_size: img.size,
        console: ctx.console,
    };
    ui.start_progress();
    let out = local::flash_on(&ctx.host, &job, &mut |p| {
        *wrote |= p.writing;
        ui.progress(p)
    })
    .with_context(|| format!("flashing {} onto /dev/{}", img.name, disk.name))?;
    ui.say(format!(
        "verified: {} written to /dev/{} in {:.1}s, read-back sha256 {}",
        human(out.bytes),
        disk.name,
        out.duration.as_secs_f64(),
        out.sha256
    ));
    Ok(())
}

fn unattended(ctx: &Ctx, ui: &mut Ui) -> Result<ExitCode> {
    let Some(auto) = &ctx.manifest.auto else {
        return interactive(ctx, ui);
    };
    ui.say(format!(
        "unattended: {} onto the disk with serial {}, then {}",
        auto.image,
        auto.disk_serial,
        after_word(auto.after)
    ));
    // stick::load checked that the image is on the stick.
    let img = ctx
        .manifest
        .images
        .iter()
        .find(|i| i.name == auto.image)
        .with_context(|| format!("image {:?} is not on the stick", auto.image))
        .map_err(|e| Refused(format!("{e:#}")))?;
    let all = ctx.disks();
    let disk = disks::by_serial(&all, &auto.disk_serial).map_err(|e| {
        Refused(format!(
            "{e:#}{}",
            match &ctx.stick_disk {
                Some(s) => format!(" (the stick is /dev/{s})"),
                None => String::new(),
            }
        ))
    })?;
    if let Some(need) = stick::needed_bytes(img) {
        if need > disk.size {
            bail!(Refused(format!(
                "{} needs {} but /dev/{} has {}",
                img.name,
                human(need),
                disk.name,
                human(disk.size)
            )));
        }
    }
    ui.say(format!("target: {}", disk_line(disk)));
    if let Err(f) = flash(ctx, ui, img, disk) {
        f.say(ui);
        return Ok(ExitCode::from(if f.wrote { 1 } else { 3 }));
    }
    finish(ctx, ui, auto.after)
}

fn after_word(a: After) -> &'static str {
    match a {
        After::Reboot => "reboot",
        After::Poweroff => "power off",
    }
}

/// sync, then reboot or power off (or exit under `--after-exit`).
fn finish(ctx: &Ctx, ui: &mut Ui, after: After) -> Result<ExitCode> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    if ctx.args.after_exit {
        ui.say(format!("done; would {} (--after-exit)", after_word(after)));
        return Ok(ExitCode::SUCCESS);
    }
    ui.say(format!("done; {}", after_word(after)));
    let cmd = match after {
        After::Reboot => libc::RB_AUTOBOOT,
        After::Poweroff => libc::RB_POWER_OFF,
    };
    // SAFETY: reboot(2); on success it does not return.
    unsafe { libc::reboot(cmd) };
    let err = std::io::Error::last_os_error();
    bail!("{}: {err}", after_word(after))
}
