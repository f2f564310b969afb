//! `bty-lab media status`: which media is in place (the cached media for
//! this binary; a boot dir's; any initrd's), its version, the agent inside
//! it, and whether that agent is this very binary (by SHA-256; two builds
//! of one version differ).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::cache::{self, Cache, SelfExe};
use super::{inspect, Info, Manifest, INITRD};
use crate::cli::MediaStatusArgs;
use crate::stack::compare_versions;

/// This binary, for comparison.
#[derive(Debug, Serialize)]
pub struct Binary {
    pub path: PathBuf,
    pub version: String,
    pub sha256: String,
}

/// One place media can be.
#[derive(Debug, Serialize)]
pub struct Found {
    /// What was read: a media directory or an initrd.
    pub path: PathBuf,
    /// None: no media there (or not a bty initrd).
    pub info: Option<Info>,
    /// The agent inside is this binary.
    pub matches: bool,
    /// One line for people.
    pub summary: String,
}

/// The whole answer (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct Status {
    pub binary: Binary,
    pub cache: Found,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_dir: Option<Found>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<Found>,
}

/// Compare `info` (read from `path`) with this binary.
pub fn judge(path: &Path, info: Option<Info>, me: &Binary, none: &str) -> Found {
    let Some(info) = info else {
        return Found {
            path: path.to_path_buf(),
            info: None,
            matches: false,
            summary: none.to_string(),
        };
    };
    let matches = !info.agent_sha256.is_empty() && info.agent_sha256 == me.sha256;
    let sha = if info.agent_sha256.is_empty() {
        "no sha256 recorded".to_string()
    } else {
        format!(
            "sha256 {}",
            &info.agent_sha256[..info.agent_sha256.len().min(16)]
        )
    };
    let verdict = if matches {
        "matches this binary".to_string()
    } else {
        match compare_versions(&info.agent_version, &me.version) {
            Some(Ordering::Less) => format!("older than this binary ({})", me.version),
            Some(Ordering::Greater) => format!("newer than this binary ({})", me.version),
            _ => "another build than this binary".to_string(),
        }
    };
    Found {
        path: path.to_path_buf(),
        summary: format!(
            "media {}, agent {} ({sha}), kernel {}: {verdict}",
            info.version,
            info.agent_version,
            if info.kernel.is_empty() {
                &info.kernel_release
            } else {
                &info.kernel
            }
        ),
        info: Some(info),
        matches,
    }
}

/// Gather the status for `args`.
pub fn status(args: &MediaStatusArgs) -> Result<Status> {
    let exe = SelfExe::read()?;
    let me = Binary {
        path: exe.path.clone(),
        version: exe.version.to_string(),
        sha256: exe.sha256.clone(),
    };
    let root = match &args.cache {
        Some(c) => c.clone(),
        None => cache::default_root()?,
    };
    let dir = Cache { root }.media(&exe.key());
    let cached = Manifest::read(&dir).ok().map(|m| m.info);
    let cache = judge(
        &dir,
        cached,
        &me,
        "none built for this binary yet (`bty-lab media build`)",
    );
    let inspect_file = |p: &Path| -> Found {
        match inspect(p) {
            Ok(info) => judge(
                p,
                info,
                &me,
                if p.exists() {
                    "not a bty initrd"
                } else {
                    "no such file"
                },
            ),
            Err(e) => Found {
                path: p.to_path_buf(),
                info: None,
                matches: false,
                summary: format!("unreadable: {e:#}"),
            },
        }
    };
    Ok(Status {
        cache,
        boot_dir: args
            .boot_dir
            .as_ref()
            .map(|d| inspect_file(&d.join(INITRD))),
        initrd: args.initrd.as_deref().map(inspect_file),
        binary: me,
    })
}

/// `bty-lab media status`.
pub fn run(args: &MediaStatusArgs) -> Result<()> {
    let s = status(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "this binary  {} {} (sha256 {})",
        s.binary.path.display(),
        s.binary.version,
        &s.binary.sha256[..16]
    );
    let line = |label: &str, f: &Found| {
        println!(
            "{label:<12} {}\n             {}",
            f.path.display(),
            f.summary
        )
    };
    line("cache", &s.cache);
    if let Some(f) = &s.boot_dir {
        line("boot dir", f);
    }
    if let Some(f) = &s.initrd {
        line("initrd", f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let me = Binary {
            path: "/x".into(),
            version: "0.2.0".into(),
            sha256: "a".repeat(64),
        };
        let info = |v: &str, sha: &str| Info {
            version: format!("{v}-k6.1"),
            agent_version: v.into(),
            agent_sha256: sha.into(),
            ..Info::default()
        };
        let p = Path::new("/i");
        assert!(judge(p, Some(info("0.2.0", &"a".repeat(64))), &me, "").matches);
        let other = judge(p, Some(info("0.2.0", &"b".repeat(64))), &me, "");
        assert!(
            !other.matches && other.summary.contains("another build"),
            "{}",
            other.summary
        );
        assert!(judge(p, Some(info("0.1.0", "")), &me, "")
            .summary
            .contains("older than this binary"));
        assert!(judge(p, Some(info("0.3.0", "")), &me, "")
            .summary
            .contains("newer"));
        let none = judge(p, None, &me, "not a bty initrd");
        assert!(!none.matches && none.summary == "not a bty initrd");
    }
}
