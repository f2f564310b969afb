//! `bty-lab init`: render only, no engine.

use anyhow::Result;

use crate::cli::InitArgs;
use crate::cmd::{files, resolve};
use crate::{deploydir, ui};

pub fn run(a: InitArgs) -> Result<()> {
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
