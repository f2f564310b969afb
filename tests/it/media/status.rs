//! `media status`: which media is where, and whether it is this binary's.

use std::path::Path;

use super::{lab_env, media_a, media_other, sha256, INITRD};
use crate::util::{bin, ok, stdout, TestDir};

fn status(exe: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["media", "status", "--json"];
    a.extend_from_slice(args);
    let o = lab_env(exe, &a, &[]);
    ok(&o);
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn status_says_match_and_mismatch() {
    let (Some(a), Some(b)) = (media_a(), media_other()) else {
        return;
    };
    let cache = a.cache.to_str().unwrap();
    // Our own media, in the cache, in a boot dir and as a bare initrd.
    let s = status(
        &bin(),
        &["--cache", cache, "--boot-dir", a.out.to_str().unwrap()],
    );
    assert_eq!(s["binary"]["sha256"], sha256(&bin()));
    assert_eq!(s["cache"]["matches"], true, "{s:#}");
    assert_eq!(s["boot_dir"]["matches"], true, "{s:#}");
    assert_eq!(
        s["boot_dir"]["info"]["agent_version"],
        env!("CARGO_PKG_VERSION")
    );
    // The other binary's initrd: same version, another build.
    let s = status(
        &bin(),
        &[
            "--cache",
            cache,
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
    );
    assert_eq!(s["initrd"]["matches"], false, "{s:#}");
    assert_eq!(s["initrd"]["info"]["agent_sha256"], sha256(&b.exe));
    assert!(
        s["initrd"]["summary"]
            .as_str()
            .unwrap()
            .contains("another build"),
        "{s:#}"
    );
    // ... which is the other binary's own.
    let s = status(
        &b.exe,
        &[
            "--cache",
            b.cache.to_str().unwrap(),
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
    );
    assert_eq!(
        (&s["cache"]["matches"], &s["initrd"]["matches"]),
        (&true.into(), &true.into()),
        "{s:#}"
    );
    // No media for this binary in the other's cache; a foreign file.
    let t = TestDir::new();
    let junk = t.path().join("junk.initrd");
    std::fs::write(&junk, b"\x1f\x8b not really gzip").unwrap();
    let s = status(
        &bin(),
        &[
            "--cache",
            b.cache.to_str().unwrap(),
            "--initrd",
            junk.to_str().unwrap(),
        ],
    );
    assert_eq!(s["cache"]["info"], serde_json::Value::Null, "{s:#}");
    assert_eq!(s["initrd"]["matches"], false);
    // The text form says the same.
    let o = lab_env(
        &bin(),
        &[
            "media",
            "status",
            "--cache",
            cache,
            "--initrd",
            b.out.join(INITRD).to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("matches this binary") && text.contains("another build than this binary"),
        "{text}"
    );
}
