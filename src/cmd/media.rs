//! `bty-lab media build|status|download`: the netboot media from the
//! command line (the work is in crate::media).

use anyhow::Result;

use crate::cli::{MediaBuildArgs, MediaCommand};
use crate::media::{self, build::human, Manifest, Options};

/// Run a media subcommand.
pub fn run(cmd: MediaCommand) -> Result<()> {
    match cmd {
        MediaCommand::Build(a) => build(a),
        MediaCommand::Status(a) => media::status::run(&a),
        MediaCommand::Download { out } => {
            for p in media::download(&out)? {
                println!("{}", p.display());
            }
            Ok(())
        }
    }
}

fn build(a: MediaBuildArgs) -> Result<()> {
    let opts = Options {
        from: a.from,
        cache: a.cache,
    };
    let m = media::ensure_with(&opts, a.force)?;
    let dir = match &a.out {
        Some(out) => {
            media::copy_out(&m, out)?;
            out.clone()
        }
        None => m.dir.clone(),
    };
    let manifest = Manifest::read(&dir)?;
    println!("{}", dir.display());
    eprintln!(
        "media {} (agent {}, kernel {} {}) in {}:",
        m.info.version,
        m.info.agent_version,
        m.info.kernel,
        m.info.kernel_version,
        dir.display()
    );
    for (name, f) in &manifest.files {
        eprintln!(
            "  {name:<30} {:>10}  sha256 {}",
            human(f.size),
            &f.sha256[..16]
        );
    }
    Ok(())
}
