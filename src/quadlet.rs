//! Quadlet mode: the rendered units installed into systemd's Quadlet
//! directory and driven with `systemctl`; health is still read from the
//! Podman API, the same way as in engine mode. What is asked of systemd
//! goes through the [`Systemd`] trait ([`Host`] is this host's), so the
//! Quadlet paths of deploy and upgrade are unit-tested like engine mode.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::containers::Removal;
use crate::manifest::Manifest;
use crate::stack::{self, Service};

/// Where rootful Quadlet reads `.container` units.
pub const UNIT_DIR: &str = "/etc/containers/systemd";

/// The Quadlet directory; `BTY_LAB_QUADLET_DIR` redirects it (tests: these
/// machines run no systemd, so nothing may land in /etc).
pub fn unit_dir() -> PathBuf {
    std::env::var_os("BTY_LAB_QUADLET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| UNIT_DIR.into())
}

/// systemd is PID 1 when this directory exists (sd_booted(3)).
/// `BTY_LAB_SYSTEMD_RUNDIR` points the check elsewhere for tests.
pub fn systemd_running() -> bool {
    let p = std::env::var_os("BTY_LAB_SYSTEMD_RUNDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run/systemd/system".into());
    p.is_dir()
}

/// Podman runs Quadlet units from 4.4 on.
pub fn podman_has_quadlet(version: &str) -> bool {
    matches!(
        stack::compare_versions(version, "4.4.0"),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// Installed file name: prefixed with the project so two deploys on one host
/// do not share units.
pub fn unit_file(s: &Manifest, svc: &Service) -> String {
    format!("{}.container", s.container(svc))
}

/// The systemd service Quadlet generates from [`unit_file`].
pub fn service_unit(s: &Manifest, svc: &Service) -> String {
    format!("{}.service", s.container(svc))
}

/// What bty-lab asks of systemd: where the Quadlet units go, and
/// `systemctl ARGS`.
pub trait Systemd: Sync {
    /// The Quadlet directory the units are installed into.
    fn unit_dir(&self) -> PathBuf;
    /// Run `systemctl args`; the error carries its output.
    fn systemctl(&self, args: &[&str]) -> Result<String>;
}

/// This host's systemd.
#[derive(Debug, Clone, Copy)]
pub struct Host;

impl Systemd for Host {
    fn unit_dir(&self) -> PathBuf {
        unit_dir()
    }

    fn systemctl(&self, args: &[&str]) -> Result<String> {
        systemctl(args)
    }
}

/// Run `systemctl args`; the error carries its output.
fn systemctl(args: &[&str]) -> Result<String> {
    let o = Command::new("systemctl")
        .args(args)
        .output()
        .with_context(|| format!("running systemctl {}", args.join(" ")))?;
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() {
        bail!(
            "systemctl {} failed ({}): {}{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim(),
            if out.is_empty() {
                String::new()
            } else {
                format!(" {out}")
            }
        );
    }
    Ok(out)
}

/// `systemctl is-active` of a unit (its stdout even on a non-zero exit).
pub fn unit_state(unit: &str) -> String {
    match Command::new("systemctl").args(["is-active", unit]).output() {
        Ok(o) => {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() {
                "unknown".into()
            } else {
                s
            }
        }
        Err(e) => format!("systemctl: {e}"),
    }
}

/// The rendered units of `s`, by installed path.
pub fn units(sd: &impl Systemd, s: &Manifest) -> Result<Vec<(PathBuf, String)>> {
    let files = crate::render::deploy_files(s, None)?;
    let dir = sd.unit_dir();
    let mut out = Vec::new();
    for svc in s.services() {
        let rel = PathBuf::from(format!("quadlet/{}.container", svc.name));
        let f = files
            .iter()
            .find(|f| f.rel == rel)
            .with_context(|| format!("{} was not rendered", rel.display()))?;
        out.push((dir.join(unit_file(s, &svc)), f.contents.clone()));
    }
    Ok(out)
}

/// Write the units (mode 0644) atomically; returns the paths written.
pub fn install(units: &[(PathBuf, String)]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (path, text) in units {
        crate::deploydir::write_atomic(path, text, 0o644)
            .with_context(|| format!("installing {}", path.display()))?;
        written.push(path.clone());
    }
    Ok(written)
}

/// Current contents of the installed units (None where absent), so an
/// upgrade can put them back.
pub fn snapshot(sd: &impl Systemd, s: &Manifest) -> Vec<(PathBuf, Option<String>)> {
    s.services()
        .iter()
        .map(|svc| {
            let p = sd.unit_dir().join(unit_file(s, svc));
            let t = std::fs::read_to_string(&p).ok();
            (p, t)
        })
        .collect()
}

/// Stop the units, remove their files, daemon-reload. Tolerant: says
/// what it removed and what it could not.
pub fn remove(sd: &impl Systemd, s: &Manifest) -> Removal {
    let mut r = Removal::default();
    let (removed, failed) = (&mut r.removed, &mut r.failed);
    let file = |svc: &Service| sd.unit_dir().join(unit_file(s, svc));
    for svc in s.services().iter().rev().filter(|svc| file(svc).exists()) {
        let unit = service_unit(s, svc);
        match sd.systemctl(&["stop", &unit]) {
            Ok(_) => removed.push(format!("unit {unit} (stopped)")),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    for f in s.services().iter().map(file) {
        match std::fs::remove_file(&f) {
            Ok(()) => removed.push(format!("unit file {}", f.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("{}: {e}", f.display())),
        }
    }
    if let Err(e) = sd.systemctl(&["daemon-reload"]) {
        failed.push(format!("{e:#}"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadlet_needs_podman_4_4() {
        assert!(!podman_has_quadlet("4.3.1"));
        assert!(podman_has_quadlet("4.4.0"));
        assert!(podman_has_quadlet("5.2.1"));
        assert!(!podman_has_quadlet("dev"));
    }
}
