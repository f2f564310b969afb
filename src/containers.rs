//! The stack's containers and network: create, start, wait for health,
//! inspect, remove. Everything carries the `dev.bty.deploy=<DEST>` label and
//! only containers with our label are ever touched.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bollard::container::{
    Config, CreateContainerOptions, ListContainersOptions, LogOutput, LogsOptions,
    RemoveContainerOptions, StartContainerOptions,
};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    HealthConfig, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::network::CreateNetworkOptions;
use futures::StreamExt as _;

use crate::engine::{engine_msg, is_not_found, Engine, Kind};
use crate::manifest::Manifest;
use crate::stack::{self, Net, Service};

/// Label recording the image version a container runs.
pub const LABEL_VERSION: &str = "dev.bty.version";

/// The health probe URL inside a service's container.
pub fn health_url(s: &Manifest, svc: &Service) -> String {
    match svc.net {
        Net::Bridge { container_port } => format!("http://127.0.0.1:{container_port}/healthz"),
        Net::Host => format!("tftp://127.0.0.1:{}/undionly.kpxe", s.ports.tftp),
    }
}

fn health_cmd(s: &Manifest, svc: &Service) -> Vec<String> {
    ["/bty-lab", "internal", "healthcheck", &health_url(s, svc)]
        .map(String::from)
        .to_vec()
}

fn labels(s: &Manifest, svc: Option<&Service>, version: &str) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert(
        stack::LABEL_DEPLOY.to_string(),
        s.dest.display().to_string(),
    );
    if let Some(svc) = svc {
        l.insert(stack::LABEL_SERVICE.to_string(), svc.name.to_string());
        l.insert(LABEL_VERSION.to_string(), version.to_string());
    }
    l
}

/// Containers carrying our deploy label (running or not).
pub async fn list_ours(
    engine: &Engine,
    s: &Manifest,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{}={}", stack::LABEL_DEPLOY, s.dest.display())],
    );
    engine
        .api
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        }))
        .await
        .map_err(|e| anyhow!("listing containers: {}", engine_msg(&e)))
}

/// Create the stack's bridge network if it is missing. Returns true if created.
pub async fn ensure_network(engine: &Engine, s: &Manifest) -> Result<bool> {
    let name = s.network();
    match engine.api.inspect_network::<String>(&name, None).await {
        Ok(n) => {
            let ours = n
                .labels
                .as_ref()
                .and_then(|l| l.get(stack::LABEL_DEPLOY))
                .map(String::as_str)
                == Some(&s.dest.display().to_string());
            if !ours {
                bail!("network {name} exists but belongs to another deploy or tool; remove it or deploy from another directory name");
            }
            Ok(false)
        }
        Err(e) if is_not_found(&e) => {
            let opts = CreateNetworkOptions {
                name: name.clone(),
                driver: "bridge".to_string(),
                labels: labels(s, None, ""),
                ..Default::default()
            };
            engine
                .api
                .create_network(opts)
                .await
                .map_err(|e| anyhow!("creating network {name}: {}", engine_msg(&e)))?;
            Ok(true)
        }
        Err(e) => bail!("inspecting network {name}: {}", engine_msg(&e)),
    }
}

/// Container config for one service.
pub fn container_config(
    s: &Manifest,
    svc: &Service,
    image: &str,
    version: &str,
    env: Vec<String>,
) -> Config<String> {
    let secs = |n: u64| (n * 1_000_000_000) as i64;
    let mut host = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let mut exposed = None;
    match svc.net {
        Net::Bridge { container_port } => {
            let host_port = s.host_port(svc);
            let key = format!("{container_port}/tcp");
            host.port_bindings = Some(HashMap::from([(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(host_port.to_string()),
                }]),
            )]));
            exposed = Some(HashMap::from([(key, HashMap::new())]));
            host.network_mode = Some(s.network());
        }
        Net::Host => {
            host.network_mode = Some("host".to_string());
        }
    }
    let mut binds = Vec::new();
    if let Some((sub, mount)) = svc.data {
        binds.push(format!("{}:{mount}", s.data_dir.join(sub).display()));
    }
    if svc.name == stack::WEB.name {
        binds.push(format!(
            "{}:/etc/bty/bty.toml:ro",
            s.dest.join("bty.toml").display()
        ));
    }
    if !binds.is_empty() {
        host.binds = Some(binds);
    }
    Config {
        image: Some(image.to_string()),
        env: Some(env),
        labels: Some(labels(s, Some(svc), version)),
        exposed_ports: exposed,
        healthcheck: Some(HealthConfig {
            test: Some([vec!["CMD".to_string()], health_cmd(s, svc)].concat()),
            interval: Some(secs(2)),
            timeout: Some(secs(3)),
            retries: Some(3),
            start_period: Some(secs(60)),
            start_interval: None,
        }),
        host_config: Some(host),
        ..Default::default()
    }
}

/// What we need to know about one container.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// running, exited, created, restarting, stopped (Podman), ...
    pub status: String,
    /// The engine's health status (`healthy`, `starting`, ...) or "".
    pub health: String,
    pub restarts: i64,
    pub image: String,
    pub labels: HashMap<String, String>,
}

/// Inspect a container by name; None if there is none.
///
/// Podman's compat API reports states Docker's schema does not have (e.g.
/// `stopped`), which bollard's typed inspect cannot parse; then the
/// container list (plain strings) is used instead.
pub async fn snapshot(engine: &Engine, name: &str) -> Result<Option<Snapshot>> {
    match engine.api.inspect_container(name, None).await {
        Ok(c) => {
            let state = c.state.unwrap_or_default();
            let cfg = c.config.unwrap_or_default();
            Ok(Some(Snapshot {
                status: state.status.map(|s| s.to_string()).unwrap_or_default(),
                health: state
                    .health
                    .and_then(|h| h.status)
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
                restarts: c.restart_count.unwrap_or(0),
                image: cfg.image.unwrap_or_default(),
                labels: cfg.labels.unwrap_or_default(),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(bollard::errors::Error::JsonDataError { .. })
        | Err(bollard::errors::Error::JsonSerdeError { .. }) => {
            let filters = HashMap::from([("name".to_string(), vec![format!("^/?{name}$")])]);
            let list = engine
                .api
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters,
                    ..Default::default()
                }))
                .await
                .map_err(|e| anyhow!("listing container {name}: {}", engine_msg(&e)))?;
            let Some(c) = list.into_iter().find(|c| {
                c.names
                    .as_ref()
                    .is_some_and(|n| n.iter().any(|n| n.trim_start_matches('/') == name))
            }) else {
                return Ok(None);
            };
            let status_text = c.status.unwrap_or_default();
            let health = if status_text.contains("(healthy)") {
                "healthy"
            } else if status_text.contains("(unhealthy)") {
                "unhealthy"
            } else {
                ""
            };
            Ok(Some(Snapshot {
                status: c.state.unwrap_or_default(),
                health: health.to_string(),
                restarts: 0,
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
            }))
        }
        Err(e) => bail!("inspecting container {name}: {}", engine_msg(&e)),
    }
}

/// Force-remove a container (and its anonymous volumes).
///
/// Podman 4.3 refuses to remove a container that has just exited and is
/// still being cleaned up ("could not be stopped ... container state
/// improper"); the same call succeeds a moment later, so retry that case a
/// few times instead of failing a rollback or a purge on it.
async fn force_remove(engine: &Engine, name: &str) -> Result<(), bollard::errors::Error> {
    let mut attempt = 0;
    loop {
        let r = engine
            .api
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
        match r {
            Err(e) if attempt < 10 && engine_msg(&e).contains("state improper") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Remove a container by name if it is ours; refuse if it is someone else's.
pub async fn remove_if_ours(engine: &Engine, s: &Manifest, name: &str) -> Result<bool> {
    match snapshot(engine, name).await? {
        Some(c) => {
            let label = c.labels.get(stack::LABEL_DEPLOY);
            if label.map(String::as_str) != Some(&s.dest.display().to_string()) {
                bail!(
                    "a container named {name} exists and is not part of the deploy at {} (label {}={}); \
                     remove it or deploy from a directory with another name",
                    s.dest.display(),
                    stack::LABEL_DEPLOY,
                    label.map(String::as_str).unwrap_or("none")
                );
            }
            force_remove(engine, name)
                .await
                .map_err(|e| anyhow!("removing container {name}: {}", engine_msg(&e)))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// (Re)create and start one service's container.
pub async fn run_service(
    engine: &Engine,
    s: &Manifest,
    svc: &Service,
    image: &str,
    version: &str,
    env: Vec<String>,
) -> Result<String> {
    let name = s.container(&svc);
    remove_if_ours(engine, s, &name).await?;
    // Podman 4.3 now and then fails a start with "write child: broken
    // pipe" (conmon's sync pipe closed early; seen under load, and the
    // same start works when retried). Recreate and start again a couple of
    // times before giving up; every other error fails at once.
    let mut attempt = 0;
    loop {
        let cfg = container_config(s, svc, image, version, env.clone());
        engine
            .api
            .create_container(
                Some(CreateContainerOptions {
                    name: name.clone(),
                    platform: None,
                }),
                cfg,
            )
            .await
            .map_err(|e| anyhow!("creating container {name} from {image}: {}", engine_msg(&e)))?;
        match engine
            .api
            .start_container(&name, None::<StartContainerOptions<String>>)
            .await
        {
            Ok(()) => return Ok(name),
            Err(e) if attempt < 2 && engine_msg(&e).contains("broken pipe") => {
                attempt += 1;
                crate::ui::warn(format!(
                    "starting container {name}: engine said {}; recreating it and trying again",
                    engine_msg(&e)
                ));
                force_remove(engine, &name)
                    .await
                    .map_err(|e| anyhow!("removing container {name}: {}", engine_msg(&e)))?;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(anyhow!("starting container {name}: {}", engine_msg(&e))),
        }
    }
}

/// Run the health command inside the container; true on exit 0.
pub async fn probe(engine: &Engine, name: &str, cmd: &[String]) -> bool {
    let Ok(exec) = engine
        .api
        .create_exec(
            name,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
    else {
        return false;
    };
    if let Ok(StartExecResults::Attached { mut output, .. }) =
        engine.api.start_exec(&exec.id, None).await
    {
        while output.next().await.is_some() {}
    }
    matches!(engine.api.inspect_exec(&exec.id).await, Ok(i) if i.exit_code == Some(0))
}

/// Health as we judge it: the engine's status, or for Podman without
/// systemd (which runs no health timers) our own probe through exec.
pub async fn health(engine: &Engine, s: &Manifest, svc: &Service, name: &str) -> Result<String> {
    let Some(c) = snapshot(engine, name).await? else {
        return Ok("absent".into());
    };
    if c.status != "running" {
        return Ok(c.status);
    }
    if c.health == "healthy" {
        return Ok(c.health);
    }
    if engine.kind == Kind::Podman && probe(engine, name, &health_cmd(s, svc)).await {
        return Ok("healthy".into());
    }
    Ok(if c.health.is_empty() || c.health == "none" {
        "starting".into()
    } else {
        c.health
    })
}

/// Why a service did not become healthy.
#[derive(Debug)]
pub struct Unhealthy {
    pub service: String,
    pub container: String,
    pub state: String,
    pub logs: String,
}

/// Wait until every service is healthy, or fail with the first one that is
/// not (exited, restarting, or still unhealthy at the deadline).
pub async fn wait_healthy(
    engine: &Engine,
    s: &Manifest,
    services: &[Service],
    timeout: Duration,
) -> Result<(), Unhealthy> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Service> = services.to_vec();
    loop {
        let mut still = Vec::new();
        for svc in pending {
            let name = s.container(&svc);
            let st = health(engine, s, &svc, &name)
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            let restarts = snapshot(engine, &name)
                .await
                .ok()
                .flatten()
                .map(|c| c.restarts)
                .unwrap_or(0);
            if st == "healthy" {
                continue;
            }
            let dead = matches!(
                st.as_str(),
                "exited" | "dead" | "removing" | "stopped" | "absent"
            ) || restarts >= 2
                || st.contains("No such");
            if dead || Instant::now() >= deadline {
                let why = if dead {
                    format!("{st} (restarts: {restarts})")
                } else {
                    format!("{st} after {}s", timeout.as_secs())
                };
                return Err(Unhealthy {
                    service: svc.name.to_string(),
                    container: name.clone(),
                    state: why,
                    logs: last_logs(engine, &name, 20).await,
                });
            }
            still.push(svc);
        }
        if still.is_empty() {
            return Ok(());
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The last `n` log lines of a container (best effort).
pub async fn last_logs(engine: &Engine, name: &str, n: usize) -> String {
    let opts = LogsOptions {
        stdout: true,
        stderr: true,
        tail: n.to_string(),
        ..Default::default()
    };
    let mut s = engine.api.logs(name, Some(opts));
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.push_str(&chunk.to_string());
    }
    out
}

/// Stream logs to stdout.
pub async fn stream_logs(
    engine: &Engine,
    name: &str,
    prefix: Option<&str>,
    follow: bool,
    tail: &str,
) -> Result<()> {
    use std::io::Write as _;
    let opts = LogsOptions {
        stdout: true,
        stderr: true,
        follow,
        tail: tail.to_string(),
        ..Default::default()
    };
    let mut s = engine.api.logs(name, Some(opts));
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| anyhow!("reading logs of {name}: {}", engine_msg(&e)))?;
        let text = match &chunk {
            LogOutput::StdOut { .. }
            | LogOutput::StdErr { .. }
            | LogOutput::Console { .. }
            | LogOutput::StdIn { .. } => chunk.to_string(),
        };
        let mut out = std::io::stdout().lock();
        for line in text.lines() {
            match prefix {
                Some(p) => writeln!(out, "{p} | {line}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    Ok(())
}

/// What purge did, item by item.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// Remove every container with our label and the stack network.
pub async fn remove_stack(engine: &Engine, s: &Manifest) -> Result<Removal> {
    let mut r = Removal::default();
    for c in list_ours(engine, s).await? {
        let name = c
            .names
            .unwrap_or_default()
            .first()
            .cloned()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let id = c.id.unwrap_or_default();
        match force_remove(engine, &id).await {
            Ok(()) => r.removed.push(format!("container {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => r
                .failed
                .push(format!("container {name}: {}", engine_msg(&e))),
        }
    }
    let net = s.network();
    match engine.api.remove_network(&net).await {
        Ok(()) => r.removed.push(format!("network {net}")),
        Err(e) if is_not_found(&e) => {}
        Err(e) => r.failed.push(format!("network {net}: {}", engine_msg(&e))),
    }
    Ok(r)
}
