//! `init`'s and `deploy`'s flags, over what DEST's manifest recorded, over
//! the defaults: the manifest the command will write. Every value is
//! checked here, before anything is written.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::cli::{ImagesFrom, RenderArgs};
use crate::manifest::{self, Manifest, Ports};
use crate::{deploydir, exit, hostaddr, stack};

/// DEST as given and as its manifest left it.
pub struct Resolved {
    /// The manifest this command will write.
    pub manifest: Manifest,
    /// What DEST's manifest says now (None: a new deploy).
    pub old: Option<Manifest>,
}

/// Read DEST's manifest and lay the flags over it.
pub fn resolve(a: &RenderArgs, images: Option<ImagesFrom>) -> Result<Resolved> {
    let dest = deploydir::absolute(&a.dest)?;
    manifest::check_path("DEST", &dest)?;
    let old = Manifest::read(&dest)?;
    let manifest = layer(a, images, dest, old.as_ref())?;
    Ok(Resolved { manifest, old })
}

/// `a` over `old` over the defaults, for DEST `dest`.
fn layer(
    a: &RenderArgs,
    images: Option<ImagesFrom>,
    dest: PathBuf,
    old: Option<&Manifest>,
) -> Result<Manifest> {
    let data_dir = data_dir(a, &dest, old)?;
    let ours = |f: fn(&Manifest) -> bool| old.is_none_or(f);
    Ok(Manifest {
        version: old.map_or(stack::VERSION.to_string(), |o| o.version.clone()),
        host_addr: host_addr(a, old)?,
        registry: registry(a, old)?,
        images: images.or(old.map(|o| o.images)).unwrap_or(ImagesFrom::Auto),
        tftp: !a.no_tftp && (a.tftp || ours(|o| o.tftp)),
        second_stage: !a.no_second_stage && (a.second_stage || ours(|o| o.second_stage)),
        systemd: a.systemd || old.is_some_and(|o| o.systemd),
        ports: ports(a, old)?,
        quadlet: old.is_some_and(|o| o.quadlet),
        // deploy replaces it with the engine it connects to.
        engine: old.and_then(|o| o.engine.clone()),
        dest,
        data_dir,
    })
}

fn data_dir(a: &RenderArgs, dest: &Path, old: Option<&Manifest>) -> Result<PathBuf> {
    let d = match (&a.data_dir, old) {
        (Some(d), _) => deploydir::absolute(d)?,
        (None, Some(o)) => o.data_dir.clone(),
        (None, None) => dest.join("data"),
    };
    manifest::check_path("--data-dir", &d)?;
    Ok(d)
}

fn host_addr(a: &RenderArgs, old: Option<&Manifest>) -> Result<IpAddr> {
    match (&a.host_addr, old) {
        (Some(h), _) => hostaddr::validate(h),
        (None, Some(o)) => Ok(o.host_addr),
        (None, None) => match hostaddr::detect() {
            Some(ip) => Ok(ip),
            None => bail!(
                "could not find this host's LAN address (no default route); \
                 pass --host-addr with the address machines reach this host on"
            ),
        },
    }
}

fn registry(a: &RenderArgs, old: Option<&Manifest>) -> Result<String> {
    let registry = a
        .registry
        .clone()
        .or_else(|| old.map(|o| o.registry.clone()))
        .unwrap_or_else(|| stack::DEFAULT_REGISTRY.to_string());
    let bad = |c: char| c.is_whitespace() || c == '"' || c == '\'';
    if registry.is_empty() || registry.chars().any(bad) {
        bail!(
            "--registry {registry:?} is not a registry prefix like ghcr.io/bty-rs or \
             127.0.0.1:5000/bty"
        );
    }
    Ok(registry)
}

fn ports(a: &RenderArgs, old: Option<&Manifest>) -> Result<Ports> {
    let op = old.map(|o| o.ports).unwrap_or_default();
    let ports = Ports {
        web: a.port_web.unwrap_or(op.web),
        cache: a.port_cache.unwrap_or(op.cache),
        tftp: a.tftp_port.unwrap_or(op.tftp),
    };
    if ports.web == ports.cache {
        bail!("bty-web and withcache cannot share port {}", ports.web);
    }
    Ok(ports)
}

/// Refuse a DEST holding files bty-lab did not write, unless --force.
pub fn check_dest(dest: &Path, has_manifest: bool, force: bool) -> Result<()> {
    if has_manifest || force {
        return Ok(());
    }
    let foreign = deploydir::foreign_entries(dest)?;
    if !foreign.is_empty() {
        return Err(exit::refused(format!(
            "{} already holds files bty-lab did not write ({}); choose an empty directory \
             or pass --force to render into it anyway",
            dest.display(),
            foreign.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> RenderArgs {
        let mut argv = vec!["bty-lab", "init", "/opt/lab", "--host-addr", "10.0.0.5"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Init(i) => i.render,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_win_over_the_manifest_which_wins_over_defaults() {
        let fresh = layer(&args(&[]), None, "/opt/lab".into(), None).unwrap();
        assert_eq!(fresh.data_dir, PathBuf::from("/opt/lab/data"));
        assert_eq!(fresh.images, ImagesFrom::Auto);
        assert!(fresh.tftp && fresh.second_stage && !fresh.systemd);
        let mut old = fresh.clone();
        old.tftp = false;
        old.ports.web = 9080;
        old.version = "0.0.9".into();
        let again = layer(&args(&[]), None, "/opt/lab".into(), Some(&old)).unwrap();
        assert!(!again.tftp, "--no-tftp forgotten");
        assert_eq!((again.ports.web, again.version.as_str()), (9080, "0.0.9"));
        let back = layer(
            &args(&["--tftp"]),
            Some(ImagesFrom::Pull),
            "/x".into(),
            Some(&old),
        );
        let back = back.unwrap();
        assert!(back.tftp && back.images == ImagesFrom::Pull);
    }

    #[test]
    fn bad_values_are_refused_before_anything_is_written() {
        let l = |extra: &[&str]| layer(&args(extra), None, "/opt/lab".into(), None);
        let e = l(&["--port-web", "3000"]).unwrap_err().to_string();
        assert!(e.contains("cannot share port 3000"), "{e}");
        let e = l(&["--registry", "a b"]).unwrap_err().to_string();
        assert!(e.contains("is not a registry prefix"), "{e}");
        let e = l(&["--data-dir", "/d:x"]).unwrap_err().to_string();
        assert!(e.contains("bind-mount"), "{e}");
    }

    #[test]
    fn foreign_files_in_dest_are_a_refusal() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "").unwrap();
        let e = check_dest(d.path(), false, false).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
        assert!(e.to_string().contains("notes.txt"), "{e}");
        check_dest(d.path(), false, true).unwrap();
        check_dest(d.path(), true, false).unwrap();
    }
}
