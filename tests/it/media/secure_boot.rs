//! The Secure Boot bootfiles in the media: Debian's signed shim and GRUB
//! network image out of their real .debs, with their versions, shown by
//! `media status`, required by `--from`, and refused when unsigned.

use std::path::Path;
use std::process::Command;

use super::{debs, find_deb, json, lab_env, media_a, sha256, SIGNED};
use crate::util::{bin, fails_with, ok, stdout, TestDir};

/// `dpkg-deb -f DEB Version`.
fn deb_version(deb: &Path) -> String {
    let o = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg("Version")
        .output()
        .unwrap();
    ok(&o);
    stdout(&o).trim().to_string()
}

/// One file out of a .deb by dpkg-deb (not by bty-lab's reader).
fn dpkg_extract(deb: &Path, path: &str, into: &Path) -> std::path::PathBuf {
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .unwrap();
    ok(&o);
    into.join(path)
}

fn sbverify_list(p: &Path) -> String {
    let o = Command::new("sbverify")
        .arg("--list")
        .arg(p)
        .output()
        .expect("sbverify (sbsigntool, scripts/setup.sh)");
    stdout(&o)
}

#[test]
fn shim_and_grub_are_in_the_media_with_their_versions() {
    let Some(a) = media_a() else { return };
    let from = debs().unwrap();
    let t = TestDir::new();
    let m = json(&a.out.join("media.json"));
    let sb = m["secure_boot"]
        .as_array()
        .expect("secure_boot in media.json");
    for (name, prefix, path) in [
        (
            "shimx64.efi",
            "shim-signed_",
            "usr/lib/shim/shimx64.efi.signed",
        ),
        (
            "grubx64.efi",
            "grub-efi-amd64-signed_",
            "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        ),
    ] {
        let deb = find_deb(from, prefix);
        let placed = a.out.join(name);
        // The very bytes dpkg-deb extracts from the package.
        let want = dpkg_extract(&deb, path, &t.path().join(prefix));
        assert_eq!(sha256(&placed), sha256(&want), "{name}");
        assert_eq!(m["files"][name]["sha256"], sha256(&placed), "{name}");
        assert_eq!(
            m["files"][name]["size"],
            std::fs::metadata(&placed).unwrap().len(),
            "{name}"
        );
        let o = sb
            .iter()
            .find(|o| o["file"] == name)
            .unwrap_or_else(|| panic!("{name} not in secure_boot: {m:#}"));
        assert_eq!(o["package"], prefix.trim_end_matches('_'), "{o}");
        assert_eq!(o["version"], deb_version(&deb), "{o}");
        assert_eq!(o["path"], path, "{o}");
    }
    // Signed, by whom the chain expects (sbsigntool reads the signature).
    let shim = sbverify_list(&a.out.join("shimx64.efi"));
    assert!(
        shim.contains("Microsoft Corporation UEFI CA 2011"),
        "{shim}"
    );
    let grub = sbverify_list(&a.out.join("grubx64.efi"));
    assert!(grub.contains("Debian Secure Boot Signer"), "{grub}");
    assert!(
        a.stderr
            .contains("Secure Boot bootfiles: shimx64.efi (shim-signed "),
        "{}",
        a.stderr
    );
}

#[test]
fn media_status_shows_shim_and_grub() {
    let Some(a) = media_a() else { return };
    let m = json(&a.out.join("media.json"));
    let version = |file: &str| {
        m["secure_boot"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["file"] == file)
            .unwrap()["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let args = [
        "media",
        "status",
        "--cache",
        a.cache.to_str().unwrap(),
        "--boot-dir",
        a.out.to_str().unwrap(),
    ];
    let mut j = args.to_vec();
    j.push("--json");
    let o = lab_env(&bin(), &j, &[]);
    ok(&o);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for place in ["cache", "boot_dir"] {
        let files = s[place]["secure_boot"].as_array().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, SIGNED, "{place}: {s:#}");
        for f in files {
            let name = f["name"].as_str().unwrap();
            let p = a.out.join(name);
            assert_eq!(f["sha256"], sha256(&p), "{place} {name}");
            assert_eq!(f["size"], std::fs::metadata(&p).unwrap().len());
            assert_eq!(f["version"], version(name), "{place} {name}");
        }
        assert_eq!(files[0]["package"], "shim-signed");
        assert_eq!(files[1]["package"], "grub-efi-amd64-signed");
    }
    // The text form: name, sha256, package and version on one line.
    let o = lab_env(&bin(), &args, &[]);
    ok(&o);
    let text = stdout(&o);
    for (name, package) in SIGNED.iter().zip(["shim-signed", "grub-efi-amd64-signed"]) {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{text}"));
        assert!(
            line.contains(&sha256(&a.out.join(name)))
                && line.contains(&format!("{package} {}", version(name)))
                && (line.contains(" KiB") || line.contains(" MiB")),
            "{line}"
        );
    }
    // A boot dir with the files but no media.json: hashed, package unknown.
    let t = TestDir::new();
    std::fs::copy(a.out.join("shimx64.efi"), t.path().join("shimx64.efi")).unwrap();
    let o = lab_env(
        &bin(),
        &[
            "media",
            "status",
            "--json",
            "--cache",
            a.cache.to_str().unwrap(),
            "--boot-dir",
            t.path().to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let files = s["boot_dir"]["secure_boot"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{s:#}");
    assert_eq!(files[0]["sha256"], sha256(&a.out.join("shimx64.efi")));
    assert_eq!(files[0]["package"], "");
}

/// A --from directory: symlinks to the test debs, but for `skip`.
fn debs_without(t: &TestDir, skip: &[&str]) -> std::path::PathBuf {
    let dir = t.path().join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(debs().unwrap()).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if skip.iter().any(|s| n.starts_with(s)) {
            continue;
        }
        std::os::unix::fs::symlink(std::fs::canonicalize(&p).unwrap(), dir.join(&n)).unwrap();
    }
    dir
}

fn build_from(t: &TestDir, from: &Path) -> std::process::Output {
    lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            from.to_str().unwrap(),
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            t.path().join("out").to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn from_without_the_signed_debs_names_both_and_places_nothing() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    let dir = debs_without(&t, &["shim-signed_", "grub-efi-amd64-signed_"]);
    let o = build_from(&t, &dir);
    fails_with(&o, "no shim-signed_*.deb");
    fails_with(&o, "no grub-efi-amd64-signed_*.deb");
    fails_with(&o, "bty-lab media download");
    assert!(!t.path().join("out").exists());
}

#[test]
fn an_unsigned_shim_is_refused() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    let dir = debs_without(&t, &["shim-signed_"]);
    // A shim-signed package (built by dpkg-deb) whose shimx64.efi.signed is
    // Debian's unsigned ipxe.efi: a real x86-64 PE image, no signature.
    let root = t.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/shim")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: shim-signed\nVersion: 1.0-unsigned\nArchitecture: amd64\n\
         Maintainer: test <t@example.invalid>\nDescription: unsigned shim\n",
    )
    .unwrap();
    std::fs::copy(
        "/usr/lib/ipxe/ipxe.efi",
        root.join("usr/lib/shim/shimx64.efi.signed"),
    )
    .expect("/usr/lib/ipxe/ipxe.efi (package ipxe, scripts/setup.sh)");
    let deb = dir.join("shim-signed_1.0-unsigned_amd64.deb");
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    ok(&o);
    let o = build_from(&t, &dir);
    fails_with(
        &o,
        "usr/lib/shim/shimx64.efi.signed is not a signed UEFI binary",
    );
    fails_with(&o, "unsigned");
    fails_with(&o, "shim-signed_1.0-unsigned_amd64.deb");
    assert!(!t.path().join("out").exists());
}
