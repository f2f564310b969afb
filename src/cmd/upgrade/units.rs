//! Quadlet mode's swap: write the new units, daemon-reload, restart each,
//! wait for health through the engine; on failure put the previous unit
//! files back and restart again.

use std::path::PathBuf;

use anyhow::Result;

use super::Plan;
use crate::cmd::files;
use crate::engine::ContainerEngine;
use crate::manifest::Manifest;
use crate::quadlet::{self, Systemd};
use crate::{deploydir, exit, health, ui};

/// Restart the units on `plan.new`, rolling back to the unit files there
/// were when that is not healthy.
pub async fn swap(engine: &impl ContainerEngine, sd: &impl Systemd, plan: &Plan) -> Result<()> {
    let (old, new) = (&plan.old, &plan.new);
    let previous = quadlet::snapshot(sd, old);
    let installed = quadlet::install(&quadlet::units(sd, new)?);
    let failure = match installed.and_then(|_| restart_all(sd, new)) {
        Err(e) => e,
        Ok(()) => match health::require_healthy(engine, new, plan.timeout).await {
            Ok(()) => return finish(plan),
            Err(e) => e,
        },
    };
    ui::warn(format!("bty {} failed: {failure:#}", new.version));
    eprintln!("rolling back to bty {} (previous unit files)", old.version);
    put_back(&previous)?;
    super::databases_back(engine, plan, Some(sd)).await?;
    restart_all(sd, old)?;
    if let Err(e) = health::require_healthy(engine, old, plan.timeout).await {
        return Err(exit::reword(
            &e,
            format!(
                "upgrade to {} failed AND the rollback to {} is not healthy: {e}",
                new.version, old.version
            ),
        ));
    }
    Err(exit::reword(
        &failure,
        format!(
            "upgrade to {} failed; rolled back to bty {} (healthy). Cause:\n{failure:#}",
            new.version, old.version
        ),
    ))
}

fn restart_all(sd: &impl Systemd, m: &Manifest) -> Result<()> {
    sd.systemctl(&["daemon-reload"])?;
    for svc in m.services() {
        sd.systemctl(&["restart", &quadlet::service_unit(m, &svc)])?;
    }
    Ok(())
}

/// The unit files as they were (absent ones removed again).
fn put_back(previous: &[(PathBuf, Option<String>)]) -> Result<()> {
    for (path, text) in previous {
        match text {
            Some(t) => {
                deploydir::write_atomic(path, t, 0o644)?;
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
}

fn finish(plan: &Plan) -> Result<()> {
    files::rewrite_deploy_files(&plan.new)?;
    eprintln!(
        "\nupgrade complete: {} now runs bty {} (was {}; units restarted)",
        plan.new.dest.display(),
        plan.new.version,
        plan.old.version
    );
    super::snapshot_kept(plan);
    Ok(())
}
