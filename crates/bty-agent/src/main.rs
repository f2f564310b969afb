//! `bty`: the agent's command line; everything is in [`bty_agent::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    bty_agent::cli::main(std::env::args_os())
}
