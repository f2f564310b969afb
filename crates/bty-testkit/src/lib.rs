//! The fixtures bty's tests share, in one place.
//!
//! A dev-dependency of the product crates (never a dependency: nothing here
//! ships). Every fixture is the real thing on 127.0.0.1, port 0:
//!
//! - [`tools`]: the tool gate. A test that needs an external tool (qemu,
//!   curl, chromedriver) skips without it, and fails under
//!   `BTY_REQUIRE_TOOLS=1`.
//! - [`data`]: deterministic test bytes and their sha256.
//! - [`poll`]: wait until a condition holds, with a deadline.
//! - [`origin`]: an image origin with fault injection (drop after N bytes,
//!   stall, a short body under a longer `Content-Length`, content that
//!   changes between requests, Range on or off) that records every
//!   request.
//! - [`fake_web`]: a stand-in bty-web for the agent's tests: it serves the
//!   plan a test sets and takes the agent's reports only if they parse as
//!   `bty-proto`'s types, so an agent that drifts from the contract fails.
//! - `client` (feature `client`): the HTTP helpers both servers' tests use,
//!   and [`sse`], a reader for `text/event-stream` answers.
//! - `web` (feature `web`): a real bty-web ([`web::Web`]) and its client,
//!   typed on `bty-proto` ([`web::WebClient`]), and [`web::SimAgent`], an
//!   agent that walks a flash cycle over the real PXE endpoints.
//! - `cache` (feature `cache`): a real withcache ([`cache::Cache`]) and its
//!   client.
//! - `browser` (feature `browser`): chromedriver, headless Chromium and the
//!   page helpers the UI tests use.
//! - `pg` (feature `pg`): a private PostgreSQL 15 per test process and a
//!   fresh database per call (`pg::fresh_database`).
//!
//! `bty-dev-web` (feature `web`) runs a real bty-web with one machine set
//! to flash one image, for checks by hand such as `media/boot-test.sh`.
//! See docs/testing.md.
#![deny(missing_docs)]

pub mod data;
pub mod fake_web;
pub mod origin;
pub mod poll;
pub mod tools;

#[cfg(feature = "browser")]
pub mod browser;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "client")]
pub mod sse;
#[cfg(feature = "web")]
pub mod web;

pub use data::{data, sha256_hex};

/// Stop a server the kit started in a task: signal it, wait for it, and
/// fail the test if it ended with an error or panicked (`what` names it).
pub async fn stop_server(
    what: &str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    if let Some(tx) = stop {
        let _ = tx.send(());
    }
    if let Some(t) = task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what} failed: {e:#}"),
            Err(e) => panic!("{what}'s task: {e}"),
        }
    }
}
pub use origin::{Fault, Origin};
