//! Putting media into the directory bty-web serves at `/boot/`: each file
//! through a temp file in that directory and a rename, so a booting machine
//! never fetches half a kernel.
//!
//! A boot dir whose initrd carries a newer agent than the media being
//! placed keeps its kernel and initrd (an operator, or a newer bty-lab,
//! put them there); a missing, older or different pair is replaced. The
//! kernel and initrd are one unit: an initrd's modules only load into its
//! own kernel.

use std::cmp::Ordering;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::{inspect, Media, INITRD, KERNEL};
use crate::stack::compare_versions;
use crate::stack::IPXE_FILES;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    /// Already there with the same bytes.
    Kept,
    /// Was there with other bytes; replaced.
    Replaced,
    /// Not in the source directory.
    Missing,
    /// The boot dir's media has a newer agent; left alone.
    #[allow(dead_code)] // made by `place`, which deploy/serve/upgrade will call
    KeptNewer,
}

/// Same length and same bytes? Compared in chunks: an initrd can be large.
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = match (fs::metadata(a), fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => (ma, mb),
        _ => return Ok(false),
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Copy `src` to `dst` through a temp file in `dst`'s directory + rename.
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<Outcome> {
    let existed = dst.exists();
    if existed && same_contents(src, dst)? {
        return Ok(Outcome::Kept);
    }
    let dir = dst.parent().context("destination has no directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dst.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut input =
            fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::io::copy(&mut input, &mut out)
            .with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
        out.flush()?;
        out.sync_all()?;
        fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(if existed {
        Outcome::Replaced
    } else {
        Outcome::Copied
    })
}

/// Put `media`'s kernel and initrd (as `kernel` and `initrd`) and its iPXE
/// bootfiles into `boot`, each atomically; see the module docs for what is
/// kept. Returns what happened to each file, by its name in `boot`.
#[allow(dead_code)] // for deploy/serve/upgrade (issue 10)
pub fn place(
    media: &Media,
    boot: &Path,
    kernel: &str,
    initrd: &str,
) -> Result<Vec<(String, Outcome)>> {
    fs::create_dir_all(boot).with_context(|| format!("creating {}", boot.display()))?;
    let (kdst, idst) = (boot.join(kernel), boot.join(initrd));
    // An unreadable or foreign initrd in the boot dir is simply replaced.
    let there = if kdst.is_file() && idst.is_file() {
        inspect(&idst).ok().flatten()
    } else {
        None
    };
    let keep = there.is_some_and(|t| {
        compare_versions(&t.agent_version, &media.info.agent_version) == Some(Ordering::Greater)
    });
    let mut out = Vec::new();
    // Between the two renames a machine could fetch a mismatched pair (its
    // modules would not load, and it retries); the window is one rename.
    for (src, name) in [(INITRD, initrd), (KERNEL, kernel)] {
        let from = media.dir.join(src);
        let o = if keep {
            Outcome::KeptNewer
        } else if from.is_file() {
            copy_atomic(&from, &boot.join(name)).with_context(|| format!("placing {name}"))?
        } else {
            Outcome::Missing
        };
        out.push((name.to_string(), o));
    }
    for name in IPXE_FILES {
        let from = media.dir.join(name);
        let o = if from.is_file() {
            copy_atomic(&from, &boot.join(name)).with_context(|| format!("placing {name}"))?
        } else {
            Outcome::Missing
        };
        out.push((name.to_string(), o));
    }
    Ok(out)
}

/// Tell the operator what [`place`] did, one line per file that changed or
/// is missing.
#[allow(dead_code)] // for deploy/serve/upgrade (issue 10)
pub fn report(media: &Media, boot: &Path, placed: &[(String, Outcome)]) {
    for (name, o) in placed {
        match o {
            Outcome::Kept => {}
            Outcome::Copied => {
                crate::ui::detail(format!("media: {name} placed in {}", boot.display()))
            }
            Outcome::Replaced => crate::ui::detail(format!(
                "media: {name} replaced in {} (media {})",
                boot.display(),
                media.info.version
            )),
            Outcome::KeptNewer => crate::ui::detail(format!(
                "media: {name} in {} carries a newer agent than {}; kept",
                boot.display(),
                media.info.agent_version
            )),
            Outcome::Missing => crate::ui::warn(format!(
                "media: {name} is not in {}; {} has none",
                media.dir.display(),
                boot.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{cpio, Info, INFO_PATH};

    fn initrd(path: &Path, agent_version: &str) {
        let info = Info {
            agent_version: agent_version.into(),
            ..Info::default()
        };
        let e = vec![
            cpio::Entry {
                path: "etc".into(),
                mode: 0o755,
                node: cpio::Node::Dir,
            },
            cpio::Entry {
                path: INFO_PATH.into(),
                mode: 0o644,
                node: cpio::Node::File(serde_json::to_vec(&info).unwrap()),
            },
        ];
        cpio::write_gz(&e, 0, 6, path, None).unwrap();
    }

    fn media(dir: &Path, agent_version: &str, kernel: &[u8]) -> Media {
        fs::create_dir_all(dir).unwrap();
        initrd(&dir.join(INITRD), agent_version);
        fs::write(dir.join(KERNEL), kernel).unwrap();
        for f in IPXE_FILES {
            fs::write(dir.join(f), f.as_bytes()).unwrap();
        }
        Media {
            dir: dir.to_path_buf(),
            info: Info {
                agent_version: agent_version.into(),
                ..Info::default()
            },
        }
    }

    fn outcomes(r: &[(String, Outcome)]) -> Vec<Outcome> {
        r.iter().map(|x| x.1).collect()
    }

    #[test]
    fn copies_keeps_replaces_and_respects_a_newer_agent() {
        use Outcome::*;
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        let m1 = media(&d.path().join("m1"), "0.1.0", b"kernel-1");
        let r = place(&m1, &boot, "k", "i").unwrap();
        assert_eq!(r[0], ("i".to_string(), Copied));
        assert_eq!(outcomes(&r), [Copied; 5]);
        assert_eq!(outcomes(&place(&m1, &boot, "k", "i").unwrap()), [Kept; 5]);
        // Same version, other bytes: replaced.
        let m1b = media(&d.path().join("m1b"), "0.1.0", b"kernel-X");
        assert_eq!(
            outcomes(&place(&m1b, &boot, "k", "i").unwrap())[..2],
            [Kept, Replaced]
        );
        // A newer agent in the boot dir is kept; an older one replaced.
        let m2 = media(&d.path().join("m2"), "0.2.0", b"kernel-2");
        assert_eq!(
            outcomes(&place(&m2, &boot, "k", "i").unwrap())[..2],
            [Replaced, Replaced]
        );
        assert_eq!(
            outcomes(&place(&m1, &boot, "k", "i").unwrap())[..2],
            [KeptNewer, KeptNewer]
        );
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-2");
        // A boot dir with half a pair is replaced whole.
        fs::remove_file(boot.join("k")).unwrap();
        assert_eq!(
            outcomes(&place(&m1, &boot, "k", "i").unwrap())[..2],
            [Replaced, Copied]
        );
        let leftovers: Vec<_> = fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn missing_files_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let m = Media {
            dir: d.path().join("empty"),
            info: Info::default(),
        };
        fs::create_dir_all(&m.dir).unwrap();
        let r = place(&m, &d.path().join("boot"), "k", "i").unwrap();
        assert_eq!(outcomes(&r), [Outcome::Missing; 5]);
    }
}
