//! One module per subcommand; shared steps live here.

pub mod deploy;
pub mod image;
pub mod init;
pub mod logs;
pub mod media;
pub mod passwd;
pub mod purge;
pub mod serve;
pub mod status;
pub mod upgrade;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::cli::{ImagesFrom, RenderArgs};
use crate::deploydir::{self, Change};
use crate::render::{self, Ports, Secrets, Settings};
use crate::{hostaddr, stack, ui};

/// Settings from flags, falling back to what the manifest recorded, then
/// to defaults. All validation happens here, before anything is written.
pub fn resolve_settings(
    a: &RenderArgs,
    images: Option<ImagesFrom>,
) -> Result<(Settings, Option<Settings>)> {
    let dest = deploydir::absolute(&a.dest)?;
    render::check_path("DEST", &dest)?;
    let old = deploydir::read_manifest(&dest)?;
    let data_dir = match (&a.data_dir, &old) {
        (Some(d), _) => deploydir::absolute(d)?,
        (None, Some(o)) => o.data_dir.clone(),
        (None, None) => dest.join("data"),
    };
    render::check_path("--data-dir", &data_dir)?;
    let host_addr = match (&a.host_addr, &old) {
        (Some(h), _) => hostaddr::validate(h)?,
        (None, Some(o)) => o.host_addr,
        (None, None) => match hostaddr::detect() {
            Some(ip) => ip,
            None => bail!(
                "could not find this host's LAN address (no default route); \
                 pass --host-addr with the address machines reach this host on"
            ),
        },
    };
    let registry = a
        .registry
        .clone()
        .or_else(|| old.as_ref().map(|o| o.registry.clone()))
        .unwrap_or_else(|| stack::DEFAULT_REGISTRY.to_string());
    if registry.is_empty()
        || registry
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        bail!("--registry {registry:?} is not a registry prefix like ghcr.io/bty-rs or 127.0.0.1:5000/bty");
    }
    let op = old.as_ref().map(|o| o.ports).unwrap_or_default();
    let ports = Ports {
        web: a.port_web.unwrap_or(op.web),
        cache: a.port_cache.unwrap_or(op.cache),
        tftp: a.tftp_port.unwrap_or(op.tftp),
    };
    if ports.web == ports.cache {
        bail!("bty-web and withcache cannot share port {}", ports.web);
    }
    let s = Settings {
        version: old
            .as_ref()
            .map(|o| o.version.clone())
            .unwrap_or_else(|| stack::VERSION.to_string()),
        dest,
        data_dir,
        host_addr,
        registry,
        images: images
            .or(old.as_ref().map(|o| o.images))
            .unwrap_or(ImagesFrom::Auto),
        tftp: !a.no_tftp && (a.tftp || old.as_ref().is_none_or(|o| o.tftp)),
        second_stage: !a.no_second_stage
            && (a.second_stage || old.as_ref().is_none_or(|o| o.second_stage)),
        systemd: a.systemd || old.as_ref().is_some_and(|o| o.systemd),
        ports,
        quadlet: old.as_ref().is_some_and(|o| o.quadlet),
        // deploy replaces it with the engine it connects to.
        engine: old.as_ref().and_then(|o| o.engine.clone()),
    };
    Ok((s, old))
}

/// Refuse a DEST holding files bty-lab did not write, unless --force.
pub fn check_dest(dest: &Path, has_manifest: bool, force: bool) -> Result<()> {
    if has_manifest || force {
        return Ok(());
    }
    let foreign = deploydir::foreign_entries(dest)?;
    if !foreign.is_empty() {
        bail!(
            "{} already holds files bty-lab did not write ({}); choose an empty directory \
             or pass --force to render into it anyway",
            dest.display(),
            foreign.join(", ")
        );
    }
    Ok(())
}

/// Render and write the deploy files, keeping envvars and the operator's
/// bty.toml (only adding keys it lacks). Prints what changed.
pub fn write_deploy_files(s: &Settings) -> Result<()> {
    let envvars_exists = s.dest.join("envvars").exists();
    let secrets = if envvars_exists {
        None
    } else {
        Some(Secrets::generate()?)
    };
    let mut files = render::deploy_files(s, secrets.as_ref())?;
    let toml_path = s.dest.join("bty.toml");
    let mut notes: Vec<(PathBuf, String)> = Vec::new();
    if let Ok(existing) = std::fs::read_to_string(&toml_path) {
        let fresh = files
            .iter()
            .find(|f| f.rel == Path::new("bty.toml"))
            .unwrap()
            .contents
            .clone();
        let (merged, added) = deploydir::migrate_bty_toml(&existing, &fresh)?;
        for f in files.iter_mut().filter(|f| f.rel == Path::new("bty.toml")) {
            f.contents = merged.clone();
        }
        let note = if added.is_empty() {
            "kept (your edits stay)".to_string()
        } else {
            format!("kept, added {}", added.join(", "))
        };
        notes.push(("bty.toml".into(), note));
    }
    let token_added = envvars_exists && add_service_token(s)?;
    if envvars_exists {
        std::fs::set_permissions(
            s.dest.join("envvars"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
    }
    if envvars_exists {
        // The per-service env files follow envvars as it is now (the
        // operator may have edited it, or passwd rotated a secret).
        files.extend(render::env_files(s, &deploydir::read_envvars(&s.dest)?)?);
    }
    files.push(deploydir::manifest_file(s)?);
    std::fs::create_dir_all(&s.dest).map_err(|e| {
        anyhow::anyhow!(
            "creating {}: {e} (choose a writable DEST or run with sudo)",
            s.dest.display()
        )
    })?;
    for (rel, change) in deploydir::write_files(&s.dest, &files)? {
        if let Some((_, n)) = notes.iter().find(|(p, _)| *p == rel) {
            if change == Change::Unchanged || rel == Path::new("bty.toml") {
                ui::detail(format!("{}: {n}", rel.display()));
                continue;
            }
        }
        let what = match change {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        };
        ui::detail(format!("{}: {what}", rel.display()));
    }
    if token_added {
        ui::detail(format!(
            "envvars: kept, added {} (the bty-web -> withcache service token)",
            deploydir::SERVICE_TOKEN_KEYS.join(" and ")
        ));
    } else if envvars_exists {
        ui::detail("envvars: kept (secrets unchanged)");
    }
    Ok(())
}

/// Give an envvars from before the service token one (both keys, one
/// value), keeping every other line. True when it was added.
pub fn add_service_token(s: &Settings) -> Result<bool> {
    let path = s.dest.join("envvars");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    match deploydir::add_service_token(&text, &crate::secrets::session_secret()) {
        Some(new) => {
            deploydir::write_atomic(&path, &new, 0o600)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Rewrite `DEST/env/<service>.env` from envvars (after passwd changed it).
pub fn write_env_files(s: &Settings) -> Result<()> {
    let files = render::env_files(s, &deploydir::read_envvars(&s.dest)?)?;
    deploydir::write_files(&s.dest, &files)?;
    Ok(())
}

/// Ask y/N on a terminal; refuse when stdin is not one.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    use std::io::IsTerminal as _;
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to proceed unattended: stdin is not a terminal; re-run with --yes to confirm"
        );
    }
    Ok(dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?)
}

/// What to do when this binary's netboot media cannot be had; `pull`:
/// the command can use pulled images instead (they carry the media).
pub fn media_ways_out(pull: bool, netboot: bool) -> String {
    let mut ways = vec![
        "let this host's apt download Debian's kernel and busybox-static packages (a Debian \
         or Ubuntu host; `apt-get update` if its indexes are stale)"
            .to_string(),
        "pass --from DIR with those .debs (`bty-lab media download --out DIR` fills DIR on a \
         host with apt)"
            .to_string(),
    ];
    if pull {
        ways.push(
            "use --images pull where a registry has the images (they carry the media)".into(),
        );
    }
    if netboot {
        ways.push(
            "pass --netboot DIR with media built elsewhere (`bty-lab media build --out DIR`)"
                .into(),
        );
    }
    format!("Ways out: {}.", ways.join("; or "))
}
