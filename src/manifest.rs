//! The deploy manifest: what `DEST/.bty-lab.toml` holds, so that upgrade,
//! passwd, purge, status and logs need no flag repeated. It is the deploy
//! model every command reads; rendering ([`crate::render`]) turns it into
//! files, and nothing here knows templates or the disk layout beyond the
//! manifest file itself.
//!
//! Old manifests keep parsing: every key added after the first release
//! has a serde default that means what the older bty-lab did.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::cli::ImagesFrom;
use crate::engine::Remembered;
use crate::hostaddr;
use crate::stack::{self, Service};

/// The manifest's file name inside DEST.
pub const FILE: &str = ".bty-lab.toml";

/// Host ports of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub web: u16,
    pub cache: u16,
    pub tftp: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            web: 8080,
            cache: 3000,
            tftp: 69,
        }
    }
}

/// Everything that decides what a deploy looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image tag deployed.
    pub version: String,
    pub dest: PathBuf,
    pub data_dir: PathBuf,
    pub host_addr: IpAddr,
    pub registry: String,
    pub images: ImagesFrom,
    pub tftp: bool,
    /// bty-tftp answers iPXE's second request for its own bootfile with a
    /// chain script to bty-web (the loop breaker). Absent in manifests from
    /// before it existed: on.
    #[serde(default = "yes")]
    pub second_stage: bool,
    pub systemd: bool,
    #[serde(default)]
    pub ports: Ports,
    /// The units are installed into systemd (Quadlet mode) rather than the
    /// containers created through the engine API.
    #[serde(default)]
    pub quadlet: bool,
    /// The engine the stack was deployed on; later commands use it unless
    /// `--engine` says otherwise. Absent before the first deploy (and in
    /// manifests from before it was recorded): auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Remembered>,
}

fn yes() -> bool {
    true
}

impl Manifest {
    /// DEST's manifest, if DEST is a bty-lab deploy dir.
    pub fn read(dest: &Path) -> Result<Option<Manifest>> {
        let path = dest.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let m = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(m))
    }

    /// Like [`Manifest::read`], but a missing manifest is an error naming
    /// the fix (`cmd` is the command that needs it).
    pub fn require(dest: &Path, cmd: &str) -> Result<Manifest> {
        match Manifest::read(dest)? {
            Some(m) => Ok(m),
            None => bail!(
                "{} is not a bty-lab deploy (no {FILE}); run `bty-lab deploy {}` first, \
                 or pass the right DEST to `bty-lab {cmd}`",
                dest.display(),
                dest.display()
            ),
        }
    }

    /// The manifest file's text.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string_pretty(self).context("encoding the manifest")?;
        Ok(format!(
            "# bty-lab deploy settings, read back by upgrade, passwd, purge and status.\n\
             # Change them with `bty-lab deploy --force` flags, not by hand.\n{body}"
        ))
    }

    /// `DEST/.bty-lab.toml`.
    pub fn path(&self) -> PathBuf {
        self.dest.join(FILE)
    }

    /// Services this deploy runs, in start order.
    pub fn services(&self) -> Vec<Service> {
        stack::ALL
            .into_iter()
            .filter(|s| self.tftp || s.name != stack::TFTP.name)
            .collect()
    }

    /// Compose project / container-name prefix from the deploy dir's name.
    pub fn project(&self) -> String {
        project_name(&self.dest)
    }

    /// The container name of `svc` in this deploy.
    pub fn container(&self, svc: &Service) -> String {
        stack::container_name(&self.project(), svc)
    }

    /// The stack's bridge network name.
    pub fn network(&self) -> String {
        format!("{}-bty", self.project())
    }

    /// The image reference of `svc` at this deploy's version.
    pub fn image(&self, svc: &Service) -> String {
        stack::image_ref(&self.registry, svc, &self.version)
    }

    /// The host port `svc` is published on (bty-tftp: its UDP port).
    pub fn host_port(&self, svc: &Service) -> u16 {
        match svc.name {
            n if n == stack::WEB.name => self.ports.web,
            n if n == stack::CACHE.name => self.ports.cache,
            _ => self.ports.tftp,
        }
    }

    pub fn web_url(&self) -> String {
        format!(
            "http://{}:{}",
            hostaddr::url_host(&self.host_addr),
            self.ports.web
        )
    }

    /// The bootstrap script bty-web serves iPXE, as machines reach it.
    pub fn bootstrap_url(&self) -> String {
        format!("{}/pxe-bootstrap.ipxe", self.web_url())
    }

    /// `BTY_TFTP_SECOND_STAGE` for bty-tftp: `off`, or every iPXE bootfile
    /// chaining to this deploy's bty-web.
    pub fn second_stage_spec(&self) -> String {
        if self.second_stage {
            stack::second_stage_spec(&self.bootstrap_url())
        } else {
            "off".to_string()
        }
    }

    pub fn withcache_url(&self) -> String {
        format!(
            "http://{}:{}",
            hostaddr::url_host(&self.host_addr),
            self.ports.cache
        )
    }
}

/// `bty-host` → `bty-host`; anything outside [a-z0-9_-] becomes `-`.
pub fn project_name(dest: &Path) -> String {
    let base = dest
        .file_name()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut p: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    p = p.trim_matches('-').to_string();
    if p.is_empty() || !p.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        p = format!("bty{p}");
    }
    p
}

/// Refuse paths that compose, Quadlet or bind-mount syntax would misread.
pub fn check_path(what: &str, p: &Path) -> Result<()> {
    let s = p
        .to_str()
        .with_context(|| format!("{what} {} is not UTF-8", p.display()))?;
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, ':' | ',' | '"' | '\'' | '$' | '#' | '\\') || c.is_control())
    {
        bail!("{what} {s:?} contains {c:?}, which bind-mount and compose syntax cannot carry; choose another path");
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The manifest the unit tests start from.
    pub fn sample() -> Manifest {
        Manifest {
            version: "0.1.0".into(),
            dest: "/opt/bty".into(),
            data_dir: "/opt/bty/data".into(),
            host_addr: "10.0.0.5".parse().unwrap(),
            registry: stack::DEFAULT_REGISTRY.into(),
            images: ImagesFrom::Auto,
            tftp: true,
            second_stage: true,
            systemd: false,
            ports: Ports::default(),
            quadlet: false,
            engine: None,
        }
    }

    #[test]
    fn project_names_are_safe() {
        assert_eq!(project_name(Path::new("/opt/bty-host")), "bty-host");
        assert_eq!(project_name(Path::new("/x/My Lab")), "my-lab");
        assert_eq!(project_name(Path::new("/x/..--")), "bty");
        assert_eq!(project_name(Path::new("/x/_a")), "bty_a");
    }

    #[test]
    fn paths_with_mount_syntax_are_refused() {
        assert!(check_path("DEST", Path::new("/opt/a:b")).is_err());
        assert!(check_path("DEST", Path::new("/opt/$HOME")).is_err());
        assert!(check_path("DEST", Path::new("/opt/my lab")).is_ok());
    }

    #[test]
    fn manifests_from_before_the_new_keys_still_parse() {
        let old = "version = \"0.1.0\"\ndest = \"/opt/bty\"\ndata_dir = \"/opt/bty/data\"\n\
                   host_addr = \"10.0.0.5\"\nregistry = \"ghcr.io/bty-rs\"\nimages = \"pull\"\n\
                   tftp = true\nsystemd = false\n";
        let m: Manifest = toml::from_str(old).unwrap();
        assert!(m.second_stage, "loop breaker off for an old manifest");
        assert_eq!(m.engine, None);
        assert_eq!(m.images, ImagesFrom::Pull);
        assert_eq!(m.ports, Ports::default());
        assert!(!m.quadlet);
        // And the new keys round-trip, through the file's own text.
        let mut m = sample();
        m.second_stage = false;
        m.engine = Some(Remembered {
            kind: crate::engine::Kind::Podman,
            addr: "/run/podman/podman.sock".into(),
        });
        let text = m.to_toml().unwrap();
        assert!(text.starts_with("# bty-lab deploy settings"), "{text}");
        assert!(text.contains("[engine]"), "{text}");
        assert_eq!(toml::from_str::<Manifest>(&text).unwrap(), m);
    }

    #[test]
    fn a_manifest_is_read_back_and_a_missing_one_names_the_fix() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), None);
        let e = Manifest::require(d.path(), "purge")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a bty-lab deploy"), "{e}");
        assert!(e.contains("`bty-lab purge`"), "{e}");
        let mut m = sample();
        m.dest = d.path().to_path_buf();
        std::fs::write(m.path(), m.to_toml().unwrap()).unwrap();
        assert_eq!(Manifest::require(d.path(), "purge").unwrap(), m);
    }

    #[test]
    fn names_follow_the_deploy_dir() {
        let m = sample();
        assert_eq!(m.project(), "bty");
        assert_eq!(m.container(&stack::WEB), "bty-bty-web");
        assert_eq!(m.network(), "bty-bty");
        assert_eq!(m.image(&stack::CACHE), "ghcr.io/bty-rs/withcache:0.1.0");
        assert_eq!(m.host_port(&stack::TFTP), 69);
        let mut m = m;
        m.tftp = false;
        assert!(m.services().iter().all(|s| s.name != stack::TFTP.name));
    }
}
