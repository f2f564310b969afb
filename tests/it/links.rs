//! Issue 12, local privilege: a user who may only `sudo bty-lab` plants
//! symlinks in DEST (which deploy gives them) and re-runs it. bty-lab as
//! root must never chown, chmod, read or write through those links.
//! `init` runs the same file-writing and chown steps as `deploy`, no engine.

use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{bin, exits_with, ok, stderr, TestDir};

/// The uid/gid a test "sudo user" gets; not root, so a chown shows.
const SUDO_ID: u32 = 4242;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `sudo bty-lab init DEST` as the test sudo user.
fn sudo_init(dest: &Path) -> Output {
    Command::new(bin())
        .args(["init", dest.to_str().unwrap(), "--host-addr", "10.0.0.5"])
        .env("SUDO_UID", SUDO_ID.to_string())
        .env("SUDO_GID", SUDO_ID.to_string())
        .env("SUDO_USER", "mallory")
        .output()
        .unwrap()
}

/// A root-owned directory holding one root-owned 0644 file, `secret`.
struct Victim {
    _t: TestDir,
    dir: PathBuf,
}

impl Victim {
    fn new() -> Victim {
        let t = TestDir::new();
        let dir = t.path().join("victim");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("secret"), "KEY=root-only\n").unwrap();
        std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        Victim { _t: t, dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("secret")
    }

    /// Nothing about the victim changed: owner, mode, contents, entries.
    #[track_caller]
    fn untouched(&self) {
        for p in [&self.dir, &self.file()] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{} was chowned", p.display());
        }
        let m = std::fs::metadata(self.file()).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o644, "victim chmodded");
        assert_eq!(
            std::fs::read_to_string(self.file()).unwrap(),
            "KEY=root-only\n"
        );
        let names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["secret"], "files written into the victim dir");
    }
}

/// A deployed DEST, given to the sudo user; None when not root.
fn deployed() -> Option<(TestDir, PathBuf)> {
    if !is_root() {
        eprintln!("skipping: needs root (chown)");
        return None;
    }
    let t = TestDir::new();
    let dest = t.path().join("lab");
    ok(&sudo_init(&dest));
    assert_eq!(std::fs::metadata(&dest).unwrap().uid(), SUDO_ID);
    Some((t, dest))
}

#[test]
fn a_link_in_dest_to_a_directory_is_not_chowned_through() {
    let Some((_t, dest)) = deployed() else { return };
    let v = Victim::new();
    symlink(&v.dir, dest.join("x")).unwrap();
    let _ = sudo_init(&dest);
    v.untouched();
}

#[test]
fn a_link_at_envvars_is_refused_and_not_followed() {
    let Some((_t, dest)) = deployed() else { return };
    let v = Victim::new();
    std::fs::remove_file(dest.join("envvars")).unwrap();
    symlink(v.file(), dest.join("envvars")).unwrap();
    let o = sudo_init(&dest);
    exits_with(&o, 3);
    assert!(stderr(&o).contains("envvars"), "{}", stderr(&o));
    v.untouched();
    assert!(std::fs::symlink_metadata(dest.join("envvars"))
        .unwrap()
        .is_symlink());
}

#[test]
fn a_link_at_a_subdirectory_bty_lab_writes_is_refused() {
    let Some((_t, dest)) = deployed() else { return };
    let v = Victim::new();
    std::fs::remove_dir_all(dest.join("env")).unwrap();
    symlink(&v.dir, dest.join("env")).unwrap();
    let o = sudo_init(&dest);
    exits_with(&o, 3);
    assert!(stderr(&o).contains("env"), "{}", stderr(&o));
    v.untouched();
}

#[test]
fn a_link_at_a_file_in_a_subdirectory_is_refused() {
    let Some((_t, dest)) = deployed() else { return };
    let v = Victim::new();
    let env = std::fs::read_dir(dest.join("env"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&env).unwrap();
    symlink(v.file(), &env).unwrap();
    let o = sudo_init(&dest);
    exits_with(&o, 3);
    v.untouched();
}

#[test]
fn a_planted_temp_file_link_is_not_written_through() {
    let Some((_t, dest)) = deployed() else { return };
    let v = Victim::new();
    // The temp names bty-lab used to write through, fixed and predictable
    // (`.<name>.tmp`; the manifest's own name starts with a dot).
    for name in ["..bty-lab.toml.tmp", ".compose.yml.tmp", ".README.md.tmp"] {
        symlink(v.file(), dest.join(name)).unwrap();
    }
    // A change, so the manifest and compose.yml are rewritten.
    let o = Command::new(bin())
        .args(["init", dest.to_str().unwrap(), "--host-addr", "10.0.0.6"])
        .env("SUDO_UID", SUDO_ID.to_string())
        .env("SUDO_GID", SUDO_ID.to_string())
        .output()
        .unwrap();
    ok(&o);
    v.untouched();
    let m = std::fs::read_to_string(dest.join(".bty-lab.toml")).unwrap();
    assert!(m.contains("10.0.0.6"), "{m}");
}
