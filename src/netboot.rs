//! Placing the netboot kernel and initrd (built by `media/build.sh`) into the
//! directory bty-web serves at `/boot/`. `serve` and `deploy` both use this;
//! nothing is downloaded: the files come from a local directory.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::engine::images::NETBOOT_DIR;

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
}

/// Same length and same bytes? Compared in chunks: an initrd can be large.
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read as _;
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

/// Copy `src` to `dst` through a temp file in `dst`'s directory + rename, so
/// bty-web never serves half a kernel to a booting machine.
pub fn copy_atomic(src: &Path, dst: &Path) -> Result<Outcome> {
    let existed = dst.exists();
    if existed && same_contents(src, dst)? {
        return Ok(Outcome::Kept);
    }
    let dir = dst.parent().context("destination has no directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        dst.file_name().unwrap_or_default().to_string_lossy()
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
            Outcome::Kept => crate::ui::detail(format!("netboot: {name} is up to date")),
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
             to boot the netboot environment. Build the media with `media/build.sh --out DIR` \
             and pass `--netboot DIR` (or set BTY_NETBOOT_DIR)",
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
