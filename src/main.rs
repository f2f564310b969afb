//! `bty-lab`: the operator's CLI. Parse, then dispatch to one module per
//! subcommand; the engine is reached only through its API (bollard).
//!
//! Also the netboot agent: invoked under the name `bty` (the initramfs
//! carries this binary as `/bin/bty`) or as `bty-lab agent ...`, it runs
//! [`bty_agent::cli::main`] before any of bty-lab's own parsing.

mod cli;
mod cmd;
mod containers;
mod deploydir;
mod elf;
mod engine;
mod envvars;
mod exit;
mod health;
mod hostaddr;
mod http;
mod images;
mod internal;
mod kube;
mod manifest;
mod media;
mod ports;
mod quadlet;
mod render;
mod safefs;
mod secrets;
mod services;
mod stack;
mod ui;
mod usb;
mod webapi;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};

use cli::{Cli, Command};

/// Was this binary started as the agent (`argv[0]`'s file name is `bty`)?
fn invoked_as_agent(argv0: Option<&OsString>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "bty")
}

fn main() -> ExitCode {
    if invoked_as_agent(std::env::args_os().next().as_ref()) {
        return bty_agent::cli::main(std::env::args_os());
    }
    // The agent, the media and the usb commands are synchronous: no runtime.
    match Cli::parse().command {
        Command::Agent { args } => {
            let argv0 = OsString::from("bty-lab agent");
            bty_agent::cli::main(std::iter::once(argv0).chain(args))
        }
        Command::Media(m) => exit(cmd::media::run(m)),
        Command::Flash(a) => exit(cmd::flash::run(a)),
        Command::Usb(u) => exit(cmd::usb::run(u)),
        command => match tokio::runtime::Runtime::new() {
            Ok(rt) => exit(rt.block_on(run(command))),
            Err(e) => {
                eprintln!("bty-lab: starting the async runtime: {e}");
                exit::Code::Failure.into()
            }
        },
    }
}

/// Dispatch a command that runs on the async runtime.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(a) => cmd::init::run(a),
        Command::Deploy(a) => cmd::deploy::run(a).await,
        Command::Upgrade(a) => cmd::upgrade::run(a).await,
        Command::Passwd(a) => cmd::passwd::run(a).await,
        Command::Purge(a) => cmd::purge::run(a).await,
        Command::Status(a) => cmd::status::run(a).await,
        Command::Logs(a) => cmd::logs::run(a).await,
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Backup(a) => cmd::backup::run(a),
        Command::Restore(a) => cmd::backup::restore::run(a).await,
        Command::Image(c) => cmd::image::run(c).await,
        Command::Machines(c) => cmd::machines::run(c).await,
        Command::Completions { shell } => {
            let out = &mut std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "bty-lab", out);
            Ok(())
        }
        Command::Internal(i) => internal::run(i).await,
        Command::Agent { .. } | Command::Media(_) | Command::Flash(_) | Command::Usb(_) => {
            unreachable!("dispatched in main")
        }
    }
}

/// Print the error chain, if any; the exit code it means (crate::exit).
fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => exit::Code::Ok.into(),
        Err(e) => {
            eprintln!("bty-lab: {e:#}");
            exit::code_of(&e).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_by_file_name_only() {
        let yes = |a: &str| invoked_as_agent(Some(&OsString::from(a)));
        assert!(yes("bty") && yes("/bin/bty") && yes("./bty"));
        assert!(!yes("bty-lab") && !yes("/usr/bin/bty-lab") && !yes("/bty/x"));
        assert!(!invoked_as_agent(None));
    }
}
