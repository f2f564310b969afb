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
//! A stick with a server key ([`server`]) also offers the catalog of the
//! bty-web it names (or the DHCP lease's next-server) and flashes those
//! images through the same path, streamed like the network agent's; and
//! it tells that bty-web about every flash, so a registered machine's page
//! shows it as a cycle with live progress.
//!
//! The UI ([`ui`]) is line-based and runs on the VGA console and the serial
//! console at once (see the module's docs for why).
//!
//! Exit codes: 0 flashed and verified (under `--after-exit`; otherwise the
//! machine reboots or powers off), 1 a flash failed or the technician quit,
//! 3 refused before anything was written (a newer manifest, an unattended
//! target that is absent or unfit).

pub mod disks;
pub mod server;
pub mod stick;
pub mod ui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bty_proto::plan::DoneReport;
use bty_proto::stick::{After, FlashStart, ImageSource, Manifest, ServerImage, StickImage};
use bty_proto::{ImageFormat, Mac};

use crate::console::Console;
use crate::flash::Expected;
use crate::local::{self, LocalJob, Remote};
use crate::report::{Channel, DoneOutcome, Reporter};
use crate::source::Retry;
use crate::target::Host;
use disks::{human, Disk, TestDisk};
use server::{Server, Started, Unavailable};
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
    /// The DHCP lease the udhcpc hook writes (next-server, TFTP server).
    #[arg(long, default_value = server::DHCP_ENV)]
    pub dhcp_env: PathBuf,
    /// How long to wait for a DHCP lease before the first menu when the
    /// stick has a server key (Enter skips the wait).
    #[arg(long, default_value_t = 20)]
    pub network_wait: u64,
    /// Test seam: tell the server these MACs (comma-separated) instead of
    /// the NICs' in <sysfs-root>/class/net.
    #[arg(long, hide = true)]
    pub macs: Option<String>,
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

/// The bty-web side: the server that answered, its images, and the one
/// line the image menu says about it.
#[derive(Default)]
struct Net {
    server: Option<Server>,
    images: Vec<ServerImage>,
    note: Option<String>,
}

impl Net {
    /// Ask the candidate servers for their catalog (no-op without a key).
    fn refresh(ctx: &Ctx) -> Net {
        let Some(key) = ctx.manifest.key.as_deref() else {
            return Net {
                note: Some(
                    "no server key on this stick: images from a bty-web need a stick built \
                     with --server"
                        .into(),
                ),
                ..Net::default()
            };
        };
        let lease = server::read_lease(&ctx.args.dhcp_env);
        let urls = server::candidates(ctx.manifest.server.as_deref(), lease.as_ref());
        match server::discover(&urls, key) {
            Ok((s, images)) => Net {
                note: Some(format!(
                    "server {}: {} image{}",
                    s.url,
                    images.len(),
                    if images.len() == 1 { "" } else { "s" }
                )),
                server: Some(s),
                images,
            },
            Err(Unavailable::Refused(m)) => Net {
                note: Some(format!("{m}; stick images only (r retries the server)")),
                ..Net::default()
            },
            Err(Unavailable::Unreachable(m)) => Net {
                note: Some(format!(
                    "no bty-web reachable ({m}); stick images only (r retries the server)"
                )),
                ..Net::default()
            },
        }
    }
}

/// An image on either menu: the stick's or the server's.
#[derive(Clone, Copy)]
enum Choice<'a> {
    Stick(&'a StickImage),
    Server(&'a ServerImage),
}

impl Choice<'_> {
    fn name(&self) -> &str {
        match self {
            Choice::Stick(i) => &i.name,
            Choice::Server(i) => &i.name,
        }
    }

    fn line(&self) -> String {
        match self {
            Choice::Stick(i) => image_line(i),
            Choice::Server(i) => format!(
                "{}  (server, {} .{})",
                i.name,
                human(i.size),
                i.format.as_str()
            ),
        }
    }

    /// The bytes the target must hold, when known before the disk menu.
    /// A compressed server image's container is asked with Range probes
    /// (zstd content size, xz index, qcow2 header, gzip's lower bound), as
    /// the network agent asks before its first write; when it cannot say,
    /// every disk is offered and the write itself stops at the disk's end.
    fn need(&self, ctx: &Ctx, net: &Net) -> Option<u64> {
        match self {
            Choice::Stick(i) => stick::needed_bytes(i),
            Choice::Server(i) if i.format == ImageFormat::Raw => Some(i.size),
            Choice::Server(i) => {
                let s = net.server.as_ref()?;
                let d = crate::flash::Download {
                    http: &s.http,
                    url: &i.url,
                    format: i.format,
                    retry: Retry::default(),
                    console: ctx.console,
                };
                let (hint, _) = d.size_hint(i.size).ok()?;
                Some(hint.need()).filter(|&n| n > 0)
            }
        }
    }
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
    wait_for_network(&ctx, ui);
    let mut net = Net::refresh(&ctx);
    if ctx.manifest.auto.is_some() {
        return unattended(&ctx, &net, ui);
    }
    interactive(&ctx, &mut net, ui)
}

/// With a server key, give DHCP (started in the background by /init) up
/// to `--network-wait` seconds to bring a lease, so the first menu can
/// list the server's images; Enter skips.
fn wait_for_network(ctx: &Ctx, ui: &mut Ui) {
    if ctx.manifest.key.is_none() || ctx.args.network_wait == 0 {
        return;
    }
    let lease = &ctx.args.dhcp_env;
    if lease.exists() {
        return;
    }
    ui.say(format!(
        "waiting for the network ... (up to {} s; Enter skips)",
        ctx.args.network_wait
    ));
    let until = Instant::now() + Duration::from_secs(ctx.args.network_wait);
    while Instant::now() < until {
        if ui.line_within(Duration::from_millis(250)) {
            ui.say("not waiting for the network");
            return;
        }
        if lease.exists() {
            ui.say("network up");
            return;
        }
    }
    ui.say("no DHCP lease yet: going on without waiting");
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

/// What was typed at the image menu.
enum Picked {
    Image(usize),
    Retry,
}

/// A number from 1 to `n`, or `r` (retry the server) when `retry`.
fn pick_image(ui: &mut Ui, n: usize, retry: bool) -> Result<Picked> {
    let prompt = if retry {
        "Image number (r to retry the server, q to quit):"
    } else {
        "Image number (q to quit):"
    };
    loop {
        let Some(answer) = ui.ask(prompt) else {
            bail!("the consoles closed: nothing written");
        };
        match answer.as_str() {
            "q" | "quit" => bail!("quit: nothing written"),
            "r" | "retry" if retry => return Ok(Picked::Retry),
            a => match a.parse::<usize>() {
                Ok(i) if (1..=n).contains(&i) => return Ok(Picked::Image(i - 1)),
                _ => ui.say(format!(
                    "type a number from 1 to {n}{}, or q to quit",
                    if retry { ", r to retry the server" } else { "" }
                )),
            },
        }
    }
}

fn interactive(ctx: &Ctx, net: &mut Net, ui: &mut Ui) -> Result<ExitCode> {
    let key = ctx.manifest.key.is_some();
    if ctx.manifest.images.is_empty() && !key {
        bail!(Refused(
            "the stick has no images: rebuild it with `bty-lab usb build`".into()
        ));
    }
    loop {
        let choices: Vec<Choice> = ctx
            .manifest
            .images
            .iter()
            .map(Choice::Stick)
            .chain(net.images.iter().map(Choice::Server))
            .collect();
        ui.say("\nImages on the stick:");
        let mut n = 0;
        for img in &ctx.manifest.images {
            n += 1;
            ui.say(format!("  {n}) {}", image_line(img)));
        }
        if ctx.manifest.images.is_empty() {
            ui.say("  (none)");
        }
        if let Some(s) = &net.server {
            ui.say(format!("Images on {}:", s.url));
            for img in &net.images {
                n += 1;
                ui.say(format!("  {n}) {}", Choice::Server(img).line()));
            }
        }
        if let Some(note) = &net.note {
            ui.say(note);
        }
        if choices.is_empty() {
            // Only a server could give images: nothing to pick but r.
            ui.say("no image to flash yet");
        }
        let i = match pick_image(ui, choices.len(), key)? {
            Picked::Retry => {
                ui.say("asking the server again ...");
                *net = Net::refresh(ctx);
                continue;
            }
            Picked::Image(i) => i,
        };
        let Some(img) = choices.get(i).copied() else {
            continue;
        };
        let Some(disk) = choose_disk(ctx, ui, img, img.need(ctx, net))? else {
            continue;
        };
        match flash(ctx, net, ui, img, &disk) {
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
fn choose_disk(ctx: &Ctx, ui: &mut Ui, img: Choice, need: Option<u64>) -> Result<Option<Disk>> {
    loop {
        let fit = show_disks(ctx, ui, img, need);
        if fit.is_empty() {
            ui.say("no disk on this machine can take this image");
            return Ok(None);
        }
        let prompt = "Disk number (b to go back, q to quit):";
        let Some(i) = pick(ui, prompt, fit.len(), true)? else {
            return Ok(None);
        };
        let Some(disk) = fit.get(i) else { continue };
        if confirm(ui, img.name(), disk)? {
            return Ok(Some(disk.clone()));
        }
    }
}

/// List the disks for `img`: those that can take it, numbered, and the
/// ones never offered with why; returns the numbered ones.
fn show_disks(ctx: &Ctx, ui: &mut Ui, img: Choice, need: Option<u64>) -> Vec<Disk> {
    let (fit, small): (Vec<Disk>, Vec<Disk>) = ctx
        .disks()
        .into_iter()
        .partition(|d| need.is_none_or(|n| d.size >= n));
    ui.say(format!("\nDisks for {}:", img.name()));
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
fn confirm(ui: &mut Ui, img: &str, disk: &Disk) -> Result<bool> {
    ui.say(format!(
        "\nThis ERASES /dev/{} ({}, {}) and writes {} onto it.",
        disk.name,
        human(disk.size),
        disk.model.as_deref().unwrap_or("no model"),
        img
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

/// Flash `img` onto `disk` with the progress bar, telling the server
/// (when there is one) so a registered machine's page shows it.
fn flash(ctx: &Ctx, net: &Net, ui: &mut Ui, img: Choice, disk: &Disk) -> Result<(), Failed> {
    let mut wrote = false;
    let reporter = net
        .server
        .as_ref()
        .and_then(|s| report_start(ctx, s, ui, img, disk));
    let started = Instant::now();
    let result = flash_inner(ctx, net, ui, img, disk, reporter.as_ref(), &mut wrote);
    if let Some((rep, token)) = reporter {
        let report = match &result {
            Ok(sha256) => DoneReport {
                token,
                ok: true,
                reason: None,
                sha256: Some(sha256.clone()),
                duration_s: Some(started.elapsed().as_secs_f64()),
            },
            Err(e) => DoneReport {
                token,
                ok: false,
                reason: Some(format!("{e:#}").chars().take(500).collect()),
                sha256: None,
                duration_s: None,
            },
        };
        // A few tries: the flash's outcome does not depend on the report.
        if let DoneOutcome::GaveUp(why) = rep.done_within(&report, 4) {
            ui.say(format!(
                "could not tell the server the flash ended ({why}); the disk is as said above"
            ));
        }
    }
    result.map(|_| ()).map_err(|error| Failed { error, wrote })
}

/// `POST /stick/flash`, and the reporter for the cycle it starts; one
/// line when the flash is not recorded (it goes on regardless).
fn report_start(
    ctx: &Ctx,
    server: &Server,
    ui: &mut Ui,
    img: Choice,
    disk: &Disk,
) -> Option<(Reporter, String)> {
    let (source, format, sha256, size) = match img {
        Choice::Stick(i) => (
            ImageSource::Stick,
            i.format,
            i.stored_sha256.clone(),
            i.stored_size,
        ),
        Choice::Server(i) => (ImageSource::Server, i.format, i.sha256.clone(), i.size),
    };
    let body = FlashStart {
        macs: macs(ctx),
        image: img.name().to_string(),
        source,
        format,
        sha256: sha256.to_ascii_lowercase(),
        size,
        target_serial: disk.serial.clone().unwrap_or_else(|| disk.name.clone()),
    };
    match server.start(&body) {
        Started::Recorded(s) => {
            ui.say(format!(
                "recording this flash in bty-web at {} (machine {}, cycle {})",
                server.url, s.mac, s.cycle
            ));
            let channel = Channel {
                progress: s.report.progress,
                done: s.report.done,
                token: s.token.clone(),
            };
            let rep = Reporter::start(
                server.http.clone(),
                channel,
                ctx.console.clone(),
                Duration::from_millis(500),
            );
            Some((rep, s.token))
        }
        Started::NotRegistered => {
            ui.say(format!(
                "this machine is not registered in bty-web at {}: the flash is not recorded there",
                server.url
            ));
            None
        }
        Started::Failed(why) => {
            ui.say(format!(
                "could not record this flash in bty-web at {} ({why}): flashing anyway",
                server.url
            ));
            None
        }
    }
}

/// The MACs to tell the server: `--macs`, else every NIC's.
fn macs(ctx: &Ctx) -> Vec<Mac> {
    match &ctx.args.macs {
        Some(list) => list
            .split(',')
            .filter_map(|m| m.trim().parse().ok())
            .collect(),
        None => server::macs(&ctx.host.sys),
    }
}

/// The flash itself; the read-back sha256 when verified.
fn flash_inner(
    ctx: &Ctx,
    net: &Net,
    ui: &mut Ui,
    img: Choice,
    disk: &Disk,
    reporter: Option<&(Reporter, String)>,
    wrote: &mut bool,
) -> Result<String> {
    let name = img.name();
    ui.say(format!("flashing {name} onto /dev/{}", disk.name));
    let expect;
    let (source, job_remote) = match img {
        Choice::Stick(i) => (stick::file_of(&ctx.args.stick, i)?, None),
        Choice::Server(i) => {
            let server = net
                .server
                .as_ref()
                .context("the server that listed this image is gone")?;
            expect = Expected::named(&i.name, Some(&i.sha256), Some(i.size))?;
            (
                PathBuf::from(&i.url),
                Some(Remote {
                    http: &server.http,
                    url: &i.url,
                    expect: &expect,
                    retry: Retry::default(),
                }),
            )
        }
    };
    let mut job = LocalJob::new(&source, format_of(img), &disk.path, ctx.console);
    if let Choice::Stick(i) = img {
        job.expect_stored_sha256 = Some(&i.stored_sha256);
        job.expect_sha256 = i.sha256.as_deref();
        job.expect_size = i.size;
    }
    job.remote = job_remote;
    job.reporter = reporter.map(|(r, _)| r);
    ui.start_progress();
    let out = local::flash_on(&ctx.host, &job, &mut |p| {
        *wrote |= p.writing;
        ui.progress(p)
    })
    .with_context(|| format!("flashing {name} onto /dev/{}", disk.name))?;
    ui.say(format!(
        "verified: {} written to /dev/{} in {:.1}s, read-back sha256 {}",
        human(out.bytes),
        disk.name,
        out.duration.as_secs_f64(),
        out.sha256
    ));
    Ok(out.sha256)
}

fn format_of(img: Choice) -> ImageFormat {
    match img {
        Choice::Stick(i) => i.format,
        Choice::Server(i) => i.format,
    }
}

fn unattended(ctx: &Ctx, net: &Net, ui: &mut Ui) -> Result<ExitCode> {
    let Some(auto) = &ctx.manifest.auto else {
        bail!("unattended without an auto section");
    };
    ui.say(format!(
        "unattended: {} onto the disk with serial {}, then {}",
        auto.image,
        auto.disk_serial,
        after_word(auto.after)
    ));
    if let Some(note) = &net.note {
        ui.say(note);
    }
    // A stick image wins; else the server's of that name.
    let img = ctx
        .manifest
        .images
        .iter()
        .find(|i| i.name == auto.image)
        .map(Choice::Stick)
        .or_else(|| {
            net.images
                .iter()
                .find(|i| i.name == auto.image)
                .map(Choice::Server)
        })
        .with_context(|| {
            format!(
                "image {:?} is neither on the stick nor in a reachable bty-web's catalog",
                auto.image
            )
        })
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
    if let Some(need) = img.need(ctx, net) {
        if need > disk.size {
            bail!(Refused(format!(
                "{} needs {} but /dev/{} has {}",
                img.name(),
                human(need),
                disk.name,
                human(disk.size)
            )));
        }
    }
    ui.say(format!("target: {}", disk_line(disk)));
    if let Err(f) = flash(ctx, net, ui, img, disk) {
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
