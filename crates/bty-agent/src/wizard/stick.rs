//! The stick's data partition as the wizard sees it: the manifest, the
//! image files it names, and which disk holds it (never offered).

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use bty_proto::stick::{Manifest, StickImage, MANIFEST_FILE, MANIFEST_VERSION};

use crate::inventory::attr;

/// The manifest read from `<stick>/bty-stick.json`, checked.
pub fn load(stick: &Path) -> Result<Manifest> {
    let path = stick.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: is the stick's data partition mounted there?",
            path.display()
        )
    })?;
    // The version first, on its own: a newer manifest may not parse as ours
    // at all, and "too new" is the message the technician can act on.
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON", path.display()))?
        .get("version")
        .and_then(|v| v.as_u64())
        .with_context(|| format!("{} has no version", path.display()))?;
    if version > u64::from(MANIFEST_VERSION) {
        bail!(
            "{} is version {version}, this bty reads version {MANIFEST_VERSION} at most: \
             rebuild the stick with this bty-lab, or boot a stick made by a newer bty",
            path.display()
        );
    }
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for img in &m.images {
        file_of(stick, img)?;
    }
    // With a key, `auto` may name a server image: that is checked once
    // the catalog is in.
    if let Some(auto) = m.auto.as_ref().filter(|_| m.key.is_none()) {
        if !m.images.iter().any(|i| i.name == auto.image) {
            bail!(
                "{}: auto names image {:?}, which is not on the stick (and the stick has no \
                 server key to take it from a bty-web)",
                path.display(),
                auto.image
            );
        }
    }
    Ok(m)
}

/// The image's file on the stick; its path must stay inside the stick (a
/// manifest is data, and `../` or an absolute path would read elsewhere).
pub fn file_of(stick: &Path, img: &StickImage) -> Result<PathBuf> {
    let rel = Path::new(&img.file);
    if img.file.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!(
            "image {:?}: file {:?} is not a plain path inside the stick",
            img.name,
            img.file
        );
    }
    Ok(stick.join(rel))
}

/// The bytes the target must hold for `img`: its decoded size, or for a raw
/// image its stored size; `None` when only the decoder would know.
pub fn needed_bytes(img: &StickImage) -> Option<u64> {
    img.size
        .or_else(|| (img.format == bty_proto::ImageFormat::Raw).then_some(img.stored_size))
}

/// The kernel name of the whole disk that holds the file system mounted at
/// (or containing) `stick`: its `major:minor` from `<proc>/self/mountinfo`,
/// then `<sys>/dev/block/M:m`, whose parent is the disk when it is a
/// partition. `None` when the stick is not on a block device (a directory
/// on the root file system, in tests).
pub fn disk_of(proc: &Path, sys: &Path, stick: &Path) -> Option<String> {
    let stick = fs::canonicalize(stick).ok()?;
    let info = fs::read_to_string(proc.join("self/mountinfo")).ok()?;
    // The longest mount point that contains the stick; later lines win a
    // tie (a mount over another one at the same point).
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(majmin), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        let point = unescape(point);
        if stick.starts_with(&point) && best.as_ref().is_none_or(|(l, _)| point.len() >= *l) {
            best = Some((point.len(), majmin.to_string()));
        }
    }
    let (_, majmin) = best?;
    let dev = fs::canonicalize(sys.join("dev/block").join(&majmin)).ok()?;
    let dev = if dev.join("partition").exists() {
        dev.parent()?.to_path_buf()
    } else {
        dev
    };
    // Only a real block device counts (a tmpfs or overlay has 0:N and no
    // sysfs entry, handled above by canonicalize failing).
    attr(dev.join("size"))?;
    Some(dev.file_name()?.to_string_lossy().into_owned())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(oct) = b.get(i + 1..i + 4) {
                if let Some(v) = std::str::from_utf8(oct)
                    .ok()
                    .and_then(|o| u8::from_str_radix(o, 8).ok())
                {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(file: &str) -> StickImage {
        StickImage {
            name: "x".into(),
            file: file.into(),
            format: bty_proto::ImageFormat::Raw,
            stored_size: 5,
            stored_sha256: "a".repeat(64),
            size: None,
            sha256: None,
        }
    }

    #[test]
    fn image_paths_stay_inside_the_stick() {
        let s = Path::new("/stick");
        assert_eq!(
            file_of(s, &img("images/a.img")).unwrap(),
            Path::new("/stick/images/a.img")
        );
        for bad in ["../etc/shadow", "/etc/shadow", "images/../../x", "", "./a"] {
            assert!(file_of(s, &img(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn needed_bytes_is_the_decoded_size_or_a_raw_file_size() {
        let mut i = img("a");
        assert_eq!(needed_bytes(&i), Some(5));
        i.format = bty_proto::ImageFormat::Zst;
        assert_eq!(needed_bytes(&i), None);
        i.size = Some(9);
        assert_eq!(needed_bytes(&i), Some(9));
    }

    #[test]
    fn newer_manifests_and_unknown_auto_images_are_refused() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join(MANIFEST_FILE),
            r#"{"version":2,"something":"new"}"#,
        )
        .unwrap();
        let e = format!("{:#}", load(t.path()).unwrap_err());
        assert!(e.contains("is version 2, this bty reads version 1"), "{e}");
        fs::write(
            t.path().join(MANIFEST_FILE),
            r#"{"version":1,"built_by":"t","images":[],
                "auto":{"image":"gone","disk_serial":"S","after":"reboot"}}"#,
        )
        .unwrap();
        let e = format!("{:#}", load(t.path()).unwrap_err());
        assert!(e.contains("\"gone\", which is not on the stick"), "{e}");
    }

    #[test]
    fn the_disk_of_a_partition_mount_is_its_parent() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let stick = root.join("mnt/my stick");
        fs::create_dir_all(&stick).unwrap();
        fs::create_dir_all(root.join("proc/self")).unwrap();
        let point = root.join("mnt/my stick").display().to_string();
        fs::write(
            root.join("proc/self/mountinfo"),
            format!(
                "22 1 0:21 / / rw - rootfs rootfs rw\n\
                 40 22 8:17 / {} ro - ext4 /dev/sdb1 ro\n",
                point.replace(' ', "\\040")
            ),
        )
        .unwrap();
        let sdb = root.join("sys/devices/pci/usb/block/sdb");
        fs::create_dir_all(sdb.join("sdb1")).unwrap();
        fs::write(sdb.join("size"), "100\n").unwrap();
        fs::write(sdb.join("sdb1/size"), "50\n").unwrap();
        fs::write(sdb.join("sdb1/partition"), "1\n").unwrap();
        fs::create_dir_all(root.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(sdb.join("sdb1"), root.join("sys/dev/block/8:17")).unwrap();
        assert_eq!(
            disk_of(&root.join("proc"), &root.join("sys"), &stick).as_deref(),
            Some("sdb")
        );
        // On the root file system (no sysfs entry for 0:21): no disk.
        assert_eq!(
            disk_of(&root.join("proc"), &root.join("sys"), root).as_deref(),
            None
        );
    }
}
