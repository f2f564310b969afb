//! The deploy directory on disk: atomic writes of the rendered files, what
//! in DEST is foreign, the data layout and its owners, the bty.toml
//! migration and where bty-web's boot dir lands on the host. The manifest
//! is [`crate::manifest`]'s, envvars' text [`crate::envvars`]'s.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::envvars;
use crate::manifest::{self, Manifest};
use crate::render::File;
use crate::{safefs, stack};

/// Files bty-lab writes into DEST (anything else there is foreign).
const OURS: &[&str] = &[
    manifest::FILE,
    "compose.yml",
    "bty.toml",
    "README.md",
    "envvars",
    "env",
    "quadlet",
    "data",
    // `bty-lab backup`'s archives and restore's moved-aside files.
    "backups",
];

/// Make `p` absolute without requiring it to exist.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    // Drop `.` and resolve `..` lexically; the directory may not exist yet.
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Names in DEST that bty-lab did not write.
pub fn foreign_entries(dest: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dest) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !OURS.contains(&name.as_str()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// Write `contents` to `path` through a fresh temp file + rename, so a
/// reader never sees half a file and a failure leaves the old one intact.
/// A link at `path` or at its directory is refused, never followed.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<Change> {
    let dir = path.parent().context("file has no parent directory")?;
    let name = path.file_name().context("file has no name")?;
    let d = safefs::make_dir(dir)?;
    let old = d.read_text(name)?;
    if old.as_deref() == Some(contents) {
        d.chmod(name, mode)?;
        return Ok(Change::Unchanged);
    }
    d.write_new(name, contents.as_bytes(), mode)?;
    Ok(if old.is_some() {
        Change::Updated
    } else {
        Change::Created
    })
}

/// Refuse, before anything is written, a link where bty-lab keeps a file
/// or directory: DEST itself, its names in DEST, what is in its
/// subdirectories, and the services' data dirs.
pub fn refuse_links(m: &Manifest) -> Result<()> {
    safefs::refuse_link(&m.dest)?;
    for name in OURS {
        let p = m.dest.join(name);
        safefs::refuse_link(&p)?;
        if *name == "data" || !p.is_dir() {
            continue;
        }
        for e in fs::read_dir(&p).with_context(|| format!("reading {}", p.display()))? {
            safefs::refuse_link(&e?.path())?;
        }
    }
    for svc in m.services() {
        if let Some((sub, _)) = svc.data {
            safefs::refuse_link(&m.data_dir.join(sub))?;
        }
    }
    Ok(())
}

/// Write every file under DEST; returns what changed, for the report.
pub fn write_files(dest: &Path, files: &[File]) -> Result<Vec<(PathBuf, Change)>> {
    let mut out = Vec::new();
    for f in files {
        let c = write_atomic(&dest.join(&f.rel), &f.contents, f.mode)?;
        out.push((f.rel.clone(), c));
    }
    Ok(out)
}

/// Add keys a new version of bty-web needs to an existing bty.toml,
/// keeping the operator's values and comments. Returns the keys added.
pub fn migrate_bty_toml(text: &str, fresh: &str) -> Result<(String, Vec<String>)> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing the existing bty.toml")?;
    let fresh: toml_edit::DocumentMut = fresh.parse().context("parsing the rendered bty.toml")?;
    let mut added = Vec::new();
    for (section, item) in fresh.iter() {
        let Some(table) = item.as_table() else {
            continue;
        };
        if !doc.contains_key(section) {
            doc[section] = toml_edit::Item::Table(toml_edit::Table::new());
        }
        let Some(dst) = doc[section].as_table_mut() else {
            continue;
        };
        for (k, v) in table.iter() {
            if !dst.contains_key(k) {
                dst.insert(k, v.clone());
                added.push(format!("[{section}] {k}"));
            }
        }
    }
    move_defaults(&mut doc, &mut added);
    Ok((doc.to_string(), added))
}

/// Defaults an older bty-lab wrote that this one changed: moved only when
/// the operator left the old default in place.
fn move_defaults(doc: &mut toml_edit::DocumentMut, added: &mut Vec<String>) {
    for (section, key, from, to) in MOVED_DEFAULTS {
        let Some(t) = doc.get_mut(section).and_then(|i| i.as_table_mut()) else {
            continue;
        };
        if t.get(key).and_then(|v| v.as_str()) == Some(from) {
            t[key] = toml_edit::value(*to);
            added.push(format!("[{section}] {key} moved from {from:?} to {to:?}"));
        }
    }
}

/// (section, key, old default, new default). `[boot] dir` moved out of the
/// image into the bind-mounted state dir so the netboot kernel/initrd that
/// deploy places there are served.
const MOVED_DEFAULTS: &[(&str, &str, &str, &str)] =
    &[("boot", "dir", "/srv/bty/boot", "/var/lib/bty/boot")];

/// Create the bind-mount layout with the owners the containers run as.
/// Returns the directories created. Needs root for the chown.
pub fn make_data_layout(s: &Manifest) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for svc in s.services() {
        let Some((sub, _)) = svc.data else { continue };
        let d = s.data_dir.join(sub);
        safefs::refuse_link(&d)?;
        if !d.exists() {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            made.push(d.clone());
        }
        if svc.non_root {
            give_to_service(&safefs::Dir::open(&d)?, svc.name)?;
        }
    }
    Ok(made)
}

/// Data dir `d` to the non-root containers' user, mode 0750.
fn give_to_service(d: &safefs::Dir, service: &str) -> Result<()> {
    let uid = stack::SERVICE_UID;
    if let Err(e) = d.chown(uid, uid) {
        bail!(
            "giving it to uid {uid} (the {service} container's user) failed: {e:#}; \
             this step needs root: re-run with sudo"
        );
    }
    d.set_mode(0o750)
}

/// Under sudo, give DEST (not the data, which belongs to the containers)
/// back to the invoking user.
pub fn chown_to_sudo_user(dest: &Path) -> Result<Option<String>> {
    let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) else {
        return Ok(None);
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        return Ok(None);
    };
    chown_ours(dest, uid, gid).context("giving DEST to the sudo user")?;
    Ok(std::env::var("SUDO_USER").ok())
}

/// DEST, bty-lab's names in it but `data` (anything else is not ours to
/// give) and what is in its subdirectories, to `uid:gid`. Never through a
/// link: each directory is opened with O_NOFOLLOW, each name is lchown'd.
///
/// DEST itself only when nothing else is in it: `--force` into a directory
/// holding others' files (`/etc`, say) must not hand that directory over.
fn chown_ours(dest: &Path, uid: u32, gid: u32) -> Result<()> {
    let d = safefs::Dir::open(dest)?;
    let mut foreign = false;
    for name in d.names()? {
        if !OURS.iter().any(|o| name == *o) {
            foreign = true;
            continue;
        }
        if name == "data" {
            continue;
        }
        if d.kind(&name).is_some_and(|k| k.is_dir()) {
            let sub = d.open_sub(&name)?;
            for n in sub.names()? {
                sub.lchown(&n, uid, gid)?;
            }
            sub.chown(uid, gid)?;
        } else {
            d.lchown(&name, uid, gid)?;
        }
    }
    if foreign {
        return Ok(());
    }
    d.chown(uid, gid)
}

/// Is this process root?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// bty-web's boot dir on the host and the kernel/initrd names, from DEST's
/// bty.toml with envvars' BTY_BOOT_* overrides (what the container will see).
/// None when `[boot] dir` is outside the bind-mounted state dir.
pub fn boot_target(s: &Manifest) -> Result<Option<(PathBuf, [String; 2])>> {
    let path = s.dest.join("bty.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = bty_web::Config::from_toml_str(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let vars = envvars::read(&s.dest)?;
    let var = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let dir = var("BTY_BOOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cfg.boot_dir());
    let kernel = var("BTY_BOOT_KERNEL").unwrap_or(cfg.boot.kernel);
    let initrd = var("BTY_BOOT_INITRD").unwrap_or(cfg.boot.initrd);
    let (_, mount) = stack::WEB.data.expect("bty-web has a state dir");
    let Ok(rest) = dir.strip_prefix(mount) else {
        return Ok(None);
    };
    // `..` would climb out of the state dir (bty.toml is the sudo user's).
    if rest
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Ok(None);
    }
    let host = s.data_dir.join("bty").join(rest);
    Ok(Some((host, [kernel, initrd])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn migration_keeps_edits_and_comments_and_adds_missing() {
        let old = "# mine\n[server]\nlisten = \"0.0.0.0:9999\" # custom\n";
        let fresh = "[server]\nlisten = \"0.0.0.0:8080\"\nstate_dir = \"/var/lib/bty\"\n[boot]\ndir = \"/b\"\n";
        let (out, added) = migrate_bty_toml(old, fresh).unwrap();
        assert!(
            out.contains("# mine") && out.contains("0.0.0.0:9999\" # custom"),
            "{out}"
        );
        assert!(out.contains("state_dir") && out.contains("[boot]"), "{out}");
        assert_eq!(added, vec!["[server] state_dir", "[boot] dir"]);
    }

    #[test]
    fn migration_moves_an_old_default_but_not_an_edit() {
        let fresh = "[boot]\ndir = \"/var/lib/bty/boot\"\n";
        let (out, added) = migrate_bty_toml("[boot]\ndir = \"/srv/bty/boot\"\n", fresh).unwrap();
        assert!(out.contains("dir = \"/var/lib/bty/boot\""), "{out}");
        assert_eq!(added.len(), 1, "{added:?}");
        let (out, added) = migrate_bty_toml("[boot]\ndir = \"/mine\"\n", fresh).unwrap();
        assert!(out.contains("/mine") && added.is_empty(), "{out}");
    }

    #[test]
    fn atomic_write_reports_changes_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("envvars");
        assert_eq!(write_atomic(&p, "a", 0o600).unwrap(), Change::Created);
        assert_eq!(write_atomic(&p, "a", 0o600).unwrap(), Change::Unchanged);
        assert_eq!(write_atomic(&p, "b", 0o600).unwrap(), Change::Updated);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn foreign_entries_lists_only_others() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("compose.yml"), "").unwrap();
        fs::write(d.path().join("notes.txt"), "").unwrap();
        assert_eq!(foreign_entries(d.path()).unwrap(), vec!["notes.txt"]);
    }

    /// A root-owned 0755 directory to aim links at.
    fn victim() -> tempfile::TempDir {
        let v = tempfile::tempdir().unwrap();
        fs::set_permissions(v.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(v.path().join("secret"), "root-only\n").unwrap();
        v
    }

    #[track_caller]
    fn untouched(v: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        let m = fs::metadata(v).unwrap();
        let me = fs::metadata("/proc/self").unwrap();
        assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()), "chowned");
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_to_string(v.join("secret")).unwrap(), "root-only\n");
    }

    #[test]
    fn the_data_layout_refuses_a_link_and_chowns_nothing_through_it() {
        let (_d, m) = crate::cmd::testkit::lab();
        let v = victim();
        fs::create_dir_all(&m.data_dir).unwrap();
        std::os::unix::fs::symlink(v.path(), m.data_dir.join("bty")).unwrap();
        let e = make_data_layout(&m).unwrap_err();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("data/bty"), "{e:#}");
        untouched(v.path());
        let e = refuse_links(&m).unwrap_err();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
    }

    #[test]
    fn chown_walks_only_our_names_and_no_links() {
        let (_d, m) = crate::cmd::testkit::lab();
        let v = victim();
        fs::create_dir_all(m.dest.join("env")).unwrap();
        std::os::unix::fs::symlink(v.path(), m.dest.join("x")).unwrap();
        std::os::unix::fs::symlink(v.path().join("secret"), m.dest.join("env/a.env")).unwrap();
        std::os::unix::fs::symlink(v.path(), m.dest.join("quadlet")).unwrap();
        // To another uid as root (tests run as root here), else to our own.
        use std::os::unix::fs::MetadataExt as _;
        let me = fs::metadata("/proc/self").unwrap();
        let to = if me.uid() == 0 { 4242 } else { me.uid() };
        chown_ours(&m.dest, to, to).unwrap();
        untouched(v.path());
        assert_eq!(fs::metadata(m.dest.join("envvars")).unwrap().uid(), to);
        // DEST itself holds `x`, not ours: it stays whose it was.
        assert_eq!(fs::metadata(&m.dest).unwrap().uid(), me.uid());
        fs::remove_file(m.dest.join("x")).unwrap();
        chown_ours(&m.dest, to, to).unwrap();
        assert_eq!(fs::metadata(&m.dest).unwrap().uid(), to);
        assert!(fs::symlink_metadata(m.dest.join("quadlet"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn atomic_write_refuses_a_link_at_the_file_and_its_dir() {
        let d = tempfile::tempdir().unwrap();
        let v = victim();
        let p = d.path().join("envvars");
        std::os::unix::fs::symlink(v.path().join("secret"), &p).unwrap();
        let e = write_atomic(&p, "x", 0o600).unwrap_err();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
        std::os::unix::fs::symlink(v.path(), d.path().join("env")).unwrap();
        let e = write_atomic(&d.path().join("env/a.env"), "x", 0o600).unwrap_err();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
        untouched(v.path());
        assert_eq!(fs::read_dir(v.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        write_atomic(&d.path().join("a"), "1", 0o644).unwrap();
        write_atomic(&d.path().join("a"), "2", 0o644).unwrap();
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a"]);
    }
}
