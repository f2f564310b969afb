//! `bty-lab purge`: remove the stack, tolerant of what is already gone.

use anyhow::{bail, Result};

use crate::cli::PurgeArgs;
use crate::containers;
use crate::engine::{self, engine_msg, is_not_found};
use crate::{deploydir, ui};

pub async fn run(a: PurgeArgs) -> Result<()> {
    let s = super::deploy::manifest(&a.dest, "purge")?;
    let data = a.data || a.all;
    let mut plan = vec!["stop and remove the stack's containers and network".to_string()];
    if s.quadlet {
        plan.push(format!(
            "stop the Quadlet units and remove their files from {}",
            crate::quadlet::unit_dir().display()
        ));
    }
    if a.images {
        plan.push(format!(
            "remove the images {}",
            s.services()
                .iter()
                .map(|svc| s.image(svc))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if data {
        for svc in s.services() {
            if let Some((sub, _)) = svc.data {
                plan.push(format!(
                    "DELETE {} ({} state)",
                    s.data_dir.join(sub).display(),
                    svc.name
                ));
            }
        }
    }
    if a.all {
        plan.push(format!("DELETE the deploy directory {}", s.dest.display()));
    }
    eprintln!("bty-lab purge {}:", s.dest.display());
    for p in &plan {
        eprintln!("  - {p}");
    }
    if (data || a.images) && !super::confirm("Proceed?", a.yes)? {
        return Err(crate::exit::refused(format!(
            "aborted; nothing was changed"
        )));
    }

    let mut steps = ui::Steps::new(1 + a.images as usize + data as usize + a.all as usize);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    steps.step("removing containers and network");
    if s.quadlet {
        // Stop the units first, or systemd would restart what is removed.
        let (r, f) = crate::quadlet::remove(&s);
        removed.extend(r);
        failed.extend(f);
    }
    let engine = engine::connect_for(a.engine.engine, s.engine.as_ref(), &s.path()).await?;
    let r = containers::remove_stack(&engine, &s).await?;
    removed.extend(r.removed);
    failed.extend(r.failed);
    if a.images {
        steps.step("removing images");
        for svc in s.services() {
            let img = s.image(&svc);
            match engine.api.remove_image(&img, None, None).await {
                Ok(_) => removed.push(format!("image {img}")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => failed.push(format!("image {img}: {}", engine_msg(&e))),
            }
        }
    }
    if data {
        steps.step("deleting host state");
        for svc in s.services() {
            let Some((sub, _)) = svc.data else { continue };
            let d = s.data_dir.join(sub);
            remove_dir(&d, &mut removed, &mut failed);
        }
        if s.data_dir.read_dir().is_ok_and(|mut r| r.next().is_none()) {
            let _ = std::fs::remove_dir(&s.data_dir);
        }
    }
    if a.all {
        steps.step("deleting the deploy directory");
        remove_dir(&s.dest, &mut removed, &mut failed);
    }
    eprintln!();
    if removed.is_empty() {
        eprintln!("nothing was left to remove");
    }
    for r in &removed {
        eprintln!("  removed {r}");
    }
    for f in &failed {
        eprintln!("  FAILED  {f}");
    }
    if !failed.is_empty() {
        bail!("purge left {} item(s) behind (listed above)", failed.len());
    }
    if !a.all {
        let _ = deploydir::chown_to_sudo_user(&s.dest);
    }
    Ok(())
}

fn remove_dir(d: &std::path::Path, removed: &mut Vec<String>, failed: &mut Vec<String>) {
    match std::fs::remove_dir_all(d) {
        Ok(()) => removed.push(d.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => failed.push(format!("{}: {e}", d.display())),
    }
    if d.exists() {
        failed.push(format!("{} still exists", d.display()));
    }
}
