//! The `bty` agent: runs inside the netboot environment on a target machine,
//! asks bty-web for its plan, streams the image onto the chosen disk,
//! verifies what landed there, reports, and reboots.
//!
//! The modules follow the flow of one cycle:
//! [`cmdline`] → [`inventory`] → [`plan`] → [`target`] → [`source`] →
//! [`decompress`] / [`qcow2`] → [`write`] → [`verify`] → [`report`], with
//! [`flash`] running the steps in order. [`cli`] is the command line (the
//! `bty` binary and bty-lab's multicall both enter there); [`clock`] sets
//! the system clock from bty-web's `Date` header. [`wizard`] is the other
//! way in: `bty wizard` flashes from a USB stick at the machine's console
//! (docs/wizard.md).

// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod cli;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod decompress;
mod error;
pub mod flash;
pub mod inventory;
pub mod local;
pub mod net;
pub mod plan;
pub mod qcow2;
pub mod report;
pub mod source;
pub mod target;
pub mod verify;
pub mod wizard;
pub mod write;

pub use error::{Error, Result};

/// The agent's version (the workspace version: bty-lab carries the same).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bytes at the start of the image held in memory until everything else is
/// written and verified: the MBR, the primary GPT and the usual gap before
/// the first partition. Until they land, the disk does not boot.
pub const HOLD_BACK: u64 = 1 << 20;

/// Size of one write (and read-back) buffer.
pub const BLOCK: usize = 4 << 20;
