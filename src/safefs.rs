//! Writing as root where another user has a say (DEST, given back to the
//! sudo user; the data dir): never through a symbolic link. A directory is
//! opened once with `O_NOFOLLOW` and everything in it is reached through
//! that descriptor (`/proc/self/fd/N/name`), so a link planted in it, or a
//! subdirectory swapped for one meanwhile, is refused rather than followed.
//! Temp files get a fresh random name and `O_EXCL`.
//!
//! DEST itself is opened once per run ([`anchor`]): every later directory
//! under it is reached by walking down from that descriptor, one
//! `O_NOFOLLOW` component at a time, so a directory *above* DEST that its
//! owner swaps for a link midway changes nothing either.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, Result};

use crate::exit;

/// The refusal for a link at `p`, where bty-lab keeps a file or directory.
pub fn link_refused(p: &Path) -> anyhow::Error {
    let to = fs::read_link(p)
        .map(|t| format!(" (to {})", t.display()))
        .unwrap_or_default();
    exit::refused(format!(
        "{} is a symbolic link{to}: bty-lab runs as root and does not read, write, chown or \
         chmod through links where it keeps its files; remove the link (rm {}) and re-run",
        p.display(),
        p.display()
    ))
}

/// Refuse when `p` itself is a symbolic link (a missing `p` is fine).
pub fn refuse_link(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(link_refused(p)),
        _ => Ok(()),
    }
}

/// An open-failure at `shown` (reached as `real`): a link is a refusal.
fn open_error(e: std::io::Error, real: &Path, shown: &Path) -> anyhow::Error {
    let link = e.raw_os_error() == Some(libc::ELOOP)
        || fs::symlink_metadata(real).is_ok_and(|m| m.file_type().is_symlink());
    if link {
        return link_refused(shown);
    }
    anyhow::Error::new(e).context(format!("opening {}", shown.display()))
}

/// Directories opened once for this run (DEST), by their absolute path.
static ANCHORS: Mutex<Vec<Dir>> = Mutex::new(Vec::new());

/// Open `dir` (absolute; a link there is refused) for the rest of this
/// run: a later [`Dir::open`] or [`make_dir`] of a path inside it starts
/// from this descriptor instead of resolving the path again.
pub fn anchor(dir: &Path) -> Result<()> {
    let d = Dir::open(dir)?;
    let mut anchors = ANCHORS.lock().unwrap_or_else(|e| e.into_inner());
    anchors.retain(|a| a.path != d.path);
    anchors.push(d);
    Ok(())
}

/// The anchored directory `p` is in, and the path below it; None when `p`
/// is in none or has a component other than a plain name below it.
fn anchored(p: &Path) -> Result<Option<(Dir, Vec<OsString>)>> {
    let anchors = ANCHORS.lock().unwrap_or_else(|e| e.into_inner());
    // The deepest anchor wins (a data dir anchored inside DEST).
    let best = anchors
        .iter()
        .filter_map(|a| Some((a, p.strip_prefix(&a.path).ok()?)))
        .max_by_key(|(a, _)| a.path.as_os_str().len());
    let Some((a, rest)) = best else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(n) => names.push(n.to_os_string()),
            _ => return Ok(None),
        }
    }
    Ok(Some((a.dup()?, names)))
}

/// Create directory `p` (and its parents) unless it exists, refusing a
/// link at `p`, and open it.
pub fn make_dir(p: &Path) -> Result<Dir> {
    if let Some((mut d, names)) = anchored(p)? {
        for n in names {
            d = d.make_sub(&n)?;
        }
        return Ok(d);
    }
    refuse_link(p)?;
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    Dir::open(p)
}

/// A directory opened without following a link at its last component.
pub struct Dir {
    fd: File,
    path: PathBuf,
}

impl Dir {
    /// Open directory `path`; a link there is a refusal. Inside an
    /// [`anchor`]ed directory, walked down from its descriptor.
    pub fn open(path: &Path) -> Result<Dir> {
        if let Some((mut d, names)) = anchored(path)? {
            for n in names {
                d = d.open_sub(&n)?;
            }
            return Ok(d);
        }
        let fd = open_nofollow(path, libc::O_DIRECTORY).map_err(|e| open_error(e, path, path))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The same directory on a new descriptor.
    fn dup(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .with_context(|| format!("duplicating the descriptor of {}", self.path.display()))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// `name` reached through the open descriptor.
    fn at(&self, name: &OsStr) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name)
    }

    /// `name`'s path, for messages.
    pub fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Subdirectory `name`, opened the same way.
    pub fn open_sub(&self, name: &OsStr) -> Result<Dir> {
        let shown = self.shown(name);
        let fd = open_nofollow(&self.at(name), libc::O_DIRECTORY)
            .map_err(|e| open_error(e, &self.at(name), &shown))?;
        Ok(Dir { fd, path: shown })
    }

    /// Subdirectory `name`, created (mode 0755) when missing.
    pub fn make_sub(&self, name: &OsStr) -> Result<Dir> {
        match fs::create_dir(self.at(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", self.shown(name).display()))
            }
            _ => {}
        }
        self.open_sub(name)
    }

    /// What `name` is, not following a link; None when missing.
    pub fn kind(&self, name: &OsStr) -> Option<fs::FileType> {
        fs::symlink_metadata(self.at(name))
            .ok()
            .map(|m| m.file_type())
    }

    /// The names in this directory.
    pub fn names(&self) -> Result<Vec<OsString>> {
        let rd = fs::read_dir(self.at(OsStr::new("")))
            .with_context(|| format!("reading {}", self.path.display()))?;
        rd.map(|e| Ok(e?.file_name())).collect()
    }

    /// Regular file `name` as text; None when missing (or not UTF-8).
    pub fn read_text(&self, name: &OsStr) -> Result<Option<String>> {
        let mut f = match self.open_file(name) {
            Ok(f) => f,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut s = String::new();
        Ok(f.read_to_string(&mut s).ok().map(|_| s))
    }

    /// Regular file `name`, opened to read without following a link.
    fn open_file(&self, name: &OsStr) -> Result<File> {
        let shown = self.shown(name);
        let f = open_nofollow(&self.at(name), libc::O_NONBLOCK)
            .map_err(|e| open_error(e, &self.at(name), &shown))?;
        if !f.metadata()?.is_file() {
            return Err(exit::refused(format!(
                "{} is not a regular file; remove it and re-run",
                shown.display()
            )));
        }
        Ok(f)
    }

    /// Set regular file `name`'s mode.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> Result<()> {
        self.open_file(name)?
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.shown(name).display()))
    }

    /// Replace `name` with `contents` (mode `mode`, synced) through a new
    /// temp file in this directory and a rename.
    pub fn write_new(&self, name: &OsStr, contents: &[u8], mode: u32) -> Result<()> {
        let (tmp, mut f) = self.create_temp(name, mode)?;
        let shown = self.shown(name);
        let r = (|| -> std::io::Result<()> {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(contents)?;
            f.sync_all()?;
            fs::rename(self.at(&tmp), self.at(name))
        })();
        if r.is_err() {
            let _ = fs::remove_file(self.at(&tmp));
        }
        r.with_context(|| format!("writing {}", shown.display()))
    }

    /// A fresh `.<name>.<random>.tmp`, created here with `O_EXCL`.
    fn create_temp(&self, name: &OsStr, mode: u32) -> Result<(OsString, File)> {
        let tmp = OsString::from(format!(
            ".{}.{:016x}.tmp",
            name.to_string_lossy(),
            rand::random::<u64>()
        ));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.at(&tmp))
            .with_context(|| format!("creating {}", self.shown(&tmp).display()))?;
        Ok((tmp, f))
    }

    /// Give `name` itself (a link stays a link) to `uid:gid`.
    pub fn lchown(&self, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(self.at(name), Some(uid), Some(gid))
            .with_context(|| format!("chown {}", self.shown(name).display()))
    }

    /// Give this directory to `uid:gid`.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::fchown(&self.fd, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", self.path.display()))
    }

    /// Set this directory's mode.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        self.fd
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.path.display()))
    }
}

fn open_nofollow(p: &Path, flags: libc::c_int) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
        .open(p)
}

fn not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner of the directory above DEST swaps it for a link to
    /// somewhere root owns, after DEST was opened: the run goes on in the
    /// DEST it opened, and nothing lands at the link's target.
    #[test]
    fn a_swapped_parent_of_an_anchored_dest_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("home");
        let dest = parent.join("lab");
        std::fs::create_dir_all(&dest).unwrap();
        anchor(&dest).unwrap();
        // The swap: home -> elsewhere, where a "lab" also exists.
        let elsewhere = t.path().join("etc");
        std::fs::create_dir_all(elsewhere.join("lab")).unwrap();
        std::fs::rename(&parent, t.path().join("home.moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &parent).unwrap();

        let d = make_dir(&dest.join("data/bty")).unwrap();
        d.write_new("f".as_ref(), b"x", 0o600).unwrap();
        Dir::open(&dest)
            .unwrap()
            .write_new("envvars".as_ref(), b"secret", 0o600)
            .unwrap();
        let moved = t.path().join("home.moved/lab");
        assert_eq!(std::fs::read(moved.join("data/bty/f")).unwrap(), b"x");
        assert_eq!(std::fs::read(moved.join("envvars")).unwrap(), b"secret");
        let leaked: Vec<_> = std::fs::read_dir(elsewhere.join("lab")).unwrap().collect();
        assert!(leaked.is_empty(), "written through the link: {leaked:?}");
        // The control: resolved again, the same path now leads through the
        // link (what every step did before DEST was opened once).
        std::fs::write(dest.join("probe"), b"p").unwrap();
        assert!(elsewhere.join("lab/probe").exists());
    }

    /// A link planted inside an anchored DEST is still refused.
    #[test]
    fn a_link_inside_an_anchored_dest_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("lab2");
        std::fs::create_dir_all(&dest).unwrap();
        anchor(&dest).unwrap();
        std::os::unix::fs::symlink(t.path(), dest.join("data")).unwrap();
        let e = make_dir(&dest.join("data/bty")).err().unwrap();
        assert_eq!(exit::code_of(&e), exit::Code::Refused, "{e:#}");
    }
}
