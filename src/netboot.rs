//! Placing a netboot kernel and initrd from a local directory (`--netboot
//! DIR`, `$BTY_NETBOOT_DIR`) into the directory bty-web serves at `/boot/`.
//! `serve` and `deploy` use this until they move to [`crate::media::ensure`]
//! and [`crate::media::place`], which build the media when missing; the
//! atomic copy now lives in crate::media::place.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::engine::images::NETBOOT_DIR;
pub use crate::media::{copy_atomic, Outcome};

/// Where the media came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub dir: PathBuf,
    /// `--netboot`, `$BTY_NETBOOT_DIR` or the packaged default.
    pub origin: &'static str,
}

/// `--netboot DIR`, else `$BTY_NETBOOT_DIR`, else `/usr/share/bty/netboot`.
pub fn source(flag: Option<&Path>) -> Source {
    if let Some(d) = flag {
        return Source {
            dir: d.to_path_buf(),
            origin: "--netboot",
        };
    }
    match std::env::var_os("BTY_NETBOOT_DIR") {
        Some(d) if !d.is_empty() => Source {
            dir: d.into(),
            origin: "$BTY_NETBOOT_DIR",
        },
        _ => Source {
            dir: NETBOOT_DIR.into(),
            origin: "the default",
        },
    }
}

/// Copy each of `names` from `src.dir` into `boot`. Missing files are
/// reported, not an error: `serve` and `deploy` still run (BIOS/UEFI iPXE and
/// the UI work), but flash boots cannot load the netboot env.
pub fn place(src: &Source, boot: &Path, names: &[&str]) -> Result<Vec<(String, Outcome)>> {
    fs::create_dir_all(boot).with_context(|| format!("creating {}", boot.display()))?;
    let mut out = Vec::new();
    for name in names {
        let from = src.dir.join(name);
        let outcome = if from.is_file() {
            copy_atomic(&from, &boot.join(name))
                .with_context(|| format!("placing the netboot file {name}"))?
        } else {
            Outcome::Missing
        };
        out.push((name.to_string(), outcome));
    }
    Ok(out)
}

/// Tell the operator what `place` did; the warning names what is missing,
/// where it looked and how to build the media.
pub fn report(src: &Source, boot: &Path, placed: &[(String, Outcome)]) {
    let mut missing = Vec::new();
    for (name, o) in placed {
        match o {
            Outcome::Copied => crate::ui::detail(format!(
                "netboot: copied {name} from {} into {}",
                src.dir.display(),
                boot.display()
            )),
            Outcome::Kept | Outcome::KeptNewer | Outcome::KeptOperator => {
                crate::ui::detail(format!("netboot: {name} is up to date"))
            }
            Outcome::Replaced => crate::ui::detail(format!(
                "netboot: replaced {name} in {} (it differed from {})",
                boot.display(),
                src.dir.join(name).display()
            )),
            Outcome::Missing => {
                if boot.join(name).is_file() {
                    crate::ui::detail(format!(
                        "netboot: {name} not in {}; keeping the one in {}",
                        src.dir.display(),
                        boot.display()
                    ));
                } else {
                    missing.push(name.as_str());
                }
            }
        }
    }
    if !missing.is_empty() {
        crate::ui::warn(format!(
            "netboot media not found: {} not in {} ({}), so machines set to flash will fail \
             to boot the netboot environment. Build the media with `bty-lab media build --out \
             DIR` and pass `--netboot DIR` (or set BTY_NETBOOT_DIR)",
            missing.join(" and "),
            src.dir.display(),
            src.origin
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_identical_and_replaces_different() {
        let d = tempfile::tempdir().unwrap();
        let (src, boot) = (d.path().join("src"), d.path().join("boot"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("k"), b"kernel-1").unwrap();
        let s = Source {
            dir: src.clone(),
            origin: "--netboot",
        };
        let names = ["k", "i"];
        let r = place(&s, &boot, &names).unwrap();
        assert_eq!(r[0].1, Outcome::Copied);
        assert_eq!(r[1].1, Outcome::Missing);
        assert_eq!(place(&s, &boot, &names).unwrap()[0].1, Outcome::Kept);
        fs::write(src.join("k"), b"kernel-2").unwrap();
        assert_eq!(place(&s, &boot, &names).unwrap()[0].1, Outcome::Replaced);
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-2");
        // Same length, different bytes: still replaced.
        fs::write(src.join("k"), b"kernel-3").unwrap();
        assert_eq!(place(&s, &boot, &names).unwrap()[0].1, Outcome::Replaced);
        let leftovers: Vec<_> = fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn flag_wins_over_env_and_default() {
        let s = source(Some(Path::new("/x")));
        assert_eq!(s.dir, PathBuf::from("/x"));
        assert_eq!(s.origin, "--netboot");
    }
}
