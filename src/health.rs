//! Is the stack healthy? The engine's health status, or for Podman without
//! systemd (which runs no health timers) bty-lab's own probe through exec;
//! waiting for every service with a deadline; and [`Unhealthy`], the one
//! way "service X is not healthy" is said, with its log tail.

use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::containers::health_cmd;
use crate::engine::{ContainerEngine, Kind};
use crate::manifest::Manifest;
use crate::stack::Service;

/// How often [`wait_healthy`] asks.
const POLL: Duration = Duration::from_millis(if cfg!(test) { 10 } else { 500 });

/// Health as we judge it: `healthy`, `starting`, the engine's own word
/// (`unhealthy`), or the container's status when it is not running
/// (`exited`, `absent`, ...).
pub async fn health(
    engine: &impl ContainerEngine,
    m: &Manifest,
    svc: &Service,
    name: &str,
) -> anyhow::Result<String> {
    let Some(c) = engine
        .inspect_container(name)
        .await
        .map_err(|e| anyhow::anyhow!("inspecting container {name}: {e}"))?
    else {
        return Ok("absent".into());
    };
    if c.status != "running" {
        return Ok(c.status);
    }
    if c.health == "healthy" {
        return Ok(c.health);
    }
    if engine.kind() == Kind::Podman && engine.exec_ok(name, &health_cmd(m, svc)).await {
        return Ok("healthy".into());
    }
    Ok(if c.health.is_empty() || c.health == "none" {
        "starting".into()
    } else {
        c.health
    })
}

/// Why a service did not become healthy. Its `Display` is the one way
/// bty-lab says so: `SERVICE (CONTAINER) is not healthy: STATE` and the
/// container's last log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    pub service: String,
    pub container: String,
    /// `exited (restarts: 0)`, `starting after 120s`, ...
    pub state: String,
    pub logs: String,
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) is not healthy: {}\nits last log lines:\n{}",
            self.service,
            self.container,
            self.state,
            indent(&self.logs)
        )
    }
}

impl std::error::Error for Unhealthy {}

/// Log lines set off under a message.
fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "  (no output)".into();
    }
    s.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A state from which a container does not come back healthy by itself.
fn is_dead(state: &str, restarts: i64) -> bool {
    matches!(state, "exited" | "dead" | "removing" | "stopped" | "absent")
        || restarts >= 2
        || state.contains("No such")
}

/// Wait until every service is healthy, or fail with the first one that is
/// not (exited, restarting, or still unhealthy at the deadline).
pub async fn wait_healthy(
    engine: &impl ContainerEngine,
    m: &Manifest,
    services: &[Service],
    timeout: Duration,
) -> Result<(), Unhealthy> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Service> = services.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for svc in pending {
            if !look(engine, m, &svc, deadline, timeout).await? {
                still.push(svc);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Is `svc` healthy (true), not yet (false), or past hope or the
/// deadline (the error)?
async fn look(
    engine: &impl ContainerEngine,
    m: &Manifest,
    svc: &Service,
    deadline: Instant,
    timeout: Duration,
) -> Result<bool, Unhealthy> {
    let name = m.container(svc);
    let st = health(engine, m, svc, &name)
        .await
        .unwrap_or_else(|e| format!("{e:#}"));
    if st == "healthy" {
        return Ok(true);
    }
    let restarts = restarts(engine, &name).await;
    let dead = is_dead(&st, restarts);
    if !dead && Instant::now() < deadline {
        return Ok(false);
    }
    let state = if dead {
        format!("{st} (restarts: {restarts})")
    } else {
        format!("{st} after {}s", timeout.as_secs())
    };
    Err(Unhealthy {
        service: svc.name.to_string(),
        logs: last_logs(engine, &name, 20).await,
        container: name,
        state,
    })
}

/// Every service of `m` healthy within `timeout`, else an
/// [`crate::exit::Code::Unhealthy`] error saying which is not.
pub async fn require_healthy(
    engine: &impl ContainerEngine,
    m: &Manifest,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_healthy(engine, m, &m.services(), timeout)
        .await
        .map_err(crate::exit::unhealthy)
}

async fn restarts(engine: &impl ContainerEngine, name: &str) -> i64 {
    match engine.inspect_container(name).await {
        Ok(Some(c)) => c.restarts,
        _ => 0,
    }
}

/// The last `n` log lines of a container (best effort).
pub async fn last_logs(engine: &impl ContainerEngine, name: &str, n: usize) -> String {
    let mut s = engine.logs(name, &n.to_string(), false);
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.push_str(&chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_says_who_how_and_the_log_tail() {
        let u = Unhealthy {
            service: "bty-web".into(),
            container: "lab-bty-web".into(),
            state: "exited (restarts: 0)".into(),
            logs: "starting\npanic: no config\n".into(),
        };
        assert_eq!(
            u.to_string(),
            "bty-web (lab-bty-web) is not healthy: exited (restarts: 0)\n\
             its last log lines:\n  | starting\n  | panic: no config"
        );
        let quiet = Unhealthy {
            logs: " \n".into(),
            ..u
        };
        assert!(quiet
            .to_string()
            .ends_with("its last log lines:\n  (no output)"));
    }

    #[tokio::test]
    async fn a_dead_container_fails_the_wait_at_once_a_slow_one_at_the_deadline() {
        use crate::engine::fake::{Behaviour, Fake};
        let m = crate::manifest::tests::sample();
        let f = Fake::new(Kind::Podman);
        let svc = crate::stack::CACHE;
        let spec = crate::containers::spec(&m, &svc, "img", "1", vec![]);
        f.add_container(&m.container(&svc), spec, "exited");
        let long = Duration::from_secs(600);
        let services = [svc];
        let wait = wait_healthy(&f, &m, &services, long);
        let u = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("waited for a dead container")
            .unwrap_err();
        assert_eq!(u.state, "exited (restarts: 0)");
        assert_eq!(u.container, m.container(&svc));
        // Running but never healthy: the deadline, said.
        f.add_image("img", Default::default());
        f.behave("img", Behaviour::NeverHealthy);
        crate::containers::run_service(&f, &m, &svc, "img", "1", vec![])
            .await
            .unwrap();
        let u = wait_healthy(&f, &m, &[svc], Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(u.state, "starting after 0s");
        // Healthy: done.
        f.behave("img", Behaviour::Healthy);
        crate::containers::run_service(&f, &m, &svc, "img", "1", vec![])
            .await
            .unwrap();
        wait_healthy(&f, &m, &[svc], long).await.unwrap();
    }

    #[test]
    fn gone_and_restarting_containers_are_dead_starting_ones_not() {
        assert!(is_dead("exited", 0) && is_dead("stopped", 0) && is_dead("absent", 0));
        assert!(is_dead("running", 2));
        assert!(!is_dead("starting", 1) && !is_dead("unhealthy", 0));
    }
}
