//! `bty-lab passwd`: new argon2id hash + new session secret in envvars,
//! recreate the service, prove the new password works and others do not.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cli::{PasswdArgs, PasswdService};
use crate::cmd::{files, stdin_is_terminal};
use crate::engine::{self, ContainerEngine};
use crate::manifest::Manifest;
use crate::stack::{self, Service};
use crate::{containers, envvars, health, http, quadlet, secrets, ui};

pub async fn run(a: PasswdArgs) -> Result<()> {
    let m = files::manifest(&a.dest, "passwd")?;
    let targets = targets(a.service);
    let password = new_password(&a)?;
    secrets::check_strength(&password)?;
    let engine = engine::connect_for(a.engine.engine, m.engine.as_ref(), &m.path()).await?;
    let timeout = Duration::from_secs(a.timeout);
    let mut steps = ui::Steps::new(1 + 2 * targets.len());
    steps.step("writing the new hash and session secret to envvars");
    write_secrets(&m, &targets, &password).await?;
    let env = files::service_env(&m)?;
    for svc in &targets {
        steps.step(format!(
            "restarting {} (every old session is logged out)",
            svc.name
        ));
        restart(&engine, &m, svc, env[svc.name].clone(), timeout).await?;
        steps.step(format!("checking the {} login", svc.name));
        verify_login(&m, svc, &password).await?;
        ui::detail("new password accepted, others refused");
    }
    if a.generate {
        println!("{password}");
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    eprintln!("password changed for {}", names.join(" and "));
    Ok(())
}

fn targets(s: PasswdService) -> Vec<Service> {
    match s {
        PasswdService::BtyWeb => vec![stack::WEB],
        PasswdService::Withcache => vec![stack::CACHE],
        PasswdService::All => vec![stack::WEB, stack::CACHE],
    }
}

/// Generated, from stdin's first line, or asked twice on a terminal.
fn new_password(a: &PasswdArgs) -> Result<String> {
    if a.generate {
        return Ok(secrets::generated_password());
    }
    if a.password_stdin {
        return secrets::password_from_stdin();
    }
    if !stdin_is_terminal() {
        bail!("stdin is not a terminal; pass --password-stdin or --generate");
    }
    Ok(dialoguer::Password::new()
        .with_prompt("New password")
        .with_confirmation("Repeat it", "the two entries differ")
        .interact()?)
}

/// A new hash and session secret for each target in envvars, and the env
/// files that follow it.
async fn write_secrets(m: &Manifest, targets: &[Service], password: &str) -> Result<()> {
    let path = m.dest.join("envvars");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut updates = Vec::new();
    for svc in targets {
        let login = svc.login.context("a service without a login")?;
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&pw)).await??;
        updates.push((login.hash_key, hash));
        updates.push((login.secret_key, secrets::session_secret()));
    }
    let pairs: Vec<(&str, &str)> = updates.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::deploydir::write_atomic(&path, &envvars::set(&text, &pairs), 0o600)?;
    files::write_env_files(m)
}

/// Restart `svc` so it reads the new envvars, and wait for it.
async fn restart(
    engine: &impl ContainerEngine,
    m: &Manifest,
    svc: &Service,
    env: Vec<String>,
    timeout: Duration,
) -> Result<()> {
    if m.quadlet {
        // The unit reads env/<service>.podman.env at start.
        let unit = quadlet::service_unit(m, svc);
        quadlet::Systemd::systemctl(&quadlet::Host, &["restart", &unit])?;
    } else {
        recreate_same_image(engine, m, svc, env).await?;
    }
    health::wait_healthy(engine, m, &[*svc], timeout)
        .await
        .map_err(|u| crate::exit::unhealthy(format!("after the restart, {u}")))
}

/// Recreate a service's container with the image it runs now (env is fixed
/// at create time, so a restart would not pick up the new envvars).
pub async fn recreate_same_image(
    engine: &impl ContainerEngine,
    m: &Manifest,
    svc: &Service,
    env: Vec<String>,
) -> Result<()> {
    let name = m.container(svc);
    let Some(c) = engine
        .inspect_container(&name)
        .await
        .map_err(|e| anyhow!("inspecting container {name}: {e}"))?
    else {
        bail!(
            "{name} is not there; run `bty-lab deploy {}` first",
            m.dest.display()
        );
    };
    let image = if c.image.is_empty() {
        m.image(svc)
    } else {
        c.image
    };
    let version = c
        .labels
        .get(containers::LABEL_VERSION)
        .cloned()
        .unwrap_or_else(|| m.version.clone());
    containers::run_service(engine, m, svc, &image, &version, env).await?;
    Ok(())
}

/// Basic auth against the service's probe path on the host port.
pub async fn verify_login(m: &Manifest, svc: &Service, password: &str) -> Result<()> {
    let login = svc.login.context("a service without a login")?;
    let url = format!("http://127.0.0.1:{}{}", m.host_port(svc), login.probe_path);
    let (pw, wrong, u) = (
        password.to_string(),
        secrets::generated_password(),
        url.clone(),
    );
    let (good, bad) = tokio::task::spawn_blocking(move || {
        let t = Duration::from_secs(10);
        let get = |p: &str| http::get(&u, Some(("bty-lab", p)), t);
        (get(&pw), get(&wrong))
    })
    .await?;
    let good = good.with_context(|| format!("logging in at {url}"))?.0;
    let bad = bad.with_context(|| format!("probing {url}"))?.0;
    if matches!(good, 401 | 403) {
        bail!(
            "{url} refused the new password ({good}); envvars holds the new hash, check \
             `bty-lab logs`"
        );
    }
    if !matches!(bad, 401 | 403) {
        bail!("{url} accepted a wrong password ({bad}); the service is not enforcing its login");
    }
    Ok(())
}
