//! The container engine: the [`ContainerEngine`] trait, what bty-lab's
//! commands ask of Docker or Podman, in the engine's own terms (images,
//! networks, containers, logs), knowing nothing of deploys. [`Bollard`]
//! implements it over the engine's HTTP API (Docker's socket or Podman's
//! Docker-compatible one), never by running `docker`/`podman`; [`connect`]
//! finds the socket. Tests use the in-memory `fake::Fake`.
//!
//! What a deploy makes of these calls (names, labels, health, the stack's
//! order) is [`crate::containers`], [`crate::health`] and
//! [`crate::images`].

pub mod connect;
mod docker;
#[cfg(test)]
pub mod fake;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use connect::{connect_for, try_connect};
pub use docker::{split_ref, Bollard};

/// Which engine answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Docker,
    Podman,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
        })
    }
}

/// The engine a deploy ran on, recorded in DEST's manifest (`[engine]`)
/// so later commands go to the same one without `--engine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub kind: Kind,
    /// Socket path or URL, as connected to.
    pub addr: String,
}

/// An engine call that failed: the engine's own words, and whether it
/// said "no such thing" (a 404), which callers that tolerate absence test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub not_found: bool,
    pub message: String,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            not_found: false,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error {
            not_found: true,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An image in the engine: what `--images auto` judges it by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub labels: HashMap<String, String>,
    /// `repo@sha256:...` for each registry it was pulled from.
    pub repo_digests: Vec<String>,
}

/// What a container is created from. Every container restarts unless
/// stopped, and runs `health_cmd` as its health check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub image: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// `host`, or the bridge network the container joins.
    pub network_mode: String,
    /// The container port (`8080/tcp`) published on a host port.
    pub publish: Option<(String, u16)>,
    /// `host path:container path[:ro]`.
    pub binds: Vec<String>,
    /// The health check, run without a shell.
    pub health_cmd: Vec<String>,
}

/// What inspecting a container tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// running, exited, created, restarting, stopped (Podman), ...
    pub status: String,
    /// The engine's health status (`healthy`, `starting`, ...) or "".
    pub health: String,
    pub restarts: i64,
    pub image: String,
    pub labels: HashMap<String, String>,
}

/// A container in a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// Without the leading `/` Docker puts there.
    pub name: String,
    /// running, exited, ...
    pub state: String,
}

/// Pull progress: bytes done and bytes in all, over the layers seen.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// What bty-lab's commands need of a container engine. Every future is
/// `Send`, so callers may spawn them.
pub trait ContainerEngine: Sync {
    /// Docker or Podman.
    fn kind(&self) -> Kind;
    /// The engine's version (`24.0.7`, `4.3.1`).
    fn version(&self) -> &str;
    /// Where it was reached (socket path or URL), for messages.
    fn addr(&self) -> &str;

    /// What a deploy records about this engine.
    fn remembered(&self) -> Remembered {
        Remembered {
            kind: self.kind(),
            addr: self.addr().to_string(),
        }
    }

    /// The image tagged `r`, or None.
    fn inspect_image(&self, r: &str) -> impl Future<Output = Result<Option<Image>>> + Send;

    /// Pull `r`, reporting `progress`; give up when nothing comes for
    /// `stall`. Done only when the engine then holds `r`.
    fn pull_image(
        &self,
        r: &str,
        progress: Progress<'_>,
        stall: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Build `tag` from a tar `context` holding `Containerfile`, with
    /// `labels`. The error is the whole sentence ("building TAG: ...",
    /// with the build's last lines).
    fn build_image(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn remove_image(&self, r: &str) -> impl Future<Output = Result<()>> + Send;

    /// The labels of network `name`, or None when there is none.
    fn inspect_network(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<HashMap<String, String>>>> + Send;

    /// Create bridge network `name` with `labels`.
    fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn remove_network(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    fn create_container(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<()>> + Send;

    fn start_container(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Remove a container (by name or id) and its anonymous volumes,
    /// stopping it first.
    fn remove_container(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// The container named `name`, or None.
    fn inspect_container(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Container>>> + Send;

    /// Every container (running or not) carrying `label` (`key=value`).
    fn list_containers(&self, label: &str) -> impl Future<Output = Result<Vec<Listed>>> + Send;

    /// Run `cmd` in container `name`; true when it exits 0. Podman without
    /// systemd runs no health timers, so bty-lab probes by hand.
    fn exec_ok(&self, name: &str, cmd: &[String]) -> impl Future<Output = bool> + Send;

    /// The log of `name` from `tail` lines before the end (`all`), stdout
    /// and stderr together; with `follow`, until the container stops.
    fn logs(&self, name: &str, tail: &str, follow: bool) -> BoxStream<'_, Result<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_spells_the_engine_in_lowercase() {
        let r = Remembered {
            kind: Kind::Docker,
            addr: "/var/run/docker.sock".into(),
        };
        let t = toml::to_string(&r).unwrap();
        assert!(t.contains("kind = \"docker\""), "{t}");
        assert_eq!(toml::from_str::<Remembered>(&t).unwrap(), r);
    }
}
