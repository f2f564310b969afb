//! `upgrade`'s plan: from the deployed manifest to the one of the target
//! version, refused when it would go backwards without
//! `--allow-downgrade`, or nothing to do when the target already runs.

use std::cmp::Ordering;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{EngineChoice, UpgradeArgs};
use crate::cmd::Host;
use crate::manifest::Manifest;
use crate::{exit, stack, ui};

/// What `upgrade` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What runs now.
    pub old: Manifest,
    /// What will run: the target version, the images' new route.
    pub new: Manifest,
    pub engine: Option<EngineChoice>,
    /// `.debs` for this binary's media (`--from`).
    pub from: Option<PathBuf>,
    pub timeout: Duration,
    /// The backup written before the swap because a database migrates
    /// (`crate::cmd::backup::pre_upgrade`); a rollback restores the
    /// databases from it, as the old version refuses a newer schema.
    pub snapshot: Option<PathBuf>,
}

/// `upgrade` has work to do, or the target already runs.
#[derive(Debug)]
pub enum Decision {
    Go(Box<Plan>),
    /// Already at the target with current media (said): the deploy as it is.
    Nothing(Manifest),
}

impl Plan {
    /// The plan from `a` for the deploy `old`; `behind` says why the media
    /// bty-web serves is older than this binary (crate::cmd::boot).
    pub fn decide(
        a: &UpgradeArgs,
        old: Manifest,
        host: &Host,
        behind: impl FnOnce(&Manifest) -> Option<String>,
    ) -> Result<Decision> {
        if old.quadlet {
            host.require_systemd()?;
        }
        let target = a.to.clone().unwrap_or_else(|| stack::VERSION.to_string());
        if !worth_it(a, &old, &target, behind)? {
            return Ok(Decision::Nothing(old));
        }
        let mut new = old.clone();
        new.version = target;
        new.images = a.images.unwrap_or(old.images);
        Ok(Decision::Go(Box::new(Plan {
            old,
            new,
            engine: a.engine.engine,
            from: a.from.clone(),
            timeout: Duration::from_secs(a.timeout),
            snapshot: None,
        })))
    }
}

/// Is there anything to do to get `old` to `target`? A downgrade is
/// refused unless allowed; the same version is worth recreating only for
/// other images or media that is behind.
fn worth_it(
    a: &UpgradeArgs,
    old: &Manifest,
    target: &str,
    behind: impl FnOnce(&Manifest) -> Option<String>,
) -> Result<bool> {
    match stack::compare_versions(target, &old.version) {
        Some(Ordering::Less) if !a.allow_downgrade => Err(exit::refused(format!(
            "{} runs bty {}; {target} is older. Refusing to downgrade (state may not read \
             back); pass --allow-downgrade if you mean it",
            old.dest.display(),
            old.version
        ))),
        Some(Ordering::Equal) if a.images.is_none() => Ok(media_behind(old, target, behind)),
        None => {
            ui::warn(format!(
                "cannot compare versions {target} and {}; going ahead",
                old.version
            ));
            Ok(true)
        }
        _ => Ok(true),
    }
}

/// `old` already runs `target`: worth redoing only when its media is
/// behind this binary (said either way).
fn media_behind(
    old: &Manifest,
    target: &str,
    behind: impl FnOnce(&Manifest) -> Option<String>,
) -> bool {
    let d = old.dest.display();
    let Some(why) = behind(old) else {
        eprintln!("{d} already runs bty {target}; nothing to do");
        return false;
    };
    ui::detail(format!(
        "{d} already runs bty {target}, but {why}: recreating the containers, so that bty-web \
         places the media its image carries"
    ));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> UpgradeArgs {
        let mut argv = vec!["bty-lab", "upgrade", "/opt/bty"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Upgrade(a) => a,
            _ => unreachable!(),
        }
    }

    const HOST: Host = Host {
        root: true,
        systemd: false,
    };

    fn decide(extra: &[&str], behind: Option<&str>) -> Result<Decision> {
        let mut old = crate::manifest::tests::sample();
        old.version = "0.5.0".into();
        Plan::decide(&args(extra), old, &HOST, |_| behind.map(String::from))
    }

    #[test]
    fn a_downgrade_is_refused_unless_allowed() {
        let e = decide(&["--to", "0.4.9"], None).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
        assert!(e.to_string().contains("Refusing to downgrade"), "{e}");
        let ok = decide(&["--to", "0.4.9", "--allow-downgrade"], None).unwrap();
        let Decision::Go(p) = ok else {
            panic!("no plan")
        };
        assert_eq!(
            (p.old.version.as_str(), p.new.version.as_str()),
            ("0.5.0", "0.4.9")
        );
    }

    #[test]
    fn the_same_version_is_redone_only_for_new_images_or_old_media() {
        assert!(matches!(
            decide(&["--to", "0.5.0"], None),
            Ok(Decision::Nothing(_))
        ));
        let behind = decide(&["--to", "0.5.0"], Some("its media is old")).unwrap();
        assert!(matches!(behind, Decision::Go(_)));
        let Decision::Go(p) = decide(&["--to", "0.5.0", "--images", "local"], None).unwrap() else {
            panic!("no plan")
        };
        assert_eq!(p.new.images, crate::cli::ImagesFrom::Local);
        assert_eq!(p.old.images, crate::cli::ImagesFrom::Auto);
    }

    #[test]
    fn a_quadlet_deploy_needs_systemd() {
        let mut old = crate::manifest::tests::sample();
        old.quadlet = true;
        let e = Plan::decide(&args(&[]), old, &HOST, |_| None).unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
    }
}
