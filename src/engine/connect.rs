//! Which engine a command talks to: `--engine`, else the one DEST's
//! deploy ran on, else the first socket that answers. An engine that does
//! not answer is an [`exit::Code::EngineUnreachable`] error that says how
//! to start one; a remembered engine is never silently replaced.

use std::path::Path;

use anyhow::Result;

use super::{Bollard, ContainerEngine as _, Kind, Remembered};
use crate::cli::EngineChoice;
use crate::exit;

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
pub async fn try_connect(addr: &str) -> Result<Bollard, String> {
    Bollard::connect(addr).await
}

/// Connect to the chosen (or first answering) engine. The error lists every
/// socket tried and how to get an engine running.
pub async fn connect(choice: EngineChoice) -> Result<Bollard> {
    let mut tried = Vec::new();
    for addr in candidates(choice) {
        match try_connect(&addr).await {
            Ok(e) => return Ok(e),
            Err(why) => tried.push(format!("  {addr}: {why}")),
        }
    }
    Err(exit::unreachable(format!(
        "no container engine answered. Tried:\n{}\n\
         Install and start one of:\n  \
         Docker: apt-get install docker.io && systemctl enable --now docker\n  \
         Podman: apt-get install podman && systemctl enable --now podman.socket\n          \
         (without systemd: podman system service --time=0 unix:///run/podman/podman.sock &)\n\
         or point DOCKER_HOST at the engine's socket.",
        tried.join("\n")
    )))
}

/// The engine for a command on a deploy whose manifest is `manifest`:
/// `--engine` when given, else the engine the deploy ran on
/// (`remembered`), else auto. A remembered engine that does not answer is
/// an error that says so; it never falls back to another engine, which
/// would not hold DEST's containers.
pub async fn connect_for(
    choice: Option<EngineChoice>,
    remembered: Option<&Remembered>,
    manifest: &Path,
) -> Result<Bollard> {
    let r = match (choice, remembered) {
        (Some(c), _) => return connect(c).await,
        (None, None) => return connect(EngineChoice::Auto).await,
        (None, Some(r)) => r,
    };
    let e = try_connect(&r.addr)
        .await
        .map_err(|why| exit::unreachable(remembered_down(r, &why, manifest)))?;
    if e.kind() != r.kind {
        crate::ui::warn(format!(
            "{} answers as {}, but {} was deployed on {} there",
            r.addr,
            e.kind(),
            manifest.parent().unwrap_or(manifest).display(),
            r.kind
        ));
    }
    Ok(e)
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
            .unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::EngineUnreachable);
        let e = e.to_string();
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
}
