//! The container engine, reached only through its HTTP API with bollard
//! (Docker's socket or Podman's Docker-compatible one); never by running
//! `docker`/`podman`.

use std::path::Path;

use anyhow::Result;
use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::cli::EngineChoice;

/// Which engine answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// The engine a deploy ran on, recorded in DEST's manifest (`[engine]`)
/// so later commands go to the same one without `--engine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub kind: Kind,
    /// Socket path or URL, as connected to.
    pub addr: String,
}

impl Engine {
    /// What a deploy records about this engine.
    pub fn remembered(&self) -> Remembered {
        Remembered {
            kind: self.kind,
            addr: self.addr.clone(),
        }
    }
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

/// Connect to `addr` (a socket path, `unix://`, `tcp://` or `http://`
/// URL); Err says why not in a few words.
pub async fn try_connect(addr: &str) -> Result<Engine, String> {
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
    return Err(crate::exit::unreachable(format!(
        "no container engine answered. Tried:\n{}\n\
         Install and start one of:\n  \
         Docker: apt-get install docker.io && systemctl enable --now docker\n  \
         Podman: apt-get install podman && systemctl enable --now podman.socket\n          \
         (without systemd: podman system service --time=0 unix:///run/podman/podman.sock &)\n\
         or point DOCKER_HOST at the engine's socket.",
        tried.join("\n")
    )));
}

/// The engine for a command on the deploy at `dest`: `--engine` when given,
/// else the engine the deploy ran on (`remembered`), else auto. A
/// remembered engine that does not answer is an error that says so; it never
/// falls back to another engine, which would not hold DEST's containers.
pub async fn connect_for(
    choice: Option<EngineChoice>,
    remembered: Option<&Remembered>,
    manifest: &Path,
) -> Result<Engine> {
    let r = match (choice, remembered) {
        (Some(c), _) => return connect(c).await,
        (None, None) => return connect(EngineChoice::Auto).await,
        (None, Some(r)) => r,
    };
    match try_connect(&r.addr).await {
        Ok(e) => {
            if e.kind != r.kind {
                crate::ui::warn(format!(
                    "{} answers as {}, but {} was deployed on {} there",
                    r.addr,
                    e.kind,
                    manifest.parent().unwrap_or(manifest).display(),
                    r.kind
                ));
            }
            Ok(e)
        }
        Err(why) => {
            return Err(crate::exit::unreachable(format!(
                "{}",
                remembered_down(r, &why, manifest)
            )))
        }
    }
}

/// The error for a remembered engine that does not answer.
/// `manifest` is the deploy's manifest file, DEST/.bty-lab.toml.
pub fn remembered_down(r: &Remembered, why: &str, manifest: &Path) -> String {
    let dest = manifest.parent().unwrap_or(manifest);
    let path = r
        .addr
        .strip_prefix("unix://")
        .unwrap_or(&r.addr)
        .to_string();
    let start = if !path.starts_with('/') {
        format!("start the {} engine that listens at {}", r.kind, r.addr)
    } else {
        match r.kind {
            Kind::Docker => "systemctl start docker (without systemd: dockerd &)".to_string(),
            Kind::Podman => format!(
                "systemctl enable --now podman.socket\n    \
                 (without systemd: podman system service --time=0 unix://{path} &)"
            ),
        }
    };
    format!(
        "the {kind} engine at {addr} does not answer ({why}).\n\
         {dest} was deployed on {kind} at {addr}; bty-lab remembered that from the deploy \
         ({manifest}) and uses it for every later command.\n\
         Start it:\n    {start}\n\
         or pass --engine docker|podman|auto to use another engine for this command.",
        kind = r.kind,
        addr = r.addr,
        dest = dest.display(),
        manifest = manifest.display(),
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
        // An error the engine sent inside a streamed answer (a Podman pull
        // or build); bollard's Display would drop the text.
        bollard::errors::Error::DockerStreamError { error } => format!("engine said: {error}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_remembered_engine_that_is_down_is_named_not_replaced() {
        let r = Remembered {
            kind: Kind::Podman,
            addr: "/nonexistent/bty-test/podman.sock".into(),
        };
        let e = connect_for(None, Some(&r), Path::new("/opt/bty/.bty-lab.toml"))
            .await
            .unwrap_err()
            .to_string();
        for needle in [
            "podman engine at /nonexistent/bty-test/podman.sock does not answer (absent)",
            "/opt/bty was deployed on podman",
            "remembered",
            "/opt/bty/.bty-lab.toml",
            "podman system service --time=0 unix:///nonexistent/bty-test/podman.sock",
            "--engine",
        ] {
            assert!(e.contains(needle), "{needle:?} not in:\n{e}");
        }
    }

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
