//! Map a requested file name to a regular file inside the root.
//!
//! Rules (docs/tftp.md):
//! - leading `/` are stripped, as `in.tftpd -s` does through its chroot, so
//!   `/undionly.kpxe` and `undionly.kpxe` name the same file and
//!   `/etc/passwd` means `<root>/etc/passwd`;
//! - a `..` component, a control character (NUL cannot arrive: it ends the
//!   field) or a name over [`crate::packet::MAX_FILENAME`] bytes is refused;
//! - the joined path is canonicalized (every symlink resolved) and must
//!   still lie inside the canonical root, so a symlink may point elsewhere
//!   inside the root but never out of it;
//! - only regular files are served.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::packet::{ErrorCode, MAX_FILENAME};

/// Why a name was refused; maps to a TFTP error code.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No such file.
    #[error("file not found")]
    NotFound,
    /// The name tries to leave the root, or names something not servable.
    #[error("access violation: {0}")]
    Denied(&'static str),
    /// The file exists but could not be opened or read.
    #[error("cannot read file: {0}")]
    Io(#[source] io::Error),
}

impl PathError {
    /// The TFTP error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::NotFound => ErrorCode::FileNotFound,
            PathError::Denied(_) => ErrorCode::AccessViolation,
            PathError::Io(_) => ErrorCode::NotDefined,
        }
    }
}

/// An opened file ready to be served.
#[derive(Debug)]
pub struct Opened {
    /// Canonical path (for logs).
    pub path: PathBuf,
    /// The open file.
    pub file: File,
    /// Its size at open time.
    pub size: u64,
}

/// Check `name` lexically and return the relative path it names.
pub fn relative(name: &str) -> Result<PathBuf, PathError> {
    if name.len() > MAX_FILENAME {
        return Err(PathError::Denied("file name too long"));
    }
    if name.chars().any(char::is_control) {
        return Err(PathError::Denied("control character in file name"));
    }
    let trimmed = name.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(PathError::Denied("empty file name"));
    }
    let mut rel = PathBuf::new();
    for part in Path::new(trimmed).components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathError::Denied("'..' in file name")),
            // Leading slashes were stripped, so these cannot occur; refuse
            // rather than trust that.
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Denied("absolute file name"))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(PathError::Denied("empty file name"));
    }
    Ok(rel)
}

/// The canonical form of `joined`; a missing file or a file used as a
/// directory is "not found".
fn resolve(joined: &Path) -> Result<PathBuf, PathError> {
    match joined.canonicalize() {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PathError::NotFound),
        // ENOTDIR: a path component is a file.
        Err(e) if e.raw_os_error() == Some(20) => Err(PathError::NotFound),
        Err(e) => Err(PathError::Io(e)),
    }
}

/// Resolve `name` under `root` (already canonical) and open it.
pub fn open(root: &Path, name: &str) -> Result<Opened, PathError> {
    let rel = relative(name)?;
    let canonical = resolve(&root.join(rel))?;
    if !canonical.starts_with(root) {
        return Err(PathError::Denied("path leaves the TFTP root"));
    }
    // O_NOFOLLOW: the canonical path has no symlink left; if one appears
    // between canonicalize and open, refuse instead of following it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&canonical)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => PathError::NotFound,
            io::ErrorKind::PermissionDenied => PathError::Denied("permission denied"),
            _ => PathError::Io(e),
        })?;
    let meta = file.metadata().map_err(PathError::Io)?;
    if !meta.is_file() {
        return Err(PathError::Denied("not a regular file"));
    }
    Ok(Opened {
        path: canonical,
        file,
        size: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lexical_rules() {
        assert_eq!(relative("a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative("//a/./b").unwrap(), PathBuf::from("a/b"));
        for bad in [
            "",
            "/",
            ".",
            "../etc/passwd",
            "a/../../b",
            "a\u{1}b",
            "a\nb",
        ] {
            assert!(
                matches!(relative(bad), Err(PathError::Denied(_))),
                "{bad:?}"
            );
        }
        assert!(relative(&"a".repeat(MAX_FILENAME + 1)).is_err());
    }

    #[test]
    fn open_stays_inside_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("ok"), b"hello").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink("../ok", root.join("sub/inside")).unwrap();
        symlink(outside.path().join("secret"), root.join("escape")).unwrap();
        symlink(outside.path(), root.join("escdir")).unwrap();

        let o = open(&root, "/ok").unwrap();
        assert_eq!(o.size, 5);
        assert_eq!(open(&root, "sub/inside").unwrap().path, root.join("ok"));
        assert!(matches!(open(&root, "escape"), Err(PathError::Denied(_))));
        assert!(matches!(
            open(&root, "escdir/secret"),
            Err(PathError::Denied(_))
        ));
        assert!(matches!(open(&root, "sub"), Err(PathError::Denied(_))));
        assert!(matches!(open(&root, "missing"), Err(PathError::NotFound)));
        assert!(matches!(open(&root, "ok/x"), Err(PathError::NotFound)));
        assert!(matches!(
            open(&root, "/etc/passwd"),
            Err(PathError::NotFound)
        ));
    }
}
