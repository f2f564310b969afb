//! The wire contract of bty.
//!
//! Everything that crosses a process boundary between bty-web, withcache,
//! the `bty` agent and the `bty-lab` CLI is defined here, so both sides of
//! every exchange compile against the same types:
//!
//! - [`Mac`]: parsing and normalising hardware addresses.
//! - [`BootMode`]: what a machine's later PXE contacts do.
//! - [`plan`]: the JSON plan the agent fetches and the reports it posts.
//! - [`inventory`]: what the agent reports about the hardware it runs on.
//! - [`catalog`]: image catalog entries and the withcache blob key.
//! - [`text`]: the strict character sets for strings that reach an iPXE
//!   script or a kernel command line.
//!
//! This crate depends only on serde (and base64 for the blob key) because the
//! static agent links it too.
#![deny(missing_docs)]

pub mod catalog;
pub mod inventory;
mod mac;
mod mode;
pub mod plan;
pub mod text;

pub use catalog::{CatalogEntry, ImageFormat};
pub use mac::{Mac, MacError};
pub use mode::{BootMode, UnknownBootMode};

use serde::{Deserialize, Serialize};

/// The body of every error response of bty-web and withcache:
/// `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and where possible what to do about it.
    pub error: String,
}

/// Version of the plan and report format served by this build.
pub const PLAN_VERSION: u32 = 1;
