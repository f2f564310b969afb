//! `bty-lab media status`: which media is in place (the cached media for
//! this binary; the one a deploy serves; a boot dir's; any initrd's), its
//! version, the agent inside it, and whether that agent is this very
//! binary (by SHA-256; two builds of one version differ).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::apt::sha256_file;
use super::build::human;
use super::cache::{self, Cache, SelfExe};
use super::{inspect, signed, Info, Manifest, OperatorRecord, INITRD};
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
    /// The Secure Boot bootfiles there (media directories and boot dirs;
    /// not an initrd).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secure_boot: Vec<SignedFile>,
}

/// One Secure Boot bootfile (`shimx64.efi`, `grubx64.efi`) of a media
/// directory or boot dir.
#[derive(Debug, Serialize)]
pub struct SignedFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Its Debian package (empty: a directory without a media.json saying).
    pub package: String,
    pub version: String,
}

/// The Secure Boot bootfiles in `dir`: as its media.json records them
/// (package and version), else the files themselves (hashed now; package
/// unknown).
pub fn signed_files(dir: &Path) -> Vec<SignedFile> {
    if let Ok(m) = Manifest::read(dir) {
        if !m.secure_boot.is_empty() {
            return m
                .secure_boot
                .iter()
                .filter_map(|o| {
                    let f = m.files.get(&o.file)?;
                    Some(SignedFile {
                        name: o.file.clone(),
                        size: f.size,
                        sha256: f.sha256.clone(),
                        package: o.package.clone(),
                        version: o.version.clone(),
                    })
                })
                .collect();
        }
    }
    signed::FILES
        .iter()
        .filter_map(|name| {
            let p = dir.join(name);
            Some(SignedFile {
                name: name.to_string(),
                size: std::fs::metadata(&p).ok().filter(|m| m.is_file())?.len(),
                sha256: sha256_file(&p).ok()?,
                package: String::new(),
                version: String::new(),
            })
        })
        .collect()
}

/// The whole answer (`--json` prints it).
#[derive(Debug, Serialize)]
pub struct Status {
    pub binary: Binary,
    pub cache: Found,
    /// The media a deploy DEST's bty-web serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Found>,
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
            secure_boot: Vec::new(),
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
        secure_boot: Vec::new(),
    }
}

impl From<&SelfExe> for Binary {
    fn from(exe: &SelfExe) -> Binary {
        Binary {
            path: exe.path.clone(),
            version: exe.version.to_string(),
            sha256: exe.sha256.clone(),
        }
    }
}

/// Judge the initrd at `p` against `me`.
fn inspect_file(p: &Path, me: &Binary) -> Found {
    match inspect(p) {
        Ok(info) => judge(
            p,
            info,
            me,
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
            secure_boot: Vec::new(),
        },
    }
}

/// The initrd at `p`, judged against this binary.
pub fn of_initrd(p: &Path) -> Result<Found> {
    Ok(inspect_file(p, &Binary::from(&SelfExe::read()?)))
}

/// The media deploy DEST's bty-web serves: its boot dir's initrd (names
/// and place from DEST's bty.toml and envvars, as deploy computes them).
fn of_deploy(dest: &Path, me: &Binary) -> Result<Found> {
    let s = crate::manifest::Manifest::require(&crate::deploydir::absolute(dest)?, "media status")?;
    let Some((boot, [kernel, initrd])) = crate::deploydir::boot_target(&s)? else {
        return Ok(Found {
            path: s.dest.join("bty.toml"),
            info: None,
            matches: false,
            secure_boot: Vec::new(),
            summary: "[boot] dir is outside bty-web's state mount (/var/lib/bty): bty-web \
                      serves its image's own media"
                .to_string(),
        });
    };
    let mut f = inspect_file(&boot.join(&initrd), me);
    if f.info.is_some() && !boot.join(&kernel).is_file() {
        f.summary = format!("{}; but no kernel {kernel} next to it", f.summary);
    }
    f.secure_boot = signed_files(&boot);
    if OperatorRecord::read(&boot).is_some() {
        f.summary = format!("{} (the operator's, from --netboot)", f.summary);
    }
    Ok(f)
}

/// Gather the status for `args`.
pub fn status(args: &MediaStatusArgs) -> Result<Status> {
    let exe = SelfExe::read()?;
    let me = Binary::from(&exe);
    let root = match &args.cache {
        Some(c) => c.clone(),
        None => cache::default_root()?,
    };
    let dir = Cache { root }.media(&exe.key());
    let cached = Manifest::read(&dir).ok().map(|m| m.info);
    let mut cache = judge(
        &dir,
        cached,
        &me,
        "none built for this binary yet (`bty-lab media build`)",
    );
    cache.secure_boot = signed_files(&dir);
    Ok(Status {
        cache,
        deploy: args
            .dest
            .as_deref()
            .map(|d| of_deploy(d, &me))
            .transpose()?,
        boot_dir: args.boot_dir.as_ref().map(|d| Found {
            secure_boot: signed_files(d),
            ..inspect_file(&d.join(INITRD), &me)
        }),
        initrd: args.initrd.as_deref().map(|p| inspect_file(p, &me)),
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
        );
        for b in &f.secure_boot {
            let from = if b.package.is_empty() {
                "package unknown (no media.json)".to_string()
            } else {
                format!("{} {}", b.package, b.version)
            };
            println!(
                "             {:<12} {:>9}  sha256 {}  {from}",
                b.name,
                human(b.size),
                b.sha256
            );
        }
        // A media without them cannot boot a Secure Boot machine.
        if f.info.is_some() && f.secure_boot.is_empty() && label != "initrd" {
            println!(
                "             no Secure Boot bootfiles ({})",
                signed::FILES.join(", ")
            );
        }
    };
    line("cache", &s.cache);
    if let Some(f) = &s.deploy {
        line("deploy", f);
    }
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
