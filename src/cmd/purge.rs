//! `bty-lab purge`: say what will go, confirm the destructive part, then
//! remove the stack, tolerant of what is already gone, and report what
//! was removed and what was left.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cli::{EngineChoice, PurgeArgs};
use crate::cmd::{confirm, files, stdin_is_terminal};
use crate::containers::{self, Removal};
use crate::engine::{self, ContainerEngine};
use crate::manifest::Manifest;
use crate::{deploydir, exit, quadlet, ui};

/// What `purge` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub m: Manifest,
    pub engine: Option<EngineChoice>,
    /// Delete the host state (`--data`, `--all`).
    pub data: bool,
    /// Delete DEST too.
    pub all: bool,
    pub images: bool,
    pub yes: bool,
}

impl Plan {
    pub fn new(a: &PurgeArgs, m: Manifest) -> Plan {
        Plan {
            m,
            engine: a.engine.engine,
            data: a.data || a.all,
            all: a.all,
            images: a.images,
            yes: a.yes,
        }
    }

    /// Does it delete something a redeploy cannot bring back?
    pub fn destructive(&self) -> bool {
        self.data || self.images
    }

    /// The numbered steps it takes.
    pub fn steps(&self) -> usize {
        1 + usize::from(self.images) + usize::from(self.data) + usize::from(self.all)
    }

    /// What it will do, one line each.
    pub fn list(&self) -> Vec<String> {
        let m = &self.m;
        let mut v = vec!["stop and remove the stack's containers and network".to_string()];
        if m.quadlet {
            v.push(format!(
                "stop the Quadlet units and remove their files from {}",
                quadlet::unit_dir().display()
            ));
        }
        if self.images {
            let refs: Vec<String> = m.services().iter().map(|s| m.image(s)).collect();
            v.push(format!("remove the images {}", refs.join(", ")));
        }
        if self.data {
            for svc in m.services() {
                if let Some((sub, _)) = svc.data {
                    let d = m.data_dir.join(sub);
                    v.push(format!("DELETE {} ({} state)", d.display(), svc.name));
                }
            }
        }
        if self.all {
            v.push(format!("DELETE the deploy directory {}", m.dest.display()));
        }
        v
    }

    /// Say what will go; the destructive part needs a yes (`terminal`:
    /// there is one to ask on).
    pub fn confirm(&self, terminal: bool) -> Result<()> {
        eprintln!("bty-lab purge {}:", self.m.dest.display());
        for p in self.list() {
            eprintln!("  - {p}");
        }
        if self.destructive() && !confirm("Proceed?", self.yes, terminal)? {
            return Err(exit::refused("aborted; nothing was changed"));
        }
        Ok(())
    }
}

pub async fn run(a: PurgeArgs) -> Result<()> {
    let plan = Plan::new(&a, files::manifest(&a.dest, "purge")?);
    plan.confirm(stdin_is_terminal())?;
    let m = &plan.m;
    let mut steps = ui::Steps::new(plan.steps());
    let mut r = Removal::default();
    steps.step("removing containers and network");
    if m.quadlet {
        // Stop the units first, or systemd would restart what is removed.
        r.absorb(quadlet::remove(&quadlet::Host, m));
    }
    let engine = engine::connect_for(plan.engine, m.engine.as_ref(), &m.path()).await?;
    remove_from_engine(&engine, &plan, &mut steps, &mut r).await?;
    remove_from_host(&plan, &mut steps, &mut r);
    report(&r)?;
    if !plan.all {
        let _ = deploydir::chown_to_sudo_user(&m.dest);
    }
    Ok(())
}

/// The containers and the network, and the images when asked.
pub async fn remove_from_engine(
    engine: &impl ContainerEngine,
    plan: &Plan,
    steps: &mut ui::Steps,
    r: &mut Removal,
) -> Result<()> {
    containers::remove_stack(engine, &plan.m, r).await?;
    if plan.images {
        steps.step("removing images");
        containers::remove_images(engine, &plan.m, r).await;
    }
    Ok(())
}

/// The host state and DEST, when asked.
fn remove_from_host(plan: &Plan, steps: &mut ui::Steps, r: &mut Removal) {
    let m = &plan.m;
    if plan.data {
        steps.step("deleting host state");
        for svc in m.services() {
            if let Some((sub, _)) = svc.data {
                remove_dir(&m.data_dir.join(sub), r);
            }
        }
        if m.data_dir.read_dir().is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&m.data_dir);
        }
    }
    if plan.all {
        steps.step("deleting the deploy directory");
        remove_dir(&m.dest, r);
    }
}

fn remove_dir(d: &Path, r: &mut Removal) {
    match std::fs::remove_dir_all(d) {
        Ok(()) => r.removed.push(d.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => r.failed.push(format!("{}: {e}", d.display())),
    }
    if d.exists() {
        r.failed.push(format!("{} still exists", d.display()));
    }
}

/// The report's lines.
pub fn report_lines(r: &Removal) -> Vec<String> {
    let mut v = Vec::new();
    if r.removed.is_empty() {
        v.push("nothing was left to remove".to_string());
    }
    v.extend(r.removed.iter().map(|x| format!("  removed {x}")));
    v.extend(r.failed.iter().map(|x| format!("  FAILED  {x}")));
    v
}

/// Print what was removed and what was not; an error when something was
/// left behind.
fn report(r: &Removal) -> Result<()> {
    eprintln!();
    for line in report_lines(r) {
        eprintln!("{line}");
    }
    if !r.failed.is_empty() {
        bail!(
            "purge left {} item(s) behind (listed above)",
            r.failed.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
