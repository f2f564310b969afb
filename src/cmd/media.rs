//! `bty-lab media build|status|download`: the netboot media from the
//! command line (the work is in crate::media).

use std::path::Path;

use anyhow::Result;

use crate::cli::{MediaBuildArgs, MediaCommand};
use crate::media::{self, build::human, Manifest, Media, Options};

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
    println!("{}", dir.display());
    list(&m, &dir)
}

/// What the media in `dir` is, file by file, on stderr.
fn list(m: &Media, dir: &Path) -> Result<()> {
    let i = &m.info;
    eprintln!(
        "media {} (agent {}, kernel {} {}) in {}:",
        i.version,
        i.agent_version,
        i.kernel,
        i.kernel_version,
        dir.display()
    );
    for (name, f) in &Manifest::read(dir)?.files {
        let sha = &f.sha256[..16];
        eprintln!("  {name:<30} {:>10}  sha256 {sha}", human(f.size));
    }
    Ok(())
}
