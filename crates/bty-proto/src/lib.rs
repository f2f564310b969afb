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
//! - [`relay`]: the Secure Boot chain's TFTP names that bty-tftp relays
//!   to bty-web, and the headers that carry the client's address.
//! - [`stick`]: the USB stick's manifest and layout, between `bty-lab usb
//!   build` and the agent's wizard.
//! - [`text`]: the strict character sets for strings that reach an iPXE
//!   script or a kernel command line.
//!
//! This crate depends only on serde (and base64 and percent-encoding for
//! the blob URL) because the static agent links it too.
#![deny(missing_docs)]
// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod catalog;
pub mod inventory;
mod mac;
mod mode;
pub mod plan;
pub mod relay;
pub mod stick;
pub mod text;

pub use catalog::{CatalogEntry, ImageFormat};
pub use mac::{Mac, MacError};
pub use mode::{BootMode, UnknownBootMode};

use serde::{Deserialize, Serialize};

/// The body of every error response of bty-web's and withcache's JSON
/// APIs: `{"error": "...", "request_id": "..."}`.
///
/// `request_id` is the request's `X-Request-Id` (also in the response
/// header and in the server's log lines for that request), so an operator
/// can quote it. It is optional both ways: a body from an older server
/// without it still parses, and none is sent when there is no id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and where possible what to do about it.
    pub error: String,
    /// The request's id, as in its `X-Request-Id` response header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    /// A body with `error` and no request id.
    pub fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            request_id: None,
        }
    }
}

/// Version of the plan and report format served by this build.
pub const PLAN_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::ErrorBody;

    #[test]
    fn error_body_request_id_is_optional_both_ways() {
        let old: ErrorBody = serde_json::from_str(r#"{"error":"no"}"#).unwrap();
        assert_eq!(old, ErrorBody::new("no"));
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"error":"no"}"#);
        let new = ErrorBody {
            request_id: Some("abc".into()),
            ..ErrorBody::new("no")
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(text, r#"{"error":"no","request_id":"abc"}"#);
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), new);
    }
}
