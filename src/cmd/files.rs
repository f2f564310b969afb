//! Writing DEST's files, shared by init, deploy, upgrade and passwd: the
//! rendered files (keeping envvars and the operator's bty.toml edits), the
//! per-service env files, the manifest, and each container's environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

use crate::deploydir::{self, Change};
use crate::manifest::Manifest;
use crate::render::{self, File, Secrets};
use crate::{envvars, ui};

/// Render and write the deploy files, keeping envvars and the operator's
/// bty.toml (only adding keys it lacks). Prints what changed. A new
/// envvars gets the hash of `chosen`, else of a random password, which is
/// returned: the caller shows it once, nothing keeps it.
pub fn write_deploy_files(m: &Manifest, chosen: Option<&str>) -> Result<Option<String>> {
    deploydir::refuse_links(m)?;
    let envvars_exists = m.dest.join("envvars").exists();
    // Callers refuse this before doing anything (deploy's --password-stdin).
    anyhow::ensure!(
        !(envvars_exists && chosen.is_some()),
        "a chosen password only goes into a new envvars"
    );
    let mut generated = None;
    let secrets = if envvars_exists {
        None
    } else {
        let password = match chosen {
            Some(p) => p.to_string(),
            None => generated
                .insert(crate::secrets::generated_password())
                .clone(),
        };
        Some(Secrets::generate(&password)?)
    };
    let mut files = render::deploy_files(m, secrets.as_ref())?;
    let note = keep_bty_toml(m, &mut files)?;
    let added = match envvars_exists {
        true => keep_envvars(m, &mut files)?,
        false => Vec::new(),
    };
    files.push(render::manifest_file(m)?);
    std::fs::create_dir_all(&m.dest).map_err(|e| {
        anyhow!(
            "creating {}: {e} (choose a writable DEST or run with sudo)",
            m.dest.display()
        )
    })?;
    // From here on DEST is this directory, whatever happens above it.
    crate::safefs::anchor(&m.dest)?;
    report(deploydir::write_files(&m.dest, &files)?, note.as_deref());
    if !added.is_empty() {
        ui::detail(format!(
            "envvars: kept, added the {}",
            added.join(" and the ")
        ));
    } else if envvars_exists {
        ui::detail("envvars: kept (secrets unchanged)");
    }
    Ok(generated)
}

/// The deploy files with no chosen password (init, upgrade): a new
/// envvars' random password is shown here, once.
pub fn rewrite_deploy_files(m: &Manifest) -> Result<()> {
    if let Some(pw) = write_deploy_files(m, None)? {
        let change = format!("change it with `sudo bty-lab passwd {}`", m.dest.display());
        eprintln!("{}", crate::secrets::new_login_line(&pw, &change));
    }
    Ok(())
}

/// An existing envvars is kept (private, given the shared secrets it
/// lacks: what was added); the per-service env files follow it as it is
/// now (the operator may have edited it, or passwd rotated a secret).
fn keep_envvars(m: &Manifest, files: &mut Vec<File>) -> Result<Vec<String>> {
    let added = add_shared_secrets(m)?;
    crate::safefs::Dir::open(&m.dest)?.chmod("envvars".as_ref(), 0o600)?;
    files.extend(render::env_files(m, &envvars::read(&m.dest)?)?);
    Ok(added)
}

/// An existing bty.toml is the operator's: replace the rendered one with
/// it, plus the keys it lacks. The line that says so, if it exists.
fn keep_bty_toml(m: &Manifest, files: &mut [File]) -> Result<Option<String>> {
    let Ok(existing) = std::fs::read_to_string(m.dest.join("bty.toml")) else {
        return Ok(None);
    };
    let Some(f) = files.iter_mut().find(|f| f.rel == Path::new("bty.toml")) else {
        return Ok(None);
    };
    let (merged, added) = deploydir::migrate_bty_toml(&existing, &f.contents)?;
    f.contents = merged;
    Ok(Some(if added.is_empty() {
        "kept (your edits stay)".to_string()
    } else {
        format!("kept, added {}", added.join(", "))
    }))
}

/// One line per file written; bty.toml says it was kept, if it was.
fn report(changes: Vec<(PathBuf, Change)>, bty_toml: Option<&str>) {
    for (rel, change) in changes {
        if let Some(note) = bty_toml.filter(|_| rel == Path::new("bty.toml")) {
            ui::detail(format!("{}: {note}", rel.display()));
            continue;
        }
        let what = match change {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        };
        ui::detail(format!("{}: {what}", rel.display()));
    }
}

/// Give an envvars from before a shared secret (the service token, the
/// relay key) that secret (both keys, one value), keeping every other
/// line. What was added.
pub fn add_shared_secrets(m: &Manifest) -> Result<Vec<String>> {
    let path = m.dest.join("envvars");
    let mut text =
        std::fs::read_to_string(&path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    let mut added = Vec::new();
    for secret in envvars::SHARED_SECRETS {
        let fresh = crate::secrets::session_secret();
        if let Some(new) = envvars::add_shared_secret(&text, secret, &fresh) {
            text = new;
            added.push(format!("{} ({})", secret.what, secret.keys.join(" and ")));
        }
    }
    if !added.is_empty() {
        deploydir::write_atomic(&path, &text, 0o600)?;
    }
    Ok(added)
}

/// Rewrite `DEST/env/<service>.env` from envvars (after it changed).
pub fn write_env_files(m: &Manifest) -> Result<()> {
    let files = render::env_files(m, &envvars::read(&m.dest)?)?;
    deploydir::write_files(&m.dest, &files)?;
    Ok(())
}

/// Each service's container environment, by service name.
pub type Env = BTreeMap<&'static str, Vec<String>>;

/// Env for each service's container from envvars: only its own keys, the
/// same set its `env/<service>.env` file holds for compose and Quadlet.
pub fn service_env(m: &Manifest) -> Result<Env> {
    let vars = envvars::read(&m.dest)?;
    Ok(m.services()
        .iter()
        .map(|svc| {
            let env = render::service_vars(m, svc, &vars)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (svc.name, env)
        })
        .collect())
}

/// DEST's manifest, for a command that needs an existing deploy.
pub fn manifest(dest: &Path, cmd: &str) -> Result<Manifest> {
    let dest = deploydir::absolute(dest)?;
    // DEST is opened once for the whole command (see safefs::anchor).
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
        crate::safefs::anchor(&dest)?;
    }
    Manifest::require(&dest, cmd).with_context(|| format!("bty-lab {cmd}"))
}
