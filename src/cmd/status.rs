//! `bty-lab status`: one row per service.

use anyhow::Result;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::containers;
use crate::engine;
use crate::stack;

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
    let s = super::deploy::manifest(&a.dest, "status")?;
    let engine = engine::connect_for(a.engine.engine, s.engine.as_ref(), &s.path()).await?;
    let mut rows = Vec::new();
    for svc in s.services() {
        let name = s.container(&svc);
        let url = match svc.name {
            n if n == stack::WEB.name => format!("{}/ui", s.web_url()),
            n if n == stack::CACHE.name => format!("{}/", s.withcache_url()),
            _ => format!(
                "tftp://{}:{}/",
                crate::hostaddr::url_host(&s.host_addr),
                s.ports.tftp
            ),
        };
        let (state, image, version, health) = match containers::snapshot(&engine, &name).await {
            Ok(Some(c)) => {
                let version = c
                    .labels
                    .get(containers::LABEL_VERSION)
                    .cloned()
                    .unwrap_or_default();
                let health = containers::health(&engine, &s, &svc, &name)
                    .await
                    .unwrap_or_else(|e| format!("{e:#}"));
                (c.status, c.image, version, health)
            }
            Ok(None) => ("absent".into(), String::new(), String::new(), "-".into()),
            Err(e) => (format!("{e:#}"), String::new(), String::new(), "-".into()),
        };
        rows.push(Row {
            service: svc.name,
            container: name,
            state,
            health,
            image,
            version,
            url,
            unit: s.quadlet.then(|| {
                let unit = crate::quadlet::service_unit(&s, &svc);
                format!("{unit}: {}", crate::quadlet::unit_state(&unit))
            }),
        });
    }
    if a.json {
        let out = serde_json::json!({
            "dest": s.dest, "engine": engine.kind.to_string(),
            "engine_addr": engine.addr, "version": s.version,
            "data_dir": s.data_dir, "services": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "bty {} at {} ({} {})",
        s.version,
        s.dest.display(),
        engine.kind,
        engine.version
    );
    println!(
        "{:<10} {:<10} {:<10} {:<8} URL",
        "SERVICE", "STATE", "HEALTH", "VERSION"
    );
    for r in &rows {
        println!(
            "{:<10} {:<10} {:<10} {:<8} {}",
            r.service, r.state, r.health, r.version, r.url
        );
        if let Some(u) = &r.unit {
            println!("{:<10} unit {u}", "");
        }
    }
    Ok(())
}
