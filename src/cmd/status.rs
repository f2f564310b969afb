//! `bty-lab status`: one row per service.

use anyhow::Result;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::cmd::files;
use crate::engine::{self, ContainerEngine};
use crate::manifest::Manifest;
use crate::stack::{self, Service};
use crate::{containers, health};

#[derive(Debug, Serialize)]
struct Row {
    service: &'static str,
    container: String,
    state: String,
    health: String,
    image: String,
    version: String,
    url: String,
    /// systemd's view of the Quadlet unit (Quadlet mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
}

pub async fn run(a: StatusArgs) -> Result<()> {
    let m = files::manifest(&a.dest, "status")?;
    let engine = engine::connect_for(a.engine.engine, m.engine.as_ref(), &m.path()).await?;
    let mut rows = Vec::new();
    for svc in m.services() {
        rows.push(row(&engine, &m, svc).await);
    }
    if a.json {
        let out = serde_json::json!({
            "dest": m.dest, "engine": engine.kind().to_string(),
            "engine_addr": engine.addr(), "version": m.version,
            "data_dir": m.data_dir, "services": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    table(&engine, &m, &rows);
    Ok(())
}

/// Where operators reach `svc`.
fn url(m: &Manifest, svc: &Service) -> String {
    match svc.name {
        n if n == stack::WEB.name => format!("{}/ui", m.web_url()),
        n if n == stack::CACHE.name => format!("{}/", m.withcache_url()),
        _ => format!(
            "tftp://{}:{}/",
            crate::hostaddr::url_host(&m.host_addr),
            m.ports.tftp
        ),
    }
}

/// One service's row: its container as the engine sees it.
async fn row(engine: &impl ContainerEngine, m: &Manifest, svc: Service) -> Row {
    let name = m.container(&svc);
    let (state, image, version, health) = match engine.inspect_container(&name).await {
        Ok(Some(c)) => {
            let version = c.labels.get(containers::LABEL_VERSION).cloned();
            let health = health::health(engine, m, &svc, &name)
                .await
                .unwrap_or_else(|e| format!("{e:#}"));
            (c.status, c.image, version.unwrap_or_default(), health)
        }
        Ok(None) => ("absent".into(), String::new(), String::new(), "-".into()),
        Err(e) => (
            format!("inspecting container {name}: {e}"),
            String::new(),
            String::new(),
            "-".into(),
        ),
    };
    Row {
        service: svc.name,
        container: name,
        state,
        health,
        image,
        version,
        url: url(m, &svc),
        unit: m.quadlet.then(|| {
            let unit = crate::quadlet::service_unit(m, &svc);
            format!("{unit}: {}", crate::quadlet::unit_state(&unit))
        }),
    }
}

fn table(engine: &impl ContainerEngine, m: &Manifest, rows: &[Row]) {
    println!(
        "bty {} at {} ({} {})",
        m.version,
        m.dest.display(),
        engine.kind(),
        engine.version()
    );
    println!(
        "{:<10} {:<10} {:<10} {:<8} URL",
        "SERVICE", "STATE", "HEALTH", "VERSION"
    );
    for r in rows {
        println!(
            "{:<10} {:<10} {:<10} {:<8} {}",
            r.service, r.state, r.health, r.version, r.url
        );
        if let Some(u) = &r.unit {
            println!("{:<10} unit {u}", "");
        }
    }
}
