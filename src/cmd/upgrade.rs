//! `bty-lab upgrade`: new images, same envvars/bty.toml/data, health gate,
//! roll back to the previous images when the new ones are not healthy.

use std::cmp::Ordering;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::{ImagesFrom, UpgradeArgs};
use crate::engine::{self, containers, images};
use crate::media;
use crate::render;
use crate::stack;
use crate::ui;

pub async fn run(a: UpgradeArgs) -> Result<()> {
    let old = super::deploy::manifest(&a.dest, "upgrade")?;
    if old.quadlet {
        crate::quadlet::require_systemd()?;
    }
    let target = a.to.clone().unwrap_or_else(|| stack::VERSION.to_string());
    match stack::compare_versions(&target, &old.version) {
        Some(Ordering::Less) if !a.allow_downgrade => bail!(
            "{} runs bty {}; {target} is older. Refusing to downgrade (state may not read back); \
             pass --allow-downgrade if you mean it",
            old.dest.display(),
            old.version
        ),
        Some(Ordering::Equal) if a.images.is_none() => match media_behind(&old) {
            None => {
                eprintln!(
                    "{} already runs bty {target}; nothing to do",
                    old.dest.display()
                );
                super::deploy::served_media(&old);
                return Ok(());
            }
            Some(why) => ui::detail(format!(
                "{} already runs bty {target}, but {why}: recreating the containers, so that \
                 bty-web places the media its image carries",
                old.dest.display()
            )),
        },
        None => ui::warn(format!(
            "cannot compare versions {target} and {}; going ahead",
            old.version
        )),
        _ => {}
    }
    let mut new = old.clone();
    new.version = target.clone();
    if let Some(i) = a.images {
        new.images = i;
    }
    let services = new.services();
    let mut steps = ui::Steps::new(5);

    steps.step("checking");
    let engine = engine::connect_for(a.engine.engine, old.engine.as_ref(), &old.dest).await?;
    super::deploy::check_engine_switch(&engine, &old).await?;
    new.engine = Some(engine.remembered());
    // What runs now, to roll back to.
    let mut previous = Vec::new();
    for svc in &services {
        let name = stack::container_name(&old.project(), svc);
        let image = match containers::snapshot(&engine, &name).await? {
            Some(c) if !c.image.is_empty() => c.image,
            _ => old.image(svc),
        };
        previous.push((*svc, image));
    }

    steps.step(format!("getting bty {target} images"));
    let mut boot = images::Boot::new(
        media::Options {
            from: a.from.clone(),
            cache: None,
        },
        super::media_ways_out(new.images != ImagesFrom::Pull, false),
    );
    super::deploy::obtain_images(&engine, &new, &services, new.images, &mut boot).await?;

    steps.step("migrating bty.toml (your edits stay)");
    let fresh = render::deploy_files(&new, None)?;
    let fresh_toml = &fresh
        .iter()
        .find(|f| f.rel.as_os_str() == "bty.toml")
        .unwrap()
        .contents;
    let toml_path = new.dest.join("bty.toml");
    let existing = std::fs::read_to_string(&toml_path).unwrap_or_default();
    let (merged, added) = crate::deploydir::migrate_bty_toml(&existing, fresh_toml)?;
    if !added.is_empty() {
        crate::deploydir::write_atomic(&toml_path, &merged, 0o644)?;
        ui::detail(format!("added {}", added.join(", ")));
    }
    // A moved [boot] dir must exist, owned by bty-web's user, before the
    // new bty-web places its image's media there.
    super::deploy::prepare_boot_dir(&new, None)?;

    // Deploys from before the bty-web -> withcache token get one now, so
    // the recreated containers (or restarted units) carry it.
    if super::add_service_token(&new)? {
        super::write_env_files(&new)?;
        ui::detail("envvars: added the bty-web -> withcache service token");
    }
    let env = super::deploy::service_env(&new)?;
    let timeout = Duration::from_secs(a.timeout);
    if new.quadlet {
        steps.step(format!("restarting the Quadlet units on bty {target}"));
        return upgrade_units(&engine, &old, &new, timeout).await;
    }
    steps.step(format!("recreating containers on bty {target}"));
    let mut failure = None;
    for svc in &services {
        if let Err(e) = containers::run_service(
            &engine,
            &new,
            svc,
            &new.image(svc),
            &target,
            env[svc.name].clone(),
        )
        .await
        {
            failure = Some(format!("{e:#}"));
            break;
        }
    }
    steps.step("waiting for health");
    if failure.is_none() {
        if let Err(u) = containers::wait_healthy(&engine, &new, &services, timeout).await {
            failure = Some(format!(
                "{} is not healthy: {}\n{}",
                u.service,
                u.state,
                super::deploy::indent(&u.logs)
            ));
        }
    }
    if let Some(why) = failure {
        ui::warn(format!("bty {target} failed: {why}"));
        eprintln!("rolling back to bty {}", old.version);
        for (svc, image) in &previous {
            containers::run_service(
                &engine,
                &old,
                svc,
                image,
                &old.version,
                env[svc.name].clone(),
            )
            .await?;
        }
        if let Err(u) = containers::wait_healthy(&engine, &old, &services, timeout).await {
            bail!(
                "upgrade to {target} failed AND the rollback to {} is not healthy: {} {}\n{}\n\
                 inspect with `bty-lab logs {}`",
                old.version,
                u.service,
                u.state,
                super::deploy::indent(&u.logs),
                old.dest.display()
            );
        }
        bail!(
            "upgrade to {target} failed; rolled back to bty {} (healthy). Cause:\n{why}",
            old.version
        );
    }
    super::write_deploy_files(&new)?;
    super::deploy::served_media(&new);
    eprintln!(
        "\nupgrade complete: {} now runs bty {target} (was {})",
        new.dest.display(),
        old.version
    );
    Ok(())
}

/// Why the media `s`'s bty-web serves is behind this bty-lab (None: it is
/// not): none there, or an agent older than this binary's version, or an
/// initrd that is not a bty media and not the operator's. The operator's
/// media (`--netboot`) that is not older counts as current.
fn media_behind(s: &render::Settings) -> Option<String> {
    let (boot, [kernel, initrd]) = crate::deploydir::boot_target(s).ok()??;
    let i = boot.join(&initrd);
    if !boot.join(&kernel).is_file() || !i.is_file() {
        return Some(format!(
            "its boot dir {} has no netboot kernel and initrd",
            boot.display()
        ));
    }
    match media::inspect(&i) {
        Ok(Some(info)) => (stack::compare_versions(&info.agent_version, stack::VERSION)
            == Some(Ordering::Less))
        .then(|| {
            format!(
                "its boot dir {} serves {}, older than this bty-lab ({})",
                boot.display(),
                media::place::describe(&info),
                stack::VERSION
            )
        }),
        _ if media::OperatorRecord::read(&boot).is_some() => None,
        _ => Some(format!("{} is not a bty initrd", i.display())),
    }
}

/// Quadlet mode: write the new units, daemon-reload, restart each, wait for
/// health; on failure put the previous unit files back and restart again.
async fn upgrade_units(
    engine: &crate::engine::Engine,
    old: &render::Settings,
    new: &render::Settings,
    timeout: Duration,
) -> Result<()> {
    use crate::quadlet;
    let services = new.services();
    let previous = quadlet::snapshot(old);
    let restart_all = |s: &render::Settings| -> Result<()> {
        quadlet::systemctl(&["daemon-reload"])?;
        for svc in s.services() {
            quadlet::systemctl(&["restart", &quadlet::service_unit(s, &svc)])?;
        }
        Ok(())
    };
    let mut failure = quadlet::install(&quadlet::units(new)?)
        .and_then(|_| restart_all(new))
        .err()
        .map(|e| format!("{e:#}"));
    if failure.is_none() {
        if let Err(u) = containers::wait_healthy(engine, new, &services, timeout).await {
            failure = Some(format!(
                "{} is not healthy: {}\n{}",
                u.service,
                u.state,
                super::deploy::indent(&u.logs)
            ));
        }
    }
    let Some(why) = failure else {
        super::write_deploy_files(new)?;
        eprintln!(
            "\nupgrade complete: {} now runs bty {} (was {}; units restarted)",
            new.dest.display(),
            new.version,
            old.version
        );
        return Ok(());
    };
    ui::warn(format!("bty {} failed: {why}", new.version));
    eprintln!("rolling back to bty {} (previous unit files)", old.version);
    for (path, text) in &previous {
        match text {
            Some(t) => {
                crate::deploydir::write_atomic(path, t, 0o644)?;
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    restart_all(old)?;
    if let Err(u) = containers::wait_healthy(engine, old, &old.services(), timeout).await {
        bail!(
            "upgrade to {} failed AND the rollback to {} is not healthy: {} {}\n{}",
            new.version,
            old.version,
            u.service,
            u.state,
            super::deploy::indent(&u.logs)
        );
    }
    bail!(
        "upgrade to {} failed; rolled back to bty {} (healthy). Cause:\n{why}",
        new.version,
        old.version
    );
}
