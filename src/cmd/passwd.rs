//! `bty-lab passwd`: new argon2id hash + new session secret in envvars,
//! recreate the service, prove the new password works and others do not.

use std::io::BufRead as _;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cli::{PasswdArgs, PasswdService};
use crate::containers;
use crate::engine::{self, Engine};
use crate::manifest::Manifest;
use crate::stack::{self, Service};
use crate::{deploydir, http, secrets, ui};

pub async fn run(a: PasswdArgs) -> Result<()> {
    let s = super::deploy::manifest(&a.dest, "passwd")?;
    let targets: Vec<Service> = match a.service {
        PasswdService::BtyWeb => vec![stack::WEB],
        PasswdService::Withcache => vec![stack::CACHE],
        PasswdService::All => vec![stack::WEB, stack::CACHE],
    };
    let password = if a.generate {
        secrets::generated_password()
    } else if a.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        use std::io::IsTerminal as _;
        if !std::io::stdin().is_terminal() {
            bail!("stdin is not a terminal; pass --password-stdin or --generate");
        }
        dialoguer::Password::new()
            .with_prompt("New password")
            .with_confirmation("Repeat it", "the two entries differ")
            .interact()?
    };
    check_strength(&password)?;

    let engine = engine::connect_for(a.engine.engine, s.engine.as_ref(), &s.path()).await?;
    let mut steps = ui::Steps::new(1 + 2 * targets.len());
    steps.step("writing the new hash and session secret to envvars");
    let path = s.dest.join("envvars");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut updates = Vec::new();
    for svc in &targets {
        let login = svc.login.expect("login services");
        let pw = password.clone();
        let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&pw)).await??;
        updates.push((login.hash_key, hash));
        updates.push((login.secret_key, secrets::session_secret()));
    }
    let pairs: Vec<(&str, &str)> = updates.iter().map(|(k, v)| (*k, v.as_str())).collect();
    deploydir::write_atomic(&path, &crate::envvars::set(&text, &pairs), 0o600)?;
    super::write_env_files(&s)?;

    let env = super::deploy::service_env(&s)?;
    for svc in &targets {
        steps.step(format!(
            "restarting {} (every old session is logged out)",
            svc.name
        ));
        if s.quadlet {
            // The unit reads env/<service>.podman.env at start.
            crate::quadlet::systemctl(&["restart", &crate::quadlet::service_unit(&s, svc)])?;
            if let Err(u) =
                containers::wait_healthy(&engine, &s, &[*svc], Duration::from_secs(a.timeout)).await
            {
                return Err(crate::exit::unhealthy(format!(
                    "{} is not healthy after the restart: {}",
                    u.service, u.state
                )));
            }
        } else {
            recreate_same_image(
                &engine,
                &s,
                svc,
                env[svc.name].clone(),
                Duration::from_secs(a.timeout),
            )
            .await?;
        }
        steps.step(format!("checking the {} login", svc.name));
        verify_login(&s, svc, &password).await?;
        ui::detail("new password accepted, others refused");
    }
    if a.generate {
        println!("{password}");
    }
    eprintln!(
        "password changed for {}",
        targets
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    Ok(())
}

fn check_strength(pw: &str) -> Result<()> {
    if pw.chars().count() < 8 {
        bail!("the password is shorter than 8 characters; choose a longer one or use --generate");
    }
    if pw == secrets::DEFAULT_PASSWORD {
        bail!("that is the default password; choose another");
    }
    Ok(())
}

/// Recreate a service's container with the image it runs now (env is fixed
/// at create time, so a restart would not pick up the new envvars).
pub async fn recreate_same_image(
    engine: &Engine,
    s: &Manifest,
    svc: &Service,
    env: Vec<String>,
    timeout: Duration,
) -> Result<()> {
    let name = s.container(&svc);
    let Some(c) = containers::snapshot(engine, &name).await? else {
        bail!(
            "{name} is not there; run `bty-lab deploy {}` first",
            s.dest.display()
        );
    };
    let image = if c.image.is_empty() {
        s.image(svc)
    } else {
        c.image
    };
    let version = c
        .labels
        .get(containers::LABEL_VERSION)
        .cloned()
        .unwrap_or_else(|| s.version.clone());
    containers::run_service(engine, s, svc, &image, &version, env).await?;
    if let Err(u) = containers::wait_healthy(engine, s, &[*svc], timeout).await {
        return Err(crate::exit::unhealthy(format!(
            "{} is not healthy after the restart: {}\n{}",
            u.service,
            u.state,
            super::deploy::indent(&u.logs)
        )));
    }
    Ok(())
}

/// Basic auth against the service's probe path on the host port.
pub async fn verify_login(s: &Manifest, svc: &Service, password: &str) -> Result<()> {
    let login = svc.login.expect("login services");
    let port = if svc.name == stack::WEB.name {
        s.ports.web
    } else {
        s.ports.cache
    };
    let url = format!("http://127.0.0.1:{port}{}", login.probe_path);
    let (pw, wrong) = (password.to_string(), secrets::generated_password());
    let u = url.clone();
    let (good, bad) = tokio::task::spawn_blocking(move || {
        let t = Duration::from_secs(10);
        (
            http::get(&u, Some(("bty-lab", &pw)), t),
            http::get(&u, Some(("bty-lab", &wrong)), t),
        )
    })
    .await?;
    let good = good.with_context(|| format!("logging in at {url}"))?.0;
    let bad = bad.with_context(|| format!("probing {url}"))?.0;
    if matches!(good, 401 | 403) {
        bail!("{url} refused the new password ({good}); envvars holds the new hash, check `bty-lab logs`");
    }
    if !matches!(bad, 401 | 403) {
        bail!("{url} accepted a wrong password ({bad}); the service is not enforcing its login");
    }
    Ok(())
}
