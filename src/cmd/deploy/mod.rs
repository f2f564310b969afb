//! `bty-lab deploy`: check, write the deploy files, lay out the data, get
//! the images, start the stack, wait until it is healthy. The plan and
//! the checks that need no engine are [`plan`]'s, starting is [`start`]'s.

pub mod plan;
pub mod start;

use anyhow::Result;

use crate::cli::{DeployArgs, ImagesFrom};
use crate::cmd::{boot, checks, files, Host};
use crate::engine::{self, Bollard, ContainerEngine};
use crate::images::{self, Source};
use crate::manifest::Manifest;
use crate::media::{self, Media};
use crate::{deploydir, quadlet, secrets, ui};
pub use plan::Plan;

pub async fn run(a: DeployArgs) -> Result<()> {
    let mut plan = Plan::new(&a)?;
    let chosen = chosen_password(&a, &plan)?;
    let mut steps = ui::Steps::new(4 + start::STEPS);
    steps.step("checking");
    let host = Host::this();
    plan.check(&host)?;
    let engine = connect(&mut plan).await?;
    settle_mode(&engine, &mut plan, &host)?;
    checks::ports_free(&engine, &plan.m).await?;
    let (operator, mut source) = media_first(&plan).await?;
    let m = &plan.m;
    steps.step(format!("writing deploy files to {}", m.dest.display()));
    let generated = files::write_deploy_files(m, chosen.as_deref())?;
    steps.step(format!("creating data layout in {}", m.data_dir.display()));
    lay_out_data(m, operator.as_ref())?;
    steps.step(format!("getting images ({})", images::describe(m.images)));
    images::obtain(&engine, &wanted(m), m.images, &mut source).await?;
    start::start(&engine, &quadlet::Host, m, &mut steps, plan.timeout).await?;
    boot::served_media(m);
    summary(m, generated.as_deref());
    Ok(())
}

/// `--password-stdin`'s password, read before anything is done; only a
/// fresh DEST takes one (`passwd` changes an existing one).
fn chosen_password(a: &DeployArgs, plan: &Plan) -> Result<Option<String>> {
    if !a.password_stdin {
        return Ok(None);
    }
    let dest = &plan.m.dest;
    if dest.join("envvars").exists() {
        return Err(crate::exit::refused(format!(
            "{} already has a password; --password-stdin only sets the first one. Change it \
             with `bty-lab passwd {} --password-stdin`",
            dest.display(),
            dest.display()
        )));
    }
    secrets::password_from_stdin().map(Some)
}

/// Connect to the engine the plan names (or DEST remembers), refuse to
/// move DEST off another engine still running it, and remember this one.
async fn connect(plan: &mut Plan) -> Result<Bollard> {
    let m = &plan.m;
    let engine = engine::connect_for(plan.engine, m.engine.as_ref(), &m.path()).await?;
    let remembered = plan.engine.is_none() && m.engine.is_some();
    ui::detail(format!(
        "engine: {} {} at {}{}",
        engine.kind(),
        engine.version(),
        engine.addr(),
        if remembered {
            " (remembered from the last deploy)"
        } else {
            ""
        }
    ));
    checks::engine_switch(&engine, m).await?;
    plan.m.engine = Some(engine.remembered());
    Ok(engine)
}

/// Say the host address, and settle engine or Quadlet mode.
fn settle_mode(engine: &impl ContainerEngine, plan: &mut Plan, host: &Host) -> Result<()> {
    ui::detail(format!("host address: {}", plan.m.host_addr));
    if plan.m.host_addr.is_loopback() {
        ui::warn(
            "the host address is loopback: machines on the LAN, and bty-web inside its \
             container, cannot reach withcache there; pass --host-addr with the LAN address",
        );
    }
    if plan.quadlet_on(host, engine.kind(), engine.version(), engine.addr())? {
        plan.m.quadlet = true;
        plan.m.systemd = true;
        ui::detail(format!(
            "mode: Quadlet units in {} (systemd starts the containers)",
            quadlet::unit_dir().display()
        ));
    }
    Ok(())
}

/// The netboot media, before anything is written: the operator's must be
/// complete, and images built here carry this binary's (got now when
/// they will surely be built, else only if `auto` comes to build).
async fn media_first(plan: &Plan) -> Result<(Option<Media>, Source)> {
    let operator = match &plan.netboot {
        Some(dir) => Some(boot::operator_media(dir)?),
        None => None,
    };
    let opts = media::Options {
        from: plan.from.clone(),
        cache: None,
    };
    let hint = media::ways_out(plan.m.images != ImagesFrom::Pull, false);
    let mut source = Source::new(opts, hint);
    if plan.m.images == ImagesFrom::Local {
        source.media().await?;
    }
    Ok((operator, source))
}

/// The data dirs with their owners, bty-web's boot dir (with the
/// operator's media), and DEST given back to the sudo user.
fn lay_out_data(m: &Manifest, operator: Option<&Media>) -> Result<()> {
    for d in deploydir::make_data_layout(m)? {
        ui::detail(format!("created {}", d.display()));
    }
    boot::prepare_boot_dir(m, operator)?;
    if let Some(user) = deploydir::chown_to_sudo_user(&m.dest)? {
        ui::detail(format!("{} given back to {user}", m.dest.display()));
    }
    Ok(())
}

/// Each service with the image it runs.
pub fn wanted(m: &Manifest) -> Vec<images::Wanted> {
    m.services()
        .into_iter()
        .map(|svc| (svc, m.image(&svc)))
        .collect()
}

/// Does envvars still hold the default password's hash?
fn default_password(m: &Manifest) -> bool {
    crate::envvars::read(&m.dest).is_ok_and(|v| {
        v.iter().any(|(k, h)| {
            k.ends_with("_ADMIN_PASSWORD_HASH")
                && secrets::verify_password(secrets::DEFAULT_PASSWORD, h)
        })
    })
}

/// The URLs, and the login: the generated password, shown only now.
fn summary(m: &Manifest, generated: Option<&str>) {
    eprintln!(
        "\ndeploy complete: bty {} at {}",
        m.version,
        m.dest.display()
    );
    eprintln!("  bty-web UI:  {}/ui", m.web_url());
    eprintln!("  withcache:   {}/", m.withcache_url());
    if m.tftp {
        eprintln!("  TFTP:        udp/{} on {}", m.ports.tftp, m.host_addr);
    }
    match generated {
        Some(pw) => eprintln!(
            "{}",
            secrets::new_login_line(
                pw,
                &format!("change it with `sudo bty-lab passwd {}`", m.dest.display())
            )
        ),
        None => eprintln!(
            "  login:       {} (the password set at the first deploy, or with passwd)",
            secrets::ADMIN_USER
        ),
    }
    if default_password(m) {
        ui::warn(format!(
            "the password is still the default `bty-lab`; change it before exposing the host: \
             bty-lab passwd {}",
            m.dest.display()
        ));
    }
}

#[cfg(test)]
mod tests;
