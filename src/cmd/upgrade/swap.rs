//! Engine mode's swap: recreate every container on the new version, wait
//! for health, and when either fails put the previous images back, wait
//! again, and say which way it ended.

use anyhow::Result;

use super::Plan;
use crate::cmd::files::Env;
use crate::engine::ContainerEngine;
use crate::images::Wanted;
use crate::manifest::Manifest;
use crate::{cmd::deploy, containers, exit, health, ui};

/// Recreate the containers on `plan.new`; roll back to `previous` (the
/// images that ran) when they do not come up healthy.
pub async fn swap(
    engine: &impl ContainerEngine,
    plan: &Plan,
    previous: &[Wanted],
    env: &Env,
    steps: &mut ui::Steps,
) -> Result<()> {
    let new = &plan.new;
    steps.step(format!("recreating containers on bty {}", new.version));
    let recreated = recreate(engine, new, &deploy::wanted(new), env).await;
    steps.step("waiting for health");
    let failure = match recreated {
        Err(e) => e,
        Ok(()) => match health::require_healthy(engine, new, plan.timeout).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        },
    };
    roll_back(engine, plan, previous, env, failure).await
}

/// (Re)create each service's container from its image in `images`.
async fn recreate(
    engine: &impl ContainerEngine,
    m: &Manifest,
    images: &[Wanted],
    env: &Env,
) -> Result<()> {
    for (svc, image) in images {
        let env = env[svc.name].clone();
        containers::run_service(engine, m, svc, image, &m.version, env).await?;
    }
    Ok(())
}

/// Put the previous images back after `why`; always an error, saying
/// whether the old version is healthy again.
async fn roll_back(
    engine: &impl ContainerEngine,
    plan: &Plan,
    previous: &[Wanted],
    env: &Env,
    why: anyhow::Error,
) -> Result<()> {
    let (old, target) = (&plan.old, &plan.new.version);
    ui::warn(format!("bty {target} failed: {why:#}"));
    eprintln!("rolling back to bty {}", old.version);
    super::databases_back(engine, plan, None).await?;
    recreate(engine, old, previous, env).await?;
    if let Err(e) = health::require_healthy(engine, old, plan.timeout).await {
        return Err(exit::reword(
            &e,
            format!(
                "upgrade to {target} failed AND the rollback to {} is not healthy: {e}\n\
                 inspect with `bty-lab logs {}`",
                old.version,
                old.dest.display()
            ),
        ));
    }
    Err(exit::reword(
        &why,
        format!(
            "upgrade to {target} failed; rolled back to bty {} (healthy). Cause:\n{why:#}",
            old.version
        ),
    ))
}
