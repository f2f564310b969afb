//! Putting media into the directory bty-web serves at `/boot/`: each file
//! through a temp file in that directory and a rename, so a booting machine
//! never fetches half a kernel.
//!
//! Two callers, two rules ([`Mode`]):
//!
//! - **Automatic** placements (this binary's media by `serve`, an image's
//!   media by bty-web at container start): a missing, older or different
//!   media is replaced; a boot dir whose initrd carries a newer agent keeps
//!   its kernel and initrd (a newer bty-lab put them there).
//! - **The operator's** media (`--netboot DIR`) is placed as given and
//!   recorded in [`OPERATOR_RECORD`] in the boot dir; automatic placements
//!   then keep it (same version with other bytes, or an initrd that is not
//!   a bty one, included) unless its agent is older than theirs. So a
//!   custom kernel survives container restarts, and an upgrade still
//!   replaces an operator's media that fell behind.
//!
//! The kernel and initrd are one unit: an initrd's modules only load into
//! its own kernel.

use std::cmp::Ordering;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{inspect, Info, Media, INITRD, KERNEL};
use crate::stack;
use crate::stack::compare_versions;

/// The boot dir's record of the operator's media: which files came from
/// `--netboot DIR` (a hidden file: bty-web never serves it).
pub const OPERATOR_RECORD: &str = ".operator-media.json";

/// Who is placing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// This binary's media, or an image's: the place rule (module docs).
    Auto,
    /// The operator's `--netboot DIR`, named in `source` for messages:
    /// placed as given and recorded.
    Operator,
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
    /// The boot dir's media has a newer agent; left alone.
    KeptNewer,
    /// The operator's media (`--netboot`), not older; left alone.
    KeptOperator,
}

impl Outcome {
    fn written(self) -> bool {
        matches!(self, Outcome::Copied | Outcome::Replaced)
    }
}

/// [`OPERATOR_RECORD`]'s contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Where the files came from (`--netboot /srv/media`).
    pub source: String,
    /// The file names in the boot dir that are the operator's.
    pub files: Vec<String>,
}

impl OperatorRecord {
    /// The record in `boot`, if any (an unreadable one counts as none).
    pub fn read(boot: &Path) -> Option<OperatorRecord> {
        let text = fs::read_to_string(boot.join(OPERATOR_RECORD)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, boot: &Path) -> Result<()> {
        let p = boot.join(OPERATOR_RECORD);
        let tmp = boot.join(format!(
            ".operator-media.tmp-{:016x}",
            rand::random::<u64>()
        ));
        let text = serde_json::to_string_pretty(self)? + "\n";
        let r = (|| -> Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            Ok(())
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r.with_context(|| format!("writing {}", p.display()))
    }
}

/// What [`place`] did.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Per file, by its name in the boot dir: the initrd, the kernel, then
    /// the bootfiles ([`stack::bootfiles`]).
    pub files: Vec<(String, Outcome)>,
    /// The info of the initrd the boot dir held before (None: no kernel
    /// and initrd there, or not a bty initrd).
    pub before: Option<Info>,
    /// The operator's record, when the boot dir keeps the operator's media.
    pub operator: Option<OperatorRecord>,
}

impl Placed {
    /// What happened to the kernel and initrd (one outcome for the pair:
    /// the "most written" of the two).
    pub fn pair(&self) -> Outcome {
        let (i, k) = (self.files[0].1, self.files[1].1);
        match (i, k) {
            (Outcome::Kept, o) | (o, Outcome::Kept) => o,
            (o, _) => o,
        }
    }
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
    // A fresh name, created O_EXCL|O_NOFOLLOW: the boot dir is the
    // containers' user's, a link planted there is not written through.
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        dst.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u64>()
    ));
    let result = (|| -> Result<()> {
        let mut input =
            fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
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

/// Put `media`'s kernel and initrd (as `kernel` and `initrd`) and its
/// bootfiles ([`stack::bootfiles`]: iPXE, shim, GRUB) into `boot`, each atomically, by `mode`'s rule (module docs).
/// The operator's media must hold both the kernel and the initrd.
pub fn place(media: &Media, boot: &Path, kernel: &str, initrd: &str, mode: Mode) -> Result<Placed> {
    if mode == Mode::Operator {
        media.require_pair()?;
    }
    fs::create_dir_all(boot).with_context(|| format!("creating {}", boot.display()))?;
    let (kdst, idst) = (boot.join(kernel), boot.join(initrd));
    let pair_there = kdst.is_file() && idst.is_file();
    // An unreadable or foreign initrd reads as None.
    let before = if pair_there {
        inspect(&idst).ok().flatten()
    } else {
        None
    };
    let cmp = before
        .as_ref()
        .and_then(|b| compare_versions(&b.agent_version, &media.info.agent_version));
    let record = match mode {
        Mode::Auto => OperatorRecord::read(boot)
            .filter(|r| pair_there && r.files.iter().any(|f| f == kernel || f == initrd)),
        Mode::Operator => None,
    };
    let keep = match (&record, cmp) {
        (Some(_), Some(Ordering::Less)) => None,
        (Some(_), _) => Some(Outcome::KeptOperator),
        (None, Some(Ordering::Greater)) if mode == Mode::Auto => Some(Outcome::KeptNewer),
        _ => None,
    };
    let mut files = Vec::new();
    // Between the two renames a machine could fetch a mismatched pair (its
    // modules would not load, and it retries); the window is one rename.
    for (src, name) in [(INITRD, initrd), (KERNEL, kernel)] {
        let from = media.dir.join(src);
        let o = match keep {
            Some(k) => k,
            None if from.is_file() => {
                copy_atomic(&from, &boot.join(name)).with_context(|| format!("placing {name}"))?
            }
            None => Outcome::Missing,
        };
        files.push((name.to_string(), o));
    }
    for name in stack::bootfiles() {
        let from = media.dir.join(name);
        let theirs = keep == Some(Outcome::KeptOperator)
            && record
                .as_ref()
                .is_some_and(|r| r.files.iter().any(|f| f == name))
            && boot.join(name).is_file();
        let o = if theirs {
            Outcome::KeptOperator
        } else if from.is_file() {
            copy_atomic(&from, &boot.join(name)).with_context(|| format!("placing {name}"))?
        } else {
            Outcome::Missing
        };
        files.push((name.to_string(), o));
    }
    let pair_written = files[..2].iter().any(|(_, o)| o.written());
    match mode {
        Mode::Operator => OperatorRecord {
            source: media.dir.display().to_string(),
            files: files
                .iter()
                .filter(|(_, o)| o.written() || *o == Outcome::Kept)
                .map(|(n, _)| n.clone())
                .collect(),
        }
        .write(boot)?,
        // The operator's media was replaced (it was older), or its files
        // are gone: the record no longer names anything that is there.
        Mode::Auto if pair_written && boot.join(OPERATOR_RECORD).exists() => {
            fs::remove_file(boot.join(OPERATOR_RECORD))
                .with_context(|| format!("removing {}", boot.join(OPERATOR_RECORD).display()))?;
        }
        Mode::Auto => {}
    }
    Ok(Placed {
        files,
        before,
        operator: if keep == Some(Outcome::KeptOperator) {
            record
        } else {
            None
        },
    })
}

/// `media 0.1.0-k6.1.0-57-amd64 (agent 0.1.0)`, or what a media without a
/// bty info file is.
pub fn describe(info: &Info) -> String {
    if info.version.is_empty() && info.agent_version.is_empty() {
        "a kernel and initrd without a bty info file".to_string()
    } else {
        format!("media {} (agent {})", info.version, info.agent_version)
    }
}

/// One line for people about what [`place`] did, and a second one (a
/// warning) when files are missing. `(is_warning, text)`.
pub fn summary(media: &Media, boot: &Path, placed: &Placed) -> Vec<(bool, String)> {
    let b = boot.display();
    let ipxe = &placed.files[2..];
    let ipxe_written = ipxe.iter().filter(|(_, o)| o.written()).count();
    let ipxe_note = match ipxe_written {
        0 => String::new(),
        n => format!("; {n} bootfile{} updated", if n == 1 { "" } else { "s" }),
    };
    let mine = describe(&media.info);
    let before = placed
        .before
        .as_ref()
        .map(describe)
        .unwrap_or_else(|| "a kernel and initrd that are not bty's".to_string());
    let mut lines = Vec::new();
    let first = match placed.pair() {
        Outcome::Copied => format!("media: placed {mine} in {b}{ipxe_note}"),
        Outcome::Replaced => format!("media: placed {mine} in {b}, replacing {before}{ipxe_note}"),
        Outcome::Kept => format!("media: {b} already holds {mine}{ipxe_note}"),
        Outcome::KeptNewer => {
            format!("media: {b} keeps its {before}: newer than {mine}{ipxe_note}")
        }
        Outcome::KeptOperator => format!(
            "media: {b} keeps the operator's {before} from {}: not older than {mine}{ipxe_note}",
            placed
                .operator
                .as_ref()
                .map(|r| r.source.as_str())
                .unwrap_or("--netboot")
        ),
        Outcome::Missing => format!(
            "media: {} has no netboot kernel and initrd{ipxe_note}",
            media.dir.display()
        ),
    };
    lines.push((placed.pair() == Outcome::Missing, first));
    let missing: Vec<&str> = placed
        .files
        .iter()
        .filter(|(_, o)| *o == Outcome::Missing)
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        let absent: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|n| !boot.join(n).is_file())
            .collect();
        let are = if missing.len() == 1 { "is" } else { "are" };
        let head = format!(
            "media: {} {are} not in {}",
            missing.join(", "),
            media.dir.display()
        );
        lines.push(if absent.is_empty() {
            (false, format!("{head}; {b} keeps the ones it had"))
        } else {
            (
                true,
                format!(
                    "{head}; {b} has no {}, so machines that need {} cannot boot from it",
                    absent.join(", "),
                    if absent.len() == 1 { "it" } else { "them" }
                ),
            )
        });
    }
    lines
}

/// [`summary`] on stderr (deploy, serve, upgrade).
pub fn report(media: &Media, boot: &Path, placed: &Placed) {
    for (warn, line) in summary(media, boot, placed) {
        if warn {
            crate::ui::warn(line);
        } else {
            crate::ui::detail(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{cpio, INFO_PATH};

    fn initrd(path: &Path, agent_version: &str) {
        let info = Info {
            version: format!("{agent_version}-k6.1"),
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
        for f in stack::bootfiles() {
            fs::write(dir.join(f), format!("{f} {agent_version}")).unwrap();
        }
        Media::from_dir(dir).unwrap()
    }

    fn outcomes(r: &Placed) -> Vec<Outcome> {
        r.files.iter().map(|x| x.1).collect()
    }

    fn auto(m: &Media, boot: &Path) -> Placed {
        place(m, boot, "k", "i", Mode::Auto).unwrap()
    }

    #[test]
    fn copies_keeps_replaces_and_respects_a_newer_agent() {
        use Outcome::*;
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        let m1 = media(&d.path().join("m1"), "0.1.0", b"kernel-1");
        let r = auto(&m1, &boot);
        assert_eq!(r.files[0], ("i".to_string(), Copied));
        assert_eq!(outcomes(&r), [Copied; 7]);
        assert_eq!(r.pair(), Copied);
        assert_eq!(outcomes(&auto(&m1, &boot)), [Kept; 7]);
        // Same version, other bytes: replaced.
        let m1b = media(&d.path().join("m1b"), "0.1.0", b"kernel-X");
        let r = auto(&m1b, &boot);
        assert_eq!(outcomes(&r)[..2], [Kept, Replaced]);
        assert_eq!(r.pair(), Replaced);
        // A newer agent in the boot dir is kept; an older one replaced.
        let m2 = media(&d.path().join("m2"), "0.2.0", b"kernel-2");
        assert_eq!(outcomes(&auto(&m2, &boot))[..2], [Replaced, Replaced]);
        let r = auto(&m1, &boot);
        assert_eq!(outcomes(&r)[..2], [KeptNewer, KeptNewer]);
        assert_eq!(r.before.unwrap().agent_version, "0.2.0");
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-2");
        // A boot dir with half a pair is replaced whole.
        fs::remove_file(boot.join("k")).unwrap();
        assert_eq!(outcomes(&auto(&m1, &boot))[..2], [Replaced, Copied]);
        // A foreign initrd is replaced.
        fs::write(boot.join("i"), b"not a cpio").unwrap();
        assert_eq!(outcomes(&auto(&m1, &boot))[..2], [Replaced, Kept]);
        let leftovers: Vec<_> = fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn the_operators_media_is_kept_unless_older() {
        use Outcome::*;
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        let image = media(&d.path().join("image"), "0.2.0", b"kernel-image");
        // The operator's media of the same version, another kernel.
        let op = media(&d.path().join("op"), "0.2.0", b"kernel-custom");
        let r = place(&op, &boot, "k", "i", Mode::Operator).unwrap();
        assert_eq!(outcomes(&r), [Copied; 7]);
        let rec = OperatorRecord::read(&boot).unwrap();
        assert_eq!(rec.source, op.dir.display().to_string());
        assert_eq!(rec.files.len(), 7);
        // An automatic placement (a container restart) keeps all of it.
        let r = auto(&image, &boot);
        assert_eq!(outcomes(&r), [KeptOperator; 7]);
        assert_eq!(r.operator.as_ref().unwrap().source, rec.source);
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-custom");
        let s = summary(&image, &boot, &r);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].1.contains("keeps the operator's"), "{s:?}");
        // Also when it is not a bty initrd at all.
        fs::write(boot.join("i"), b"custom initrd").unwrap();
        assert_eq!(auto(&image, &boot).pair(), KeptOperator);
        // A newer image replaces an older operator's media, and forgets it.
        initrd(&boot.join("i"), "0.1.0");
        let r = auto(&image, &boot);
        // (Both media's bootfiles are the same bytes.)
        assert_eq!(
            outcomes(&r),
            [Replaced, Replaced, Kept, Kept, Kept, Kept, Kept]
        );
        assert!(OperatorRecord::read(&boot).is_none());
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-image");
        // The operator's placement replaces even a newer media.
        let old = media(&d.path().join("old"), "0.0.9", b"kernel-old");
        let r = place(&old, &boot, "k", "i", Mode::Operator).unwrap();
        assert_eq!(r.pair(), Replaced);
        assert_eq!(fs::read(boot.join("k")).unwrap(), b"kernel-old");
    }

    #[test]
    fn the_operators_media_needs_kernel_and_initrd() {
        let d = tempfile::tempdir().unwrap();
        let m = Media::from_dir(d.path()).unwrap();
        fs::write(d.path().join(KERNEL), b"k").unwrap();
        let e = place(&m, &d.path().join("boot"), "k", "i", Mode::Operator).unwrap_err();
        assert!(format!("{e:#}").contains(INITRD), "{e:#}");
        assert!(!d.path().join("boot").exists());
    }

    #[test]
    fn missing_files_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let m = Media {
            dir: d.path().join("empty"),
            info: Info::default(),
        };
        fs::create_dir_all(&m.dir).unwrap();
        let boot = d.path().join("boot");
        let r = auto(&m, &boot);
        assert_eq!(outcomes(&r), [Outcome::Missing; 7]);
        let s = summary(&m, &boot, &r);
        assert!(s.iter().all(|(warn, _)| *warn), "{s:?}");
        assert!(s[1].1.contains("cannot boot"), "{s:?}");
    }
}
