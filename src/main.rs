//! `bty-lab`: the operator's CLI. Parse, then dispatch to one module per
//! subcommand; the engine is reached only through its API (bollard).

mod cli;
mod cmd;
mod deploydir;
mod engine;
mod hostaddr;
mod http;
mod internal;
mod netboot;
mod quadlet;
mod render;
mod secrets;
mod services;
mod stack;
mod ui;

use clap::{CommandFactory as _, Parser as _};

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bty-lab: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Init(a) => cmd::init::run(a),
            Command::Deploy(a) => cmd::deploy::run(a).await,
            Command::Upgrade(a) => cmd::upgrade::run(a).await,
            Command::Passwd(a) => cmd::passwd::run(a).await,
            Command::Purge(a) => cmd::purge::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Logs(a) => cmd::logs::run(a).await,
            Command::Serve(a) => cmd::serve::run(a).await,
            Command::Image(c) => cmd::image::run(c).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "bty-lab",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Command::Internal(i) => internal::run(i).await,
        }
    });
    if let Err(e) = r {
        eprintln!("bty-lab: {e:#}");
        std::process::exit(1);
    }
}
