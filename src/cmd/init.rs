//! `bty-lab init`: render only, no engine.

use anyhow::{bail, Result};

use crate::cli::InitArgs;
use crate::cmd::{files, resolve};
use crate::{deploydir, kube, render, safefs, secrets, stack, ui};

/// The file `init --kubernetes` writes into DEST.
pub const KUBE_FILE: &str = "bty.yaml";

/// `init --kubernetes`: DEST/bty.yaml, the Helm chart rendered with the
/// flags and fresh secrets (mode 0600: it holds them).
fn kubernetes(a: &InitArgs) -> Result<()> {
    let settings = kube_settings(a)?;
    kube::check(&settings)?;
    kube::check_namespace(&a.kube.namespace)?;
    let r = &a.render;
    let dir = safefs::make_dir(&r.dest)?;
    let out = dir.shown(KUBE_FILE.as_ref());
    if dir.kind(KUBE_FILE.as_ref()).is_some() && !r.force {
        return Err(crate::exit::refused(format!(
            "{} exists (its secrets are the running cluster's); keep it, or replace it and \
             its secrets with --force",
            out.display()
        )));
    }
    let password = secrets::generated_password();
    let s = render::Secrets::generate(&password)?;
    let release = kube::Release {
        name: "bty".into(),
        namespace: a.kube.namespace.clone(),
    };
    let rendered = kube::render(&kube::values(&settings, &s)?, &release)?;
    let mut text = format!(
        "# bty for Kubernetes, rendered by bty-lab {} from its Helm chart\n\
         # (deploy/helm/bty). It holds the stack's secrets: keep it private.\n\
         # Apply: kubectl apply -f {KUBE_FILE}\n",
        stack::VERSION
    );
    let ns = kube::namespace_doc(&release.namespace);
    let objects = rendered.docs.len() + usize::from(ns.is_some());
    text.push_str(&ns.unwrap_or_default());
    text.push_str(&rendered.to_multidoc());
    dir.write_new(KUBE_FILE.as_ref(), text.as_bytes(), 0o600)?;
    let _ = deploydir::chown_to_sudo_user(&r.dest);
    eprintln!(
        "bty-lab init: wrote {} ({objects} objects, namespace {})\n",
        out.display(),
        release.namespace
    );
    let change = "to change it, put a new argon2id hash in the bty-secrets Secret";
    eprintln!("{}", secrets::new_login_line(&password, change));
    eprintln!("\n{}", rendered.notes.trim_end());
    eprintln!("\nNext: kubectl apply -f {}", out.display());
    Ok(())
}

/// The chart's settings from the flags; host-only flags are refused.
fn kube_settings(a: &InitArgs) -> Result<kube::Settings> {
    let r = &a.render;
    let host_only = [
        ("--data-dir", r.data_dir.is_some()),
        ("--host-addr", r.host_addr.is_some()),
        ("--systemd", r.systemd),
        ("--port-web", r.port_web.is_some()),
        ("--port-cache", r.port_cache.is_some()),
    ];
    if let Some((flag, _)) = host_only.iter().find(|(_, set)| *set) {
        bail!(
            "{flag} is for a container host, not --kubernetes (the chart's Services pick the \
             ports: edit deploy/helm/bty/values.yaml or the rendered {KUBE_FILE})"
        );
    }
    Ok(kube::Settings {
        replicas: a.kube.replicas,
        database_url: a.kube.database_url.clone().filter(|u| !u.is_empty()),
        registry: r
            .registry
            .clone()
            .unwrap_or_else(|| stack::DEFAULT_REGISTRY.to_string()),
        tag: a
            .kube
            .tag
            .clone()
            .unwrap_or_else(|| stack::VERSION.to_string()),
        withcache_url: a.kube.withcache_url.clone(),
        tftp: !r.no_tftp,
        tftp_port: r.tftp_port,
        no_second_stage: r.no_second_stage,
    })
}

pub fn run(a: InitArgs) -> Result<()> {
    if a.kube.kubernetes {
        return kubernetes(&a);
    }
    let r = resolve::resolve(&a.render, None)?;
    let s = r.manifest;
    resolve::check_dest(&s.dest, r.old.is_some(), a.render.force)?;
    eprintln!(
        "bty-lab init: rendering {} (bty {})",
        s.dest.display(),
        s.version
    );
    files::rewrite_deploy_files(&s)?;
    let made = std::fs::create_dir_all(s.data_dir.join("bty"))
        .and_then(|_| std::fs::create_dir_all(s.data_dir.join("withcache")));
    if let Err(e) = made {
        ui::warn(format!(
            "could not create the data dirs under {}: {e}; deploy will create them as root",
            s.data_dir.display()
        ));
    }
    let _ = deploydir::chown_to_sudo_user(&s.dest);
    eprintln!("\nNext: sudo bty-lab deploy {}", s.dest.display());
    Ok(())
}
