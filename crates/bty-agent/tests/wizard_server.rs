//! `bty wizard` with a server key: against a REAL bty-web and withcache
//! (bty-testkit, on 127.0.0.1) with an image added through bty-web and
//! measured by withcache, the wizard offers the server's catalog, flashes
//! a server image onto a loop device through withcache, and reports every
//! flash so a registered machine's history shows it. Needs root and
//! losetup for the loop devices; skips without.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bty_testkit::cache::Cache;
use bty_testkit::poll::until;
use bty_testkit::web::{Web, WebClient};
use bty_testkit::Origin;
use common::loops::{loop_sized, Loop};
use common::stick::{text, untouched, wizard_with, Stick};
use common::*;
use serde_json::{json, Value};

const PW: &str = "admin-password";
const TOKEN: &str = "bty-web-to-withcache-0123456789abcdef";
const WC_PW: &str = "withcache-password";
/// The MAC the wizard says the machine has (`--macs`).
const MAC: &str = "52:54:00:5e:00:01";
/// How long a background step (a registration, a download) may take.
const WAIT: Duration = Duration::from_secs(30);

/// bty-web with withcache behind it, an origin, and a stick key.
struct Lab {
    web: Web,
    wc: Cache,
    _origin: Origin,
    admin: WebClient,
    key: String,
}

/// A lab whose catalog has `debian-12` (the zstd of `decoded`), added
/// through bty-web's API and measured by withcache, plus the static
/// `extra_catalog` TOML (entries that are measured by declaration).
async fn lab(decoded: &[u8], origin_files: Vec<(&str, Vec<u8>)>, extra_catalog: &str) -> Lab {
    let stored = compress("img.zst", decoded);
    let mut files: Vec<(String, Vec<u8>)> = vec![("images/debian-12.img.zst".to_string(), stored)];
    files.extend(origin_files.into_iter().map(|(p, b)| (p.to_string(), b)));
    let origin = Origin::files(files);
    let wc = Cache::start(|o| {
        o.admin_password = Some(WC_PW.into());
        o.api_token = Some(bty_auth_token());
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("catalog.toml"),
        format!(
            "version = 1\n{}",
            extra_catalog.replace("ORIGIN", &origin.base())
        ),
    )
    .unwrap();
    let web = Web::start_in(
        dir,
        &format!(
            "[admin]\npassword = \"{PW}\"\n[withcache]\nurl = \"{}\"\nrefresh_secs = 1\ntoken = \"{TOKEN}\"\n",
            wc.base
        ),
    )
    .await;
    let admin = web.admin("bty-lab", PW);
    let (st, v) = admin
        .post_json(
            "/api/images",
            &json!({"name": "debian-12", "url": origin.url("/images/debian-12.img.zst")}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = admin
        .post_json("/api/sticks", &json!({"label": "wizard test"}))
        .await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let lab = Lab {
        web,
        wc,
        _origin: origin,
        admin,
        key,
    };
    // Measured once withcache has it: then the stick catalog lists it.
    wait_listed(&lab, "debian-12").await;
    lab
}

fn bty_auth_token() -> bty_auth::ServiceToken {
    bty_auth::ServiceToken::new(TOKEN)
}

impl Lab {
    /// Register [`MAC`] in bty-web (nothing armed: boots its disk).
    async fn register(&self) {
        let (st, v) = self
            .admin
            .put_machine(MAC, &json!({"boot_mode": "ipxe-exit"}))
            .await;
        assert!(st == 200 || st == 201, "{st} {v}");
    }

    /// The machine's cycles, newest first.
    async fn cycles(&self) -> Vec<Value> {
        self.admin.cycles(MAC).await
    }
}

/// A stick naming `server` with `key`, holding the stick image `rescue`.
fn stick(dir: &Path, server: &str, key: &str) -> Stick {
    let mut s = Stick::new(&dir.join("stick"));
    s.server = Some(server.to_string());
    s.key = Some(key.to_string());
    s.add("rescue", "img", &image(1, 21));
    s
}

/// The wizard on `stick` with a lease file present (no network wait),
/// reporting [`MAC`], run off the async runtime so the servers answer.
async fn run(stick: &Stick, disk: &Loop, input: &str) -> Output {
    let lease = stick.root.parent().unwrap().join("lease.env");
    // A lease whose values are all unusable: the manifest's server only.
    std::fs::write(&lease, "siaddr=0.0.0.0\ntftp=a b\n").unwrap();
    let (root, dev, input) = (stick.root.clone(), disk.0.clone(), input.to_string());
    tokio::task::spawn_blocking(move || {
        let l = Loop(dev);
        let o = wizard_with(
            &root,
            &[(&l, "SER")],
            &input,
            &["--macs", MAC, "--dhcp-env", lease.to_str().unwrap()],
        );
        // The test's own Loop detaches the device.
        std::mem::forget(l);
        o
    })
    .await
    .unwrap()
}

/// The device's first `len` bytes.
fn head(l: &Loop, len: usize) -> Vec<u8> {
    let mut v = std::fs::read(&l.0).unwrap();
    v.truncate(len);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_image_is_offered_flashed_and_recorded() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let img = image(3, 22);
    let lab = lab(&img, vec![], "").await;
    lab.register().await;
    let s = stick(t.path(), &lab.web.base.clone(), &lab.key);
    // Image 2 (the server's), disk 1, the serial, Enter to "reboot".
    let o = run(&s, &disk, "2\n1\nSER\n\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let stored = compress("img.zst", &img);
    assert!(
        out.contains(&format!(
            "2) debian-12  (server, {} .img.zst)",
            human(stored.len() as u64)
        )),
        "{out}"
    );
    assert!(out.contains("recording this flash in bty-web"), "{out}");
    assert!(
        out.contains(&format!("read-back sha256 {}", sha(&img))),
        "{out}"
    );
    assert!(head(&disk, img.len()) == img, "the disk is not the image");
    // The machine's history: a done stick cycle with the read-back sha256.
    let c = until(WAIT, "the stick cycle to be done", || async {
        lab.cycles()
            .await
            .into_iter()
            .find(|c| c["via"] == "stick" && c["state"] == "done")
    })
    .await;
    assert_eq!(c["disk_sha256"], sha(&img), "{c}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unattended_takes_a_server_image_the_stick_does_not_have() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let img = image(2, 23);
    let lab = lab(&img, vec![], "").await;
    let mut s = stick(t.path(), &lab.web.base.clone(), &lab.key);
    s.auto = Some(json!({"image": "debian-12", "disk_serial": "SER", "after": "reboot"}));
    s.write();
    let o = run(&s, &disk, "").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "this machine is not registered in bty-web at {}: the flash is not recorded there",
            lab.web.base.clone()
        )),
        "{out}"
    );
    assert!(head(&disk, img.len()) == img, "the disk is not the image");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unregistered_machine_is_flashed_and_not_recorded() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let lab = lab(&image(1, 24), vec![], "").await;
    let s = stick(t.path(), &lab.web.base.clone(), &lab.key);
    let o = run(&s, &disk, "1\n1\nSER\n\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "this machine is not registered in bty-web at {}: the flash is not recorded there",
            lab.web.base.clone()
        )),
        "{out}"
    );
    assert!(out.contains("verified:"), "{out}");
    let machines = lab.admin.machines().await;
    assert!(
        !machines.iter().any(|m| m["mac"] == MAC),
        "a stick flash registered the machine: {machines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_shows_the_refusal_and_stick_images_still_flash() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let lab = lab(&image(1, 25), vec![], "").await;
    lab.register().await;
    let s = stick(
        t.path(),
        &lab.web.base.clone(),
        "btystick_not-this-servers-key",
    );
    let o = run(&s, &disk, "1\n1\nSER\n\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{} refused this stick's key: HTTP 401",
            lab.web.base.clone()
        )),
        "{out}"
    );
    assert!(out.contains("stick images only"), "{out}");
    assert!(!out.contains("debian-12"), "{out}");
    assert!(out.contains("verified:"), "{out}");
    assert!(
        lab.cycles().await.is_empty(),
        "a refused key recorded a flash"
    );

    // A key the admin revoked: the server says so, the stick still works.
    let (st, v) = lab.admin.get_json("/api/sticks").await;
    assert_eq!(st, 200, "{v}");
    let id = v[0]["id"].as_i64().unwrap();
    let r = lab
        .admin
        .delete(&format!("/api/sticks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let s = stick(&t.path().join("revoked"), &lab.web.base.clone(), &lab.key);
    let o = run(&s, &disk, "1\n1\nSER\n\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("key (") && out.contains("was revoked on"),
        "{out}"
    );
    assert!(out.contains("verified:"), "{out}");
    assert!(
        lab.cycles().await.is_empty(),
        "a revoked key recorded a flash"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_server_down_a_stick_image_still_flashes() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let s = stick(t.path(), &dead_url, "btystick_whatever");
    let o = run(&s, &disk, "1\n1\nSER\n\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("no bty-web reachable ({dead_url}")),
        "{out}"
    );
    assert!(out.contains("verified:"), "{out}");
    assert!(!untouched(&disk));
}

/// The catalog says one sha256, the origin serves other bytes of the same
/// length: the wizard must not call that a flash, and bty-web hears so.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_server_image_fails_and_is_reported_failed() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 16 << 20) else {
        return;
    };
    let good = image(1, 26);
    let mut bad = good.clone();
    bad[(1 << 20) + 5] ^= 0xff;
    let lab = lab(
        &image(1, 27),
        vec![("images/evil.img", bad)],
        &format!(
            "[[images]]\nname = \"evil\"\nsrc = \"ORIGIN/images/evil.img\"\nsha256 = \"{}\"\nsize = {}\n",
            sha(&good),
            good.len()
        ),
    )
    .await;
    lab.register().await;
    wait_listed(&lab, "evil").await;
    let s = stick(t.path(), &lab.web.base.clone(), &lab.key);
    let o = run(&s, &disk, "3\n1\nSER\nq\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("3) evil  (server, "), "{out}");
    assert!(out.contains("FLASH FAILED"), "{out}");
    assert!(!out.contains("verified:"), "{out}");
    let c = until(WAIT, "the stick cycle to fail", || async {
        lab.cycles()
            .await
            .into_iter()
            .find(|c| c["via"] == "stick" && c["state"] == "failed")
    })
    .await;
    assert!(c["disk_sha256"].is_null(), "{c}");
    // Whatever landed, the disk does not boot: its head is zeroed or
    // untouched, never the image's.
    assert!(
        head(&disk, 512) != good[..512],
        "the tampered image's head was written"
    );
}

/// [`bty_agent`]'s way of writing sizes, as the menu shows them.
fn human(n: u64) -> String {
    bty_agent::wizard::disks::human(n)
}

/// A compressed server image whose container says it decodes to more
/// than the disk holds: the wizard asks the container (a Range probe of
/// the zstd header, as the network agent does before writing) and does
/// not offer the disk; nothing is written and nothing is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_image_too_big_for_the_disk_is_not_offered() {
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = loop_sized(t.path(), "disk", 4 << 20) else {
        return;
    };
    // zstd's bulk API writes the decoded size into the frame header.
    let big = zstd::bulk::compress(&image(8, 28), 3).unwrap();
    let lab = lab(
        &image(1, 29),
        vec![("images/big.img.zst", big.clone())],
        &format!(
            "[[images]]\nname = \"big\"\nsrc = \"ORIGIN/images/big.img.zst\"\nsha256 = \"{}\"\nsize = {}\n",
            sha(&big),
            big.len()
        ),
    )
    .await;
    lab.register().await;
    wait_listed(&lab, "big").await;
    // Cached, withcache answers the Range probe of the zstd header (an
    // image still downloading is sized only as it streams, for the
    // network agent as for the wizard).
    lab.wc.admin().download("big").await;
    let s = stick(t.path(), &lab.web.base.clone(), &lab.key);
    // The catalog is in name order: big is 2 (after the stick's rescue).
    let o = run(&s, &disk, "2\nq\n").await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("2) big  (server, "), "{out}");
    assert!(
        out.contains(&format!(
            "-) {} 4.0 MiB: too small for this image (needs 8.0 MiB), not offered",
            disk.0
        )),
        "{out}"
    );
    assert!(
        out.contains("no disk on this machine can take this image"),
        "{out}"
    );
    assert!(untouched(&disk), "a disk too small was written");
    assert!(
        lab.cycles().await.is_empty(),
        "a flash that never started was recorded"
    );
}

/// Wait until the stick catalog lists `name` (bty-web learns withcache's
/// measurement in the background).
async fn wait_listed(lab: &Lab, name: &str) {
    let base = lab.web.base.clone();
    let key = lab.key.clone();
    until(WAIT, &format!("{name} in the stick catalog"), || {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let v: Value = reqwest::Client::new()
                .get(format!("{base}/stick/catalog"))
                .bearer_auth(key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["images"]
                .as_array()?
                .iter()
                .any(|i| i["name"] == name)
                .then_some(())
        }
    })
    .await;
}
