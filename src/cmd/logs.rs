//! `bty-lab logs`.

use anyhow::{bail, Result};

use crate::cli::LogsArgs;
use crate::containers;
use crate::engine;

pub async fn run(a: LogsArgs) -> Result<()> {
    let s = super::deploy::manifest(&a.dest, "logs")?;
    let services = match &a.service {
        Some(name) => match s.services().into_iter().find(|svc| svc.name == name) {
            Some(svc) => vec![svc],
            None => bail!(
                "no service {name:?} in this deploy; choose one of {}",
                s.services()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => s.services(),
    };
    let engine = engine::connect_for(a.engine.engine, s.engine.as_ref(), &s.path()).await?;
    if a.follow && services.len() > 1 {
        let mut tasks = Vec::new();
        for svc in services {
            let (e, name, tail) = (engine.clone(), s.container(&svc), a.tail.clone());
            tasks.push(tokio::spawn(async move {
                containers::stream_logs(&e, &name, Some(svc.name), true, &tail).await
            }));
        }
        for t in tasks {
            t.await??;
        }
        return Ok(());
    }
    let prefix = services.len() > 1;
    for svc in services {
        let name = s.container(&svc);
        containers::stream_logs(
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
