//! A deploy's containers and network on any [`ContainerEngine`]: what each
//! service's container is made of, creating and replacing it, removing the
//! stack. Everything carries the `dev.bty.deploy=<DEST>` label and only
//! containers with our label are ever touched. Health is
//! [`crate::health`]'s.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::engine::{ContainerEngine, ContainerSpec, Listed};
use crate::manifest::Manifest;
use crate::stack::{self, Net, Service};

/// Label recording the image version a container runs.
pub const LABEL_VERSION: &str = "dev.bty.version";

/// How long to wait before trying a Podman quirk again (short in tests).
const RETRY_PAUSE: Duration = Duration::from_millis(if cfg!(test) { 5 } else { 500 });

/// The health probe URL inside a service's container.
pub fn health_url(m: &Manifest, svc: &Service) -> String {
    match svc.net {
        Net::Bridge { container_port } => format!("http://127.0.0.1:{container_port}/healthz"),
        Net::Host => format!("tftp://127.0.0.1:{}/undionly.kpxe", m.ports.tftp),
    }
}

/// The health check command inside a service's container.
pub fn health_cmd(m: &Manifest, svc: &Service) -> Vec<String> {
    ["/bty-lab", "internal", "healthcheck", &health_url(m, svc)]
        .map(String::from)
        .to_vec()
}

/// `dev.bty.deploy=<DEST>`: the label every object of the deploy carries.
pub fn deploy_label(m: &Manifest) -> String {
    format!("{}={}", stack::LABEL_DEPLOY, m.dest.display())
}

fn labels(m: &Manifest, svc: Option<&Service>, version: &str) -> HashMap<String, String> {
    let mut l = HashMap::from([(
        stack::LABEL_DEPLOY.to_string(),
        m.dest.display().to_string(),
    )]);
    if let Some(svc) = svc {
        l.insert(stack::LABEL_SERVICE.to_string(), svc.name.to_string());
        l.insert(LABEL_VERSION.to_string(), version.to_string());
    }
    l
}

/// Is this label set the deploy's own?
fn is_ours(m: &Manifest, labels: &HashMap<String, String>) -> bool {
    labels.get(stack::LABEL_DEPLOY).map(String::as_str) == Some(&m.dest.display().to_string())
}

/// What one service's container is made of.
pub fn spec(
    m: &Manifest,
    svc: &Service,
    image: &str,
    version: &str,
    env: Vec<String>,
) -> ContainerSpec {
    let (network_mode, publish) = match svc.net {
        Net::Bridge { container_port } => (
            m.network(),
            Some((format!("{container_port}/tcp"), m.host_port(svc))),
        ),
        Net::Host => ("host".to_string(), None),
    };
    ContainerSpec {
        image: image.to_string(),
        env,
        labels: labels(m, Some(svc), version),
        network_mode,
        publish,
        binds: binds(m, svc),
        health_cmd: health_cmd(m, svc),
    }
}

/// The state dir and, for bty-web, DEST's bty.toml (read-only).
fn binds(m: &Manifest, svc: &Service) -> Vec<String> {
    let mut binds = Vec::new();
    if let Some((sub, mount)) = svc.data {
        binds.push(format!("{}:{mount}", m.data_dir.join(sub).display()));
    }
    if svc.name == stack::WEB.name {
        let toml = m.dest.join("bty.toml");
        binds.push(format!("{}:/etc/bty/bty.toml:ro", toml.display()));
    }
    binds
}

/// Containers carrying our deploy label (running or not).
pub async fn list_ours(engine: &impl ContainerEngine, m: &Manifest) -> Result<Vec<Listed>> {
    engine
        .list_containers(&deploy_label(m))
        .await
        .map_err(|e| anyhow!("listing containers: {e}"))
}

/// Create the stack's bridge network if it is missing. True if created.
pub async fn ensure_network(engine: &impl ContainerEngine, m: &Manifest) -> Result<bool> {
    let name = m.network();
    match engine.inspect_network(&name).await {
        Ok(Some(l)) if is_ours(m, &l) => Ok(false),
        Ok(Some(_)) => bail!(
            "network {name} exists but belongs to another deploy or tool; remove it or deploy \
             from another directory name"
        ),
        Ok(None) => {
            engine
                .create_network(&name, labels(m, None, ""))
                .await
                .map_err(|e| anyhow!("creating network {name}: {e}"))?;
            Ok(true)
        }
        Err(e) => bail!("inspecting network {name}: {e}"),
    }
}

/// Remove a container (by name or id), stopping it first.
///
/// Podman 4.3 refuses to remove a container that has just exited and is
/// still being cleaned up ("could not be stopped ... container state
/// improper"); the same call succeeds a moment later, so retry that case a
/// few times instead of failing a rollback or a purge on it.
pub async fn force_remove(
    engine: &impl ContainerEngine,
    name: &str,
) -> Result<(), crate::engine::Error> {
    let mut attempt = 0;
    loop {
        match engine.remove_container(name).await {
            Err(e) if attempt < 10 && e.message.contains("state improper") => {
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Remove a container by name if it is ours; refuse if it is someone else's.
pub async fn remove_if_ours(
    engine: &impl ContainerEngine,
    m: &Manifest,
    name: &str,
) -> Result<bool> {
    let Some(c) = engine
        .inspect_container(name)
        .await
        .map_err(|e| anyhow!("inspecting container {name}: {e}"))?
    else {
        return Ok(false);
    };
    if !is_ours(m, &c.labels) {
        bail!(
            "a container named {name} exists and is not part of the deploy at {} (label {}={}); \
             remove it or deploy from a directory with another name",
            m.dest.display(),
            stack::LABEL_DEPLOY,
            c.labels
                .get(stack::LABEL_DEPLOY)
                .map(String::as_str)
                .unwrap_or("none")
        );
    }
    force_remove(engine, name)
        .await
        .map_err(|e| anyhow!("removing container {name}: {e}"))?;
    Ok(true)
}

/// (Re)create and start one service's container; its name.
pub async fn run_service(
    engine: &impl ContainerEngine,
    m: &Manifest,
    svc: &Service,
    image: &str,
    version: &str,
    env: Vec<String>,
) -> Result<String> {
    let name = m.container(svc);
    remove_if_ours(engine, m, &name).await?;
    create_and_start(engine, &name, &spec(m, svc, image, version, env)).await?;
    Ok(name)
}

/// Create container `name` and start it.
///
/// Podman 4.3 now and then fails a start with "write child: broken pipe"
/// (conmon's sync pipe closed early; seen under load, and the same start
/// works when retried). Recreate and start again a couple of times before
/// giving up. The failed attempt's port forwarder may hold the published
/// ports for a few seconds after the removal, so a retry that finds a port
/// "already in use" waits longer and tries again; that answer on a first
/// attempt is a real conflict and fails at once, like every other error.
async fn create_and_start(
    engine: &impl ContainerEngine,
    name: &str,
    spec: &ContainerSpec,
) -> Result<()> {
    let image = &spec.image;
    let mut retry = StartRetry::default();
    loop {
        engine
            .create_container(name, spec)
            .await
            .map_err(|e| anyhow!("creating container {name} from {image}: {e}"))?;
        let e = match engine.start_container(name).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(pause) = retry.after(&e.message) else {
            bail!("starting container {name}: {e}");
        };
        crate::ui::warn(format!(
            "starting container {name}: engine said {e}; recreating it and trying again"
        ));
        force_remove(engine, name)
            .await
            .map_err(|e| anyhow!("removing container {name}: {e}"))?;
        tokio::time::sleep(pause).await;
    }
}

/// Which failed starts are worth another go, and how long to wait first.
#[derive(Debug, Default)]
struct StartRetry {
    broken_pipes: u32,
    busy_ports: u32,
}

impl StartRetry {
    /// Two broken pipes in a row are retried; then up to four busy ports
    /// (1, 2, 3, 4 pauses: about 5 s in all), but only after a broken pipe.
    fn after(&mut self, message: &str) -> Option<Duration> {
        if message.contains("broken pipe") && self.broken_pipes < 2 {
            self.broken_pipes += 1;
            return Some(RETRY_PAUSE * 2);
        }
        let busy = message.contains("address already in use");
        if busy && self.broken_pipes > 0 && self.busy_ports < 4 {
            self.busy_ports += 1;
            return Some(RETRY_PAUSE * 2 * self.busy_ports);
        }
        None
    }
}

/// What a removal did, item by item.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

impl Removal {
    /// Note one removal: gone now, already gone (not noted), or left.
    pub fn note(&mut self, what: String, r: Result<(), crate::engine::Error>) {
        match r {
            Ok(()) => self.removed.push(what),
            Err(e) if e.not_found => {}
            Err(e) => self.failed.push(format!("{what}: {e}")),
        }
    }

    /// Add what another removal did.
    pub fn absorb(&mut self, other: Removal) {
        self.removed.extend(other.removed);
        self.failed.extend(other.failed);
    }
}

/// Remove every container with our label and the stack network; what is
/// already gone is fine.
pub async fn remove_stack(
    engine: &impl ContainerEngine,
    m: &Manifest,
    r: &mut Removal,
) -> Result<()> {
    for c in list_ours(engine, m).await? {
        let gone = force_remove(engine, &c.id).await;
        r.note(format!("container {}", c.name), gone);
    }
    let net = m.network();
    r.note(format!("network {net}"), engine.remove_network(&net).await);
    Ok(())
}

/// Remove the deploy's images (`--images`); what is not there is fine.
pub async fn remove_images(engine: &impl ContainerEngine, m: &Manifest, r: &mut Removal) {
    for svc in m.services() {
        let img = m.image(&svc);
        r.note(format!("image {img}"), engine.remove_image(&img).await);
    }
}
