//! `bty-lab logs`: one service's log, or every service's with its name in
//! front of each line.

use anyhow::{anyhow, bail, Result};
use futures::StreamExt as _;

use crate::cli::LogsArgs;
use crate::cmd::files;
use crate::engine::{self, ContainerEngine};
use crate::manifest::Manifest;
use crate::stack::Service;

pub async fn run(a: LogsArgs) -> Result<()> {
    let m = files::manifest(&a.dest, "logs")?;
    let services = services(&m, a.service.as_deref())?;
    let engine = engine::connect_for(a.engine.engine, m.engine.as_ref(), &m.path()).await?;
    if a.follow && services.len() > 1 {
        let mut tasks = Vec::new();
        for svc in services {
            let (e, name, tail) = (engine.clone(), m.container(&svc), a.tail.clone());
            tasks.push(tokio::spawn(async move {
                stream(&e, &name, Some(svc.name), true, &tail).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        return Ok(());
    }
    let prefix = services.len() > 1;
    for svc in services {
        let name = m.container(&svc);
        stream(
            &engine,
            &name,
            prefix.then_some(svc.name),
            a.follow,
            &a.tail,
        )
        .await?;
    }
    Ok(())
}

/// The services asked for: one by name, or all.
fn services(m: &Manifest, name: Option<&str>) -> Result<Vec<Service>> {
    let all = m.services();
    let Some(name) = name else { return Ok(all) };
    match all.iter().find(|svc| svc.name == name) {
        Some(svc) => Ok(vec![*svc]),
        None => {
            let names: Vec<&str> = all.iter().map(|s| s.name).collect();
            bail!(
                "no service {name:?} in this deploy; choose one of {}",
                names.join(", ")
            )
        }
    }
}

/// Copy a container's log to stdout, `prefix | ` before each line.
async fn stream(
    engine: &impl ContainerEngine,
    name: &str,
    prefix: Option<&str>,
    follow: bool,
    tail: &str,
) -> Result<()> {
    use std::io::Write as _;
    let mut s = engine.logs(name, tail, follow);
    while let Some(chunk) = s.next().await {
        let text = chunk.map_err(|e| anyhow!("reading logs of {name}: {e}"))?;
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
