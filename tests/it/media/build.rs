//! `media build`: same bytes twice, the cache, and failures that place
//! nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    debs, find_deb, json, lab_env, media_a, scratch, sha256, INITRD, IPXE, KERNEL, SIGNED,
};
use crate::util::{bin, fails_with, ok, stderr, stdout, TestDir};

#[test]
fn two_builds_give_the_same_bytes_and_from_needs_no_apt() {
    let Some(a) = media_a() else { return };
    let from = debs().unwrap();
    // The second build with a PATH that has no apt-get (nor anything else):
    // --from needs no network and no apt.
    let empty = TestDir::new();
    let d = scratch("repro");
    let out = d.join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            from.to_str().unwrap(),
            "--cache",
            d.join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    ok(&o);
    for f in [KERNEL, INITRD, "media.json"]
        .iter()
        .chain(IPXE.iter())
        .chain(SIGNED.iter())
    {
        assert_eq!(
            sha256(&a.out.join(f)),
            sha256(&out.join(f)),
            "{f} differs between two builds"
        );
    }
    // What media.json says is what is there.
    let m = json(&out.join("media.json"));
    for f in [KERNEL, INITRD].iter().chain(IPXE.iter()) {
        assert_eq!(m["files"][f]["sha256"], sha256(&out.join(f)), "{f}");
        assert_eq!(
            m["files"][f]["size"],
            std::fs::metadata(out.join(f)).unwrap().len(),
            "{f}"
        );
    }
    assert_eq!(m["info"]["agent_sha256"], sha256(&bin()));
    assert_eq!(m["info"]["agent_version"], env!("CARGO_PKG_VERSION"));
    // gzip header: deflate, no FNAME/FCOMMENT flags, MTIME 0.
    let head = std::fs::read(out.join(INITRD)).unwrap()[..10].to_vec();
    assert_eq!(&head[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "{head:02x?}");
}

#[test]
fn a_second_build_is_a_cache_hit_and_force_rebuilds() {
    let Some(a) = media_a() else { return };
    assert!(a.stderr.contains("media: building for"), "{}", a.stderr);
    let args = ["media", "build", "--cache", a.cache.to_str().unwrap()];
    let t = Instant::now();
    // No --from and a PATH without apt: a cache hit needs neither.
    let empty = TestDir::new();
    let o = lab_env(&bin(), &args, &[("PATH", empty.path().to_str().unwrap())]);
    ok(&o);
    assert!(
        stderr(&o).contains("using the cached media"),
        "{}",
        stderr(&o)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "cache hit took {:?}",
        t.elapsed()
    );
    let dir = PathBuf::from(stdout(&o).trim());
    assert_eq!(sha256(&dir.join(INITRD)), sha256(&a.out.join(INITRD)));
    // --force builds again (and without --from or apt, that fails clearly).
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = lab_env(&bin(), &forced, &[("PATH", empty.path().to_str().unwrap())]);
    fails_with(&o, "no apt-get");
    assert!(
        dir.join(INITRD).is_file(),
        "a failed rebuild must leave the cached media alone"
    );
}

#[test]
fn no_apt_and_no_from_names_both_ways_out_and_places_nothing() {
    let t = TestDir::new();
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("PATH", t.path().to_str().unwrap())],
    );
    fails_with(&o, "no apt-get");
    let err = stderr(&o);
    assert!(
        err.contains("--from DIR") && err.contains("bty-lab media download"),
        "{err}"
    );
    assert!(!out.exists(), "{} was created", out.display());
}

/// A copy of the debs dir with the kernel .deb replaced by `damage` of it.
fn damaged_debs(t: &TestDir, damage: impl Fn(&mut Vec<u8>)) -> (PathBuf, String) {
    let from = debs().unwrap();
    let dir = t.path().join("debs");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::symlink(
            std::fs::canonicalize(&p).unwrap(),
            dir.join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    let k = find_deb(&dir, "linux-image-");
    let name = k.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&k).unwrap();
    std::fs::remove_file(&k).unwrap();
    damage(&mut bytes);
    std::fs::write(&k, bytes).unwrap();
    (dir, name)
}

fn assert_nothing_placed(t: &TestDir, out: &Path) {
    assert!(
        !out.exists(),
        "{} exists after a failed build",
        out.display()
    );
    let media = t.path().join("cache/media");
    let left: Vec<_> = std::fs::read_dir(&media)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", media.display());
}

#[test]
fn a_truncated_deb_is_named_and_nothing_is_placed() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    let (dir, name) = damaged_debs(&t, |b| b.truncate(b.len() / 2));
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            dir.to_str().unwrap(),
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&o, &name);
    fails_with(&o, "data.tar.xz is truncated");
    assert_nothing_placed(&t, &out);
}

#[test]
fn a_corrupted_deb_is_named_and_nothing_is_placed() {
    if debs().is_none() {
        return;
    }
    let t = TestDir::new();
    // Scribble over 64 KiB in the middle of the compressed data.
    let (dir, name) = damaged_debs(&t, |b| {
        let mid = b.len() / 2;
        for (i, x) in b[mid..mid + 65536].iter_mut().enumerate() {
            *x ^= (i as u8).wrapping_mul(31) | 1;
        }
    });
    let out = t.path().join("out");
    let o = lab_env(
        &bin(),
        &[
            "media",
            "build",
            "--from",
            dir.to_str().unwrap(),
            "--cache",
            t.path().join("cache").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    fails_with(&o, &name);
    fails_with(&o, "data.tar.xz is corrupt");
    assert_nothing_placed(&t, &out);
}
