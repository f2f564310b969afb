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
    let m = media::ensure_with(&opts, a.force).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nWays out: run on a Debian or Ubuntu host whose apt can download the \
             packages (they come through its signed indexes; `apt-get update` if they are \
             stale), or download them on one (`bty-lab media download --out DIR`) and build \
             here with `bty-lab media build --from DIR`."
        )
    })?;
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
