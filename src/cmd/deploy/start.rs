//! `deploy`'s last steps: start the stack and wait until it is healthy,
//! either through the engine API (network, containers) or as Quadlet units
//! systemd runs. When that fails, the error says what was made: engine
//! mode leaves it for `status`/`logs` to look at, Quadlet mode takes the
//! units down again (systemd would keep restarting them).

use std::time::Duration;

use anyhow::Result;

use crate::cmd::files::{self, Env};
use crate::engine::ContainerEngine;
use crate::manifest::Manifest;
use crate::quadlet::{self, Systemd};
use crate::stack::Net;
use crate::{containers, exit, health, ui};

/// The steps `start` takes (for the step count).
pub const STEPS: usize = 3;

/// Start the stack `m` describes and wait for health; on failure, the
/// error says what was made and how to look at or remove it.
pub async fn start(
    engine: &impl ContainerEngine,
    sd: &impl Systemd,
    m: &Manifest,
    steps: &mut ui::Steps,
    timeout: Duration,
) -> Result<()> {
    let mut made = Vec::new();
    let r = if m.quadlet {
        start_units(engine, sd, m, steps, timeout).await
    } else {
        start_containers(engine, m, steps, &mut made, timeout).await
    };
    let Err(e) = r else { return Ok(()) };
    Err(if m.quadlet {
        units_torn_down(&e, sd, m)
    } else {
        containers_left(&e, m, &made)
    })
}

/// Engine mode: the network, then each container in start order, then
/// health.
async fn start_containers(
    engine: &impl ContainerEngine,
    m: &Manifest,
    steps: &mut ui::Steps,
    made: &mut Vec<String>,
    timeout: Duration,
) -> Result<()> {
    steps.step("creating network");
    if m.services()
        .iter()
        .any(|s| matches!(s.net, Net::Bridge { .. }))
    {
        let net = m.network();
        if containers::ensure_network(engine, m).await? {
            made.push(format!("network {net}"));
            ui::detail(format!("created {net}"));
        } else {
            ui::detail(format!("{net} exists"));
        }
    }
    steps.step("starting containers");
    run_each(engine, m, &files::service_env(m)?, made).await?;
    steps.step("waiting for health");
    wait(engine, m, timeout, false).await
}

/// Create and start every service's container, in start order.
async fn run_each(
    engine: &impl ContainerEngine,
    m: &Manifest,
    env: &Env,
    made: &mut Vec<String>,
) -> Result<()> {
    for svc in m.services() {
        let image = m.image(&svc);
        let env = env[svc.name].clone();
        let name = containers::run_service(engine, m, &svc, &image, &m.version, env).await?;
        made.push(format!("container {name}"));
        ui::detail(format!("{name} ({image})"));
    }
    Ok(())
}

/// Wait for every service; an unhealthy one is the error (`journal`: its
/// unit's journal is worth a look too).
async fn wait(
    engine: &impl ContainerEngine,
    m: &Manifest,
    timeout: Duration,
    journal: bool,
) -> Result<()> {
    if let Err(u) = health::wait_healthy(engine, m, &m.services(), timeout).await {
        let also = if journal {
            format!("\n(also: journalctl -u {})", u.container)
        } else {
            String::new()
        };
        return Err(exit::unhealthy(format!("{u}{also}")));
    }
    for svc in m.services() {
        ui::detail(format!("{}: healthy", svc.name));
    }
    Ok(())
}

/// Quadlet mode: install the units, daemon-reload, start them in order,
/// wait for health through the Podman API.
async fn start_units(
    engine: &impl ContainerEngine,
    sd: &impl Systemd,
    m: &Manifest,
    steps: &mut ui::Steps,
    timeout: Duration,
) -> Result<()> {
    steps.step(format!(
        "installing Quadlet units into {}",
        sd.unit_dir().display()
    ));
    replace_engine_mode(engine, m).await?;
    for p in quadlet::install(&quadlet::units(sd, m)?)? {
        ui::detail(format!("{} (0644)", p.display()));
    }
    sd.systemctl(&["daemon-reload"])?;
    steps.step("starting units");
    for svc in m.services() {
        let unit = quadlet::service_unit(m, &svc);
        sd.systemctl(&["start", &unit])?;
        ui::detail(format!("started {unit}"));
    }
    steps.step("waiting for health");
    wait(engine, m, timeout, true).await
}

/// Containers an engine-mode deploy of this DEST made hold the names the
/// units use; they are replaced by the units' own.
async fn replace_engine_mode(engine: &impl ContainerEngine, m: &Manifest) -> Result<()> {
    for svc in m.services() {
        let name = m.container(&svc);
        if containers::remove_if_ours(engine, m, &name).await? {
            ui::detail(format!("removed engine-mode container {name}"));
        }
    }
    Ok(())
}

fn nothing_or(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(sep)
    }
}

/// Engine mode failed: what it made stays for `status` and `logs`.
fn containers_left(e: &anyhow::Error, m: &Manifest, made: &[String]) -> anyhow::Error {
    exit::reword(
        e,
        format!(
            "{e:#}\n\ndeploy did not finish. It created: {}.\n\
             Look with `bty-lab status {d}` / `bty-lab logs {d}`; remove with `bty-lab purge {d}`.",
            nothing_or(made, ", "),
            d = m.dest.display()
        ),
    )
}

/// Quadlet mode failed: units that systemd would keep restarting are
/// taken down again.
fn units_torn_down(e: &anyhow::Error, sd: &impl Systemd, m: &Manifest) -> anyhow::Error {
    let r = quadlet::remove(sd, m);
    exit::reword(
        e,
        format!(
            "{e:#}\n\ndeploy did not finish. Tore down: {}.\nLeft behind: {}.\n\
             The deploy files and data stay in {}; re-run deploy after fixing the cause.",
            nothing_or(&r.removed, ", "),
            nothing_or(&r.failed, "; "),
            m.dest.display()
        ),
    )
}
