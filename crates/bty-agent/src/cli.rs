//! The agent's command line: reads the inputs, loops over plans, and
//! reboots. The flow of one flash lives in [`crate::flash`].
//!
//! [`main`] is the entry point of every binary that runs the agent: the `bty`
//! bin of this crate, and bty-lab, which runs it as `bty-lab agent ...` and
//! when invoked under the name `bty` (the netboot initramfs carries bty-lab
//! as `/bin/bty`, so one version names everything a machine runs).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bty_proto::plan::{DoneReport, PlanMode};
use clap::Parser;

use crate::clock::ClockSync;
use crate::console::Console;
use crate::flash::{self, Destination, Job};
use crate::plan::{self, Endpoints};
use crate::report::{Channel, Reporter};
use crate::source::Retry;
use crate::target::Host;
use crate::{cmdline, inventory, net};

/// Flash this machine from its bty plan.
#[derive(Parser, Debug)]
#[command(name = "bty", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// Without a subcommand: flash from bty-web's plan.
    #[command(subcommand)]
    command: Option<Command>,
    /// bty-web base URL (default: `bty.server=` on the kernel command line).
    #[arg(long)]
    server: Option<String>,
    /// This machine's MAC (default: `bty.mac=` on the kernel command line).
    #[arg(long)]
    mac: Option<String>,
    /// Test seam: write into this regular file instead of a disk.
    #[arg(long, conflicts_with = "target_device")]
    target_file: Option<PathBuf>,
    /// Test seam: write to this block device (`loop0` or `/dev/loop0`)
    /// instead of the disk with the plan's serial; still refused if in use.
    #[arg(long)]
    target_device: Option<String>,
    /// Do not reboot; exit instead (0 after a good flash or exit/inventory).
    #[arg(long)]
    no_reboot: bool,
    /// Handle one plan and exit (1 if the flash failed, 2 if there was
    /// nothing to do).
    #[arg(long)]
    once: bool,
    /// sysfs root (test seam).
    #[arg(long, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// procfs root (test seam).
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// Seconds without a byte before a download resumes.
    #[arg(long, default_value_t = 30)]
    stall_timeout: u64,
    /// Seconds to wait before asking for a new plan after a failure or a
    /// plan with nothing to do.
    #[arg(long, default_value_t = 30)]
    retry_delay: u64,
    /// First backoff of retried requests, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    backoff_ms: u64,
    /// Extra consoles for status lines (default: /dev/tty1 and /dev/ttyS0,
    /// none when writing to --target-file).
    #[arg(long = "console")]
    consoles: Vec<PathBuf>,
    /// Step the system clock to the `Date` of the first successful answer
    /// from bty-web when it is more than 2 s off (the netboot environment
    /// has no NTP and firmware clocks drift). A failure is a warning.
    #[arg(long)]
    set_clock: bool,
}

/// What else the agent does.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Flash this machine from a bty USB stick, at its console (what the
    /// netboot environment runs under `bty.mode=wizard`).
    Wizard(crate::wizard::Args),
}

/// Run the agent with `args` (the first item is the program name, as in
/// `std::env::args_os()`); returns the process exit code.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            // --help and --version land here too (exit code 0).
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if let Some(Command::Wizard(w)) = &args.command {
        return crate::wizard::main(w);
    }
    let consoles = if !args.consoles.is_empty() {
        args.consoles.clone()
    } else if args.target_file.is_some() {
        Vec::new()
    } else {
        vec!["/dev/tty1".into(), "/dev/ttyS0".into()]
    };
    let console = Console::new(&consoles);
    console.line(format!("entered v{}", env!("CARGO_PKG_VERSION")));
    let code = match run(&args, &console) {
        Ok(code) => code,
        Err(e) => {
            console.line(format!("error: {e:#}"));
            ExitCode::from(1)
        }
    };
    console.line(format!("exiting v{}", env!("CARGO_PKG_VERSION")));
    code
}

fn run(args: &Args, console: &Console) -> anyhow::Result<ExitCode> {
    let kernel = std::fs::read_to_string(args.proc_root.join("cmdline"))
        .map(|c| cmdline::parse(&c))
        .unwrap_or_default();
    let server = args
        .server
        .as_deref()
        .map(cmdline::normalise_server)
        .or(kernel.server)
        .context("no server: pass --server or boot with bty.server= on the kernel command line")?;
    let mac = args
        .mac
        .clone()
        .or(kernel.mac)
        .context("no MAC: pass --mac or boot with bty.mac= on the kernel command line")?;
    let mut http = net::builder(net::Timeouts {
        connect: Duration::from_secs(10),
        stall: Duration::from_secs(args.stall_timeout),
    });
    if args.set_clock {
        http = http.middleware(ClockSync::new(&server, console.clone()));
    }
    let http = http.build();
    let ep = Endpoints { server, mac };
    let host = Host {
        sys: args.sysfs_root.clone(),
        proc: args.proc_root.clone(),
        dev: "/dev".into(),
    };
    let dest = match (&args.target_file, &args.target_device) {
        (Some(f), _) => Destination::File(f.clone()),
        (None, Some(d)) => {
            Destination::Device(host.clone(), d.trim_start_matches("/dev/").to_string())
        }
        (None, None) => Destination::Serial(host.clone()),
    };
    let backoff = Duration::from_millis(args.backoff_ms);
    let retry = Retry {
        base: backoff / 2,
        ..Retry::default()
    };
    console.line(format!("server {} mac {}", ep.server, ep.mac));

    plan::post_inventory(&http, &ep, &inventory::collect(&host.sys), console);
    loop {
        let plan = plan::fetch(&http, &ep, console, Duration::from_secs(30));
        let why = plan
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        match plan.mode {
            PlanMode::Exit | PlanMode::Inventory => {
                console.line(format!("plan: {:?}{why}; rebooting", plan.mode).to_lowercase());
                return reboot(args, console, ExitCode::SUCCESS);
            }
            PlanMode::Flash => {
                let (Some(token), Some(urls)) = (plan.token.clone(), plan.report.clone()) else {
                    console.line(
                        "flash plan without a token or report URLs: cannot report, not flashing",
                    );
                    if args.once {
                        return Ok(ExitCode::from(1));
                    }
                    std::thread::sleep(Duration::from_secs(args.retry_delay));
                    continue;
                };
                console.line("auto-flash starting");
                let channel = Channel {
                    progress: urls.progress,
                    done: urls.done,
                    token: token.clone(),
                };
                let rep = Reporter::start(http.clone(), channel, console.clone(), backoff);
                let job = Job {
                    http: &http,
                    console,
                    dest: &dest,
                    retry,
                };
                let result = flash::run(&job, &plan, &rep);
                let report = match &result {
                    Ok(o) => DoneReport {
                        token,
                        ok: true,
                        reason: None,
                        sha256: Some(o.sha256.clone()),
                        duration_s: Some(o.duration.as_secs_f64()),
                    },
                    Err(e) => DoneReport {
                        token,
                        ok: false,
                        reason: Some(e.to_string().chars().take(500).collect()),
                        sha256: None,
                        duration_s: None,
                    },
                };
                if let Err(e) = &result {
                    console.line(format!("flash failed: {e}"));
                }
                rep.done(&report);
                if result.is_ok() {
                    console.line("flash complete; rebooting");
                    return reboot(args, console, ExitCode::SUCCESS);
                }
                if args.once {
                    return Ok(ExitCode::from(1));
                }
                console.line(format!("asking for a new plan in {}s", args.retry_delay));
            }
            PlanMode::Interactive | PlanMode::Unknown => {
                console.line(format!(
                    "plan mode {:?}{why}: nothing this agent does unattended; asking again in {}s",
                    plan.mode, args.retry_delay
                ));
                if args.once {
                    return Ok(ExitCode::from(2));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(args.retry_delay));
    }
}

/// sync, then the reboot syscall (or exit with `code` under --no-reboot).
fn reboot(args: &Args, console: &Console, code: ExitCode) -> anyhow::Result<ExitCode> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    if args.no_reboot {
        return Ok(code);
    }
    // SAFETY: reboot(2) with RB_AUTOBOOT; on success it does not return.
    let rc = unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    let err = std::io::Error::last_os_error();
    console.line(format!("reboot failed: {err}"));
    if rc != 0 {
        bail!("reboot: {err}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn set_clock_parses_and_bad_flags_exit_2() {
        let a = Args::try_parse_from(["bty", "--set-clock", "--once"]).unwrap();
        assert!(a.set_clock && a.once);
        assert!(!Args::try_parse_from(["bty"]).unwrap().set_clock);
        assert_eq!(main(["bty", "--no-such-flag"]), ExitCode::from(2));
        assert_eq!(main(["bty", "--version"]), ExitCode::SUCCESS);
    }
}
