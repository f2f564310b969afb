//! `bty-lab upgrade`: new images, same envvars/bty.toml/data, health gate,
//! roll back to the previous images when the new ones are not healthy.
//! The plan is [`plan`]'s; the swap with its rollback is [`swap`]'s
//! (engine mode) or [`units`]'s (Quadlet mode).

pub mod plan;
pub mod swap;
pub mod units;

use anyhow::{anyhow, Context as _, Result};

use crate::cli::{ImagesFrom, UpgradeArgs};
use crate::cmd::{boot, checks, deploy, files, Host};
use crate::engine::{self, Bollard, ContainerEngine};
use crate::images::{self, Source, Wanted};
use crate::manifest::Manifest;
use crate::{deploydir, media, render, ui};
pub use plan::{Decision, Plan};

pub async fn run(a: UpgradeArgs) -> Result<()> {
    let old = files::manifest(&a.dest, "upgrade")?;
    let plan = match Plan::decide(&a, old, &Host::this(), boot::media_behind)? {
        Decision::Go(p) => *p,
        Decision::Nothing(m) => {
            boot::served_media(&m);
            return Ok(());
        }
    };
    let target = plan.new.version.clone();
    let mut steps = ui::Steps::new(5);
    steps.step("checking");
    let (engine, mut plan) = connect(plan).await?;
    let previous = running_images(&engine, &plan.old).await?;
    plan.snapshot = crate::cmd::backup::pre_upgrade(&plan.old, &target)?;
    steps.step(format!("getting bty {target} images"));
    get_images(&engine, &plan).await?;
    steps.step("migrating bty.toml (your edits stay)");
    migrate(&plan.new)?;
    if plan.new.quadlet {
        steps.step(format!("restarting the Quadlet units on bty {target}"));
        return units::swap(&engine, &crate::quadlet::Host, &plan).await;
    }
    let env = files::service_env(&plan.new)?;
    swap::swap(&engine, &plan, &previous, &env, &mut steps).await?;
    finish(&plan)
}

/// The deploy files on the new version, and the line that says so.
fn finish(plan: &Plan) -> Result<()> {
    files::rewrite_deploy_files(&plan.new)?;
    boot::served_media(&plan.new);
    eprintln!(
        "\nupgrade complete: {} now runs bty {} (was {})",
        plan.new.dest.display(),
        plan.new.version,
        plan.old.version
    );
    snapshot_kept(plan);
    Ok(())
}

/// Say where the pre-upgrade snapshot stays.
fn snapshot_kept(plan: &Plan) {
    if let Some(s) = &plan.snapshot {
        ui::detail(format!(
            "the pre-upgrade snapshot stays at {} (`bty-lab restore` takes it)",
            s.display()
        ));
    }
}

/// Roll back's first half when the databases migrated: stop what runs
/// (the new version holds them open) and put the snapshot's databases
/// back, so the old version finds the schema it knows.
async fn databases_back(
    engine: &impl ContainerEngine,
    plan: &Plan,
    units: Option<&dyn crate::quadlet::Systemd>,
) -> Result<()> {
    let Some(snap) = &plan.snapshot else {
        return Ok(());
    };
    eprintln!("putting the databases back from {}", snap.display());
    stop_new(engine, plan, units).await?;
    let kept = crate::cmd::backup::restore::databases_from(&plan.old, snap).with_context(|| {
        format!(
            "rolling back: putting the databases back from {} failed; the old version refuses \
             the migrated ones. Restore by hand: bty-lab restore {} {}",
            snap.display(),
            snap.display(),
            plan.old.dest.display()
        )
    })?;
    for k in kept {
        ui::detail(format!("the migrated database is kept at {}", k.display()));
    }
    Ok(())
}

/// Stop the new version's services (units or containers): they hold the
/// databases open.
async fn stop_new(
    engine: &impl ContainerEngine,
    plan: &Plan,
    units: Option<&dyn crate::quadlet::Systemd>,
) -> Result<()> {
    let Some(sd) = units else {
        return crate::cmd::backup::restore::stop_containers(engine, &plan.new).await;
    };
    for svc in plan.new.services().iter().rev() {
        sd.systemctl(&["stop", &crate::quadlet::service_unit(&plan.new, svc)])?;
    }
    Ok(())
}

/// The engine DEST runs on (or `--engine`'s), checked and remembered.
async fn connect(mut plan: Plan) -> Result<(Bollard, Plan)> {
    let old = &plan.old;
    let engine = engine::connect_for(plan.engine, old.engine.as_ref(), &old.path()).await?;
    checks::engine_switch(&engine, old).await?;
    plan.new.engine = Some(engine.remembered());
    Ok((engine, plan))
}

/// What runs now, to roll back to: each service's image as the engine
/// reports it, else the one the manifest names.
pub async fn running_images(engine: &impl ContainerEngine, m: &Manifest) -> Result<Vec<Wanted>> {
    let mut v = Vec::new();
    for svc in m.services() {
        let name = m.container(&svc);
        let c = engine
            .inspect_container(&name)
            .await
            .map_err(|e| anyhow!("inspecting container {name}: {e}"))?;
        let image = match c {
            Some(c) if !c.image.is_empty() => c.image,
            _ => m.image(&svc),
        };
        v.push((svc, image));
    }
    Ok(v)
}

/// The target version's images, by the route the plan names.
async fn get_images(engine: &impl ContainerEngine, plan: &Plan) -> Result<()> {
    let opts = media::Options {
        from: plan.from.clone(),
        cache: None,
    };
    let hint = media::ways_out(plan.new.images != ImagesFrom::Pull, false);
    let mut source = Source::new(opts, hint);
    let wanted = deploy::wanted(&plan.new);
    images::obtain(engine, &wanted, plan.new.images, &mut source).await
}

/// Keep DEST's files current for the new version: keys bty.toml lacks, a
/// moved boot dir, the service token deploys from before it lack.
fn migrate(new: &Manifest) -> Result<()> {
    let fresh = render::deploy_files(new, None)?;
    let fresh_toml = fresh
        .iter()
        .find(|f| f.rel.as_os_str() == "bty.toml")
        .map(|f| f.contents.as_str())
        .unwrap_or_default();
    let toml_path = new.dest.join("bty.toml");
    let existing = std::fs::read_to_string(&toml_path).unwrap_or_default();
    let (merged, added) = deploydir::migrate_bty_toml(&existing, fresh_toml)?;
    if !added.is_empty() {
        deploydir::write_atomic(&toml_path, &merged, 0o644)?;
        ui::detail(format!("added {}", added.join(", ")));
    }
    // A moved [boot] dir must exist, owned by bty-web's user, before the
    // new bty-web places its image's media there.
    boot::prepare_boot_dir(new, None)?;
    // The recreated containers (or restarted units) carry the token.
    let added = files::add_shared_secrets(new)?;
    if !added.is_empty() {
        files::write_env_files(new)?;
        ui::detail(format!("envvars: added the {}", added.join(" and the ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
