//! The container engine, reached only through its HTTP API with bollard
//! (Docker's socket or Podman's Docker-compatible one); never by running
//! `docker`/`podman`.

pub mod containers;
pub mod images;
pub mod ports;

use anyhow::{bail, Result};
use bollard::Docker;

use crate::cli::EngineChoice;

/// Which engine answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docker,
    Podman,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
        })
    }
}

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub api: Docker,
    pub kind: Kind,
    /// Where we connected (socket path or URL), for messages.
    pub addr: String,
    pub version: String,
}

fn candidates(choice: EngineChoice) -> Vec<String> {
    let docker = vec!["/var/run/docker.sock".to_string()];
    let mut podman = vec!["/run/podman/podman.sock".to_string()];
    // Rootless Podman: $XDG_RUNTIME_DIR/podman/podman.sock.
    if let Some(rt) = dirs::runtime_dir() {
        podman.push(rt.join("podman/podman.sock").display().to_string());
    }
    match choice {
        EngineChoice::Docker => docker,
        EngineChoice::Podman => podman,
        EngineChoice::Auto => {
            // An explicit DOCKER_HOST is the operator's choice: never fall
            // back to another engine behind their back.
            if let Ok(h) = std::env::var("DOCKER_HOST") {
                if !h.is_empty() {
                    return vec![h];
                }
            }
            let mut v = docker;
            v.extend(podman);
            v
        }
    }
}

async fn try_connect(addr: &str) -> Result<Engine, String> {
    let api = if let Some(path) = addr
        .strip_prefix("unix://")
        .or(addr.starts_with('/').then_some(addr))
    {
        if !std::path::Path::new(path).exists() {
            return Err("absent".into());
        }
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?
    } else if addr.starts_with("tcp://") || addr.starts_with("http://") {
        Docker::connect_with_http(addr, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| e.to_string())?
    } else {
        return Err("unsupported address (use unix:///path or tcp://host:port)".into());
    };
    let v = api
        .version()
        .await
        .map_err(|e| format!("not answering: {e}"))?;
    let podman = v
        .components
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.name.to_lowercase().contains("podman")));
    Ok(Engine {
        api,
        kind: if podman { Kind::Podman } else { Kind::Docker },
        addr: addr.to_string(),
        version: v.version.unwrap_or_default(),
    })
}

/// Connect to the chosen (or first answering) engine. The error lists every
/// socket tried and how to get an engine running.
pub async fn connect(choice: EngineChoice) -> Result<Engine> {
    let mut tried = Vec::new();
    for addr in candidates(choice) {
        match try_connect(&addr).await {
            Ok(e) => return Ok(e),
            Err(why) => tried.push(format!("  {addr}: {why}")),
        }
    }
    bail!(
        "no container engine answered. Tried:\n{}\n\
         Install and start one of:\n  \
         Docker: apt-get install docker.io && systemctl enable --now docker\n  \
         Podman: apt-get install podman && systemctl enable --now podman.socket\n          \
         (without systemd: podman system service --time=0 unix:///run/podman/podman.sock &)\n\
         or point DOCKER_HOST at the engine's socket.",
        tried.join("\n")
    )
}

/// Turn a bollard error into the engine's own message.
pub fn engine_msg(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("engine said ({status_code}): {message}")
        }
        e => e.to_string(),
    }
}

/// Is this bollard error a 404?
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
