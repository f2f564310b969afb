//! `bty`: the agent's command line; everything is in [`bty_agent::cli`].

// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::process::ExitCode;

fn main() -> ExitCode {
    bty_agent::cli::main(std::env::args_os())
}
