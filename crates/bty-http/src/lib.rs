//! The HTTP plumbing bty-web and withcache share, on axum.
//!
//! Both servers have an operator UI, a JSON API and a few open endpoints,
//! and both want the same rules for them; each rule lives here once:
//!
//! - [`auth`]: the [`Gate`] in front of a service's API and UI (HTTP
//!   Basic, the session cookie, optionally a service token; the Origin
//!   check), the [`Caller`] extractor, the login flow (`/ui/login`,
//!   `/ui/logout`) and [`safe_next`], the one rule for where a login may
//!   lead.
//! - [`ui`]: the page shell's [`Layout`], a service's [`Templates`] (the
//!   minijinja environment with `bty-ui-kit`'s shell, macros, login and
//!   error pages), whole pages and error pages, and the static assets with
//!   the favicon.
//! - [`request_id`]: an `X-Request-Id` on every request and response, a
//!   tracing span per request (tower-http's `TraceLayer`), and the id of
//!   the request being handled for error bodies and pages.
//! - [`error`]: the JSON error body (`bty_proto::ErrorBody`, with the
//!   request id) of `/api`-style routes.
//! - [`range`]: `Range: bytes=` for files and blobs.
//! - [`encode`]: percent-encoding for query values.
//! - [`metrics`]: the Prometheus text format.
//! - [`serve`]: the accept loop both servers' `serve()` run: connection
//!   caps (in all and per client), the request-head timeout (hyper with a
//!   timer), the stalled-write timeout and the request-body backstop.
//!
//! Layering: `bty-proto` (wire types) and `bty-auth` (the account, no
//! framework) and `bty-ui-kit` (the look, no framework) sit below; this
//! crate is the only one of the four that knows axum. Nothing here knows
//! machines, images or blobs.
#![deny(missing_docs)]
// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod auth;
pub mod encode;
pub mod error;
mod login;
pub mod metrics;
pub mod range;
pub mod request_id;
pub mod serve;
pub mod ui;

pub use auth::{safe_next, Caller, Gate};
pub use error::JsonError;
pub use request_id::RequestId;
pub use ui::{Brand, Layout, Site, Templates};
