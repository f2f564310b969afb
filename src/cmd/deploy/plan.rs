//! `deploy`'s plan: the flags over DEST's manifest, and every check that
//! needs no engine (the mode, DEST, root), made before anything is written.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{DeployArgs, EngineChoice};
use crate::cmd::{resolve, Host};
use crate::engine::Kind;
use crate::manifest::Manifest;
use crate::{exit, quadlet, stack, ui};

/// What `deploy` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest it writes; its engine and Quadlet mode are settled
    /// once the engine answered.
    pub m: Manifest,
    /// DEST's manifest before (None: a new deploy).
    pub old: Option<Manifest>,
    pub engine: Option<EngineChoice>,
    /// `--systemd`.
    pub systemd: bool,
    /// `--no-systemd`.
    pub no_systemd: bool,
    pub force: bool,
    /// The operator's netboot media (`--netboot`, `$BTY_NETBOOT_DIR`).
    pub netboot: Option<PathBuf>,
    /// `.debs` for this binary's media (`--from`).
    pub from: Option<PathBuf>,
    pub timeout: Duration,
}

impl Plan {
    /// The flags over DEST's manifest, every value checked.
    pub fn new(a: &DeployArgs) -> Result<Plan> {
        let r = resolve::resolve(&a.render, a.images)?;
        Ok(Plan {
            m: r.manifest,
            old: r.old,
            engine: a.engine.engine,
            systemd: a.render.systemd,
            no_systemd: a.no_systemd,
            force: a.render.force,
            netboot: crate::cli::netboot_dir(a.netboot.as_deref()),
            from: a.from.clone(),
            timeout: Duration::from_secs(a.timeout),
        })
    }

    /// The checks that need no engine, in the order they are said.
    pub fn check(&self, host: &Host) -> Result<()> {
        self.check_mode(host)?;
        resolve::check_dest(&self.m.dest, self.old.is_some(), self.force)?;
        self.warn_version();
        self.check_root(host)
    }

    /// Quadlet mode asked for (now or by an earlier deploy): refuse before
    /// anything is written when it cannot be had or cannot be left.
    fn check_mode(&self, host: &Host) -> Result<()> {
        if self.no_systemd && self.m.quadlet {
            let d = self.m.dest.display();
            return Err(exit::refused(format!(
                "{d} runs under Quadlet units from an earlier deploy; --no-systemd cannot switch \
                 it in place. Nothing was changed. Run `bty-lab purge {d}` first, then deploy \
                 with --no-systemd"
            )));
        }
        if self.quadlet_asked() {
            host.require_systemd()?;
        }
        Ok(())
    }

    fn warn_version(&self) {
        let Some(o) = self.old.as_ref().filter(|o| o.version != stack::VERSION) else {
            return;
        };
        ui::warn(format!(
            "{d} runs bty {v}; this CLI is {me}. Re-deploying keeps {v}; move with \
             `bty-lab upgrade {d}`",
            d = self.m.dest.display(),
            v = o.version,
            me = stack::VERSION,
        ));
    }

    fn check_root(&self, host: &Host) -> Result<()> {
        if host.root {
            return Ok(());
        }
        Err(exit::refused(format!(
            "deploy needs root: the data dirs are given to uid {} (the containers' user){}. \
             Re-run with sudo",
            stack::SERVICE_UID,
            if self.m.tftp {
                " and bty-tftp binds udp/69"
            } else {
                ""
            }
        )))
    }

    /// Quadlet mode asked for, now or by an earlier deploy.
    pub fn quadlet_asked(&self) -> bool {
        self.systemd || self.m.quadlet
    }

    /// Does the stack run under Quadlet units on engine `kind` `version`?
    /// When asked for, or as root on a systemd host with a Quadlet-capable
    /// Podman (the units are then the natural owner of the containers:
    /// restart on boot). Asked for on another engine: refused.
    pub fn quadlet_on(&self, host: &Host, kind: Kind, version: &str, addr: &str) -> Result<bool> {
        let podman = kind == Kind::Podman;
        let auto = !self.no_systemd
            && host.root
            && host.systemd
            && podman
            && quadlet::podman_has_quadlet(version);
        if !(self.quadlet_asked() || auto) {
            return Ok(false);
        }
        if !podman {
            return Err(exit::refused(format!(
                "--systemd installs Quadlet units, which Podman runs; the engine found is {kind} \
                 at {addr}. Nothing was changed. Pass --engine podman (Podman >= 4.4), or deploy \
                 without --systemd"
            )));
        }
        if !quadlet::podman_has_quadlet(version) {
            ui::warn(format!(
                "Podman {version} predates Quadlet (4.4): systemd will not generate services \
                 from the units"
            ));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn plan(dest: &std::path::Path, extra: &[&str]) -> Plan {
        let d = dest.to_str().unwrap();
        let mut argv = vec!["bty-lab", "deploy", d, "--host-addr", "10.0.0.5"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Deploy(a) => Plan::new(&a).unwrap(),
            _ => unreachable!(),
        }
    }

    const ROOT_SYSTEMD: Host = Host {
        root: true,
        systemd: true,
    };

    fn refused(r: Result<impl std::fmt::Debug>, needle: &str) {
        let e = r.unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused, "{e:#}");
        assert!(format!("{e:#}").contains(needle), "{needle:?} not in {e:#}");
    }

    #[test]
    fn safety_checks_refuse_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("lab");
        let p = plan(&dest, &[]);
        p.check(&ROOT_SYSTEMD).unwrap();
        refused(
            p.check(&Host {
                root: false,
                ..ROOT_SYSTEMD
            }),
            "deploy needs root",
        );
        let nosd = Host {
            systemd: false,
            ..ROOT_SYSTEMD
        };
        refused(
            plan(&dest, &["--systemd"]).check(&nosd),
            "systemd is not running",
        );
        let mut quadlet = plan(&dest, &["--no-systemd"]);
        quadlet.m.quadlet = true;
        refused(quadlet.check(&ROOT_SYSTEMD), "cannot switch it in place");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("notes.txt"), "").unwrap();
        refused(plan(&dest, &[]).check(&ROOT_SYSTEMD), "notes.txt");
        plan(&dest, &["--force"]).check(&ROOT_SYSTEMD).unwrap();
        assert!(!dest.join(".bty-lab.toml").exists(), "a check wrote");
    }

    #[test]
    fn quadlet_mode_is_podman_s_and_chosen_where_it_fits() {
        let d = tempfile::tempdir().unwrap();
        let p = plan(&d.path().join("lab"), &[]);
        let on = |p: &Plan, host, kind, v| p.quadlet_on(&host, kind, v, "/s").unwrap();
        assert!(on(&p, ROOT_SYSTEMD, Kind::Podman, "4.4.0"));
        assert!(!on(&p, ROOT_SYSTEMD, Kind::Podman, "4.3.1"));
        assert!(!on(&p, ROOT_SYSTEMD, Kind::Docker, "24.0.0"));
        let no = Host {
            systemd: false,
            ..ROOT_SYSTEMD
        };
        assert!(!on(&p, no, Kind::Podman, "5.0.0"));
        let p = plan(&d.path().join("lab"), &["--no-systemd"]);
        assert!(!on(&p, ROOT_SYSTEMD, Kind::Podman, "5.0.0"));
        let p = plan(&d.path().join("lab"), &["--systemd"]);
        assert!(on(&p, ROOT_SYSTEMD, Kind::Podman, "4.3.1"));
        refused(
            p.quadlet_on(&ROOT_SYSTEMD, Kind::Docker, "24.0.0", "/s"),
            "which Podman runs",
        );
    }
}
