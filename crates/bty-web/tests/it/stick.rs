//! The USB stick's side of bty-web on a real server: stick keys (minted,
//! listed, revoked), the key-gated `/stick/catalog` and `/stick/flash`,
//! and stick cycles reported through `/pxe/{mac}/progress|done` beside
//! the PXE cycles they never disturb.

use std::net::{IpAddr, Ipv4Addr};

use bty_proto::stick::{FlashStarted, ServerCatalog};
use bty_proto::{BootMode, ErrorBody};
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use serde_json::{json, Value};

const OTHER: &str = "52:54:00:99:99:01";

/// Another host on the LAN.
fn elsewhere(s: &Web) -> WebClient {
    WebClient(s.0.from_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
}

/// Mint a key through the API (asserts 201 and the answer's shape).
async fn mint(c: &WebClient, label: &str) -> (i64, String) {
    let (st, v) = c.post_json("/api/sticks", &json!({"label": label})).await;
    assert_eq!(st, 201, "{v}");
    let fields: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["created_at", "id", "key", "label"], "{v}");
    assert_eq!(v["label"], label);
    let key = v["key"].as_str().unwrap().to_string();
    (v["id"].as_i64().unwrap(), key)
}

/// A stick request with `key` (None: no Authorization header).
async fn stick_get(c: &WebClient, key: Option<&str>) -> (u16, Value) {
    let mut r = c.get("/stick/catalog");
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.fetch().await;
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

async fn stick_flash(c: &WebClient, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = c.post("/stick/flash").json(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.fetch().await;
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    if st == 200 {
        contract::<FlashStarted>("a flash start's answer", &v);
    } else {
        contract::<ErrorBody>("an error", &v);
    }
    (st, v)
}

fn start_body(macs: &[&str]) -> Value {
    json!({"macs": macs, "image": "debian-12", "source": "server", "format": "img.zst",
           "sha256": SHA, "size": 1234, "target_serial": "BTYTEST"})
}

fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

fn by_id(cycles: &[Value], id: &str) -> Value {
    cycles
        .iter()
        .find(|c| c["id"].as_i64() == id.parse().ok())
        .unwrap_or_else(|| panic!("no cycle {id} in {cycles:?}"))
        .clone()
}

#[tokio::test]
async fn keys_are_shown_once_stored_as_digests_and_need_the_admin() {
    let s = Web::start("[admin]\npassword = \"pw\"\n").await;
    let admin = s.admin("bty-lab", "pw");
    // No login: 401, for each of the three.
    let (st, _) = s.post_json("/api/sticks", &json!({"label": "x"})).await;
    assert_eq!(st, 401);
    assert_eq!(s.get_json("/api/sticks").await.0, 401);
    assert_eq!(s.delete("/api/sticks/1").fetch().await.status(), 401);
    // Logged in but from another site: 403, nothing minted.
    let r = admin
        .post("/api/sticks")
        .header("origin", "http://evil.example")
        .json(&json!({"label": "x"}))
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(admin.get_json("/api/sticks").await.1, json!([]));
    // Bad labels: 400 naming the field.
    for bad in [
        json!({}),
        json!({"label": ""}),
        json!({"label": "   "}),
        json!({"label": "a\nb"}),
        json!({"label": "x".repeat(81)}),
    ] {
        let (st, v) = admin.post_json("/api/sticks", &bad).await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(error(&v).contains("label"), "{v}");
    }
    let (id, key) = mint(&admin, "lab stick ü").await;
    assert!(key.starts_with(bty_proto::stick::KEY_PREFIX), "{key}");
    assert_eq!(key.len(), 9 + 43);
    let (_, key2) = mint(&admin, "second").await;
    assert_ne!(key, key2);
    let (st, list) = admin.get_json("/api/sticks").await;
    assert_eq!(st, 200);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["label"], "lab stick ü");
    assert!(list[0]["revoked_at"].is_null() && list[0]["last_used_at"].is_null());
    let text = list.to_string();
    assert!(
        !text.contains("btystick_") && !text.contains(&key[9..]),
        "{text}"
    );
    // Revoke: 204, unknown 404, twice keeps the first date.
    assert_eq!(admin.delete("/api/sticks/999").fetch().await.status(), 404);
    assert_eq!(admin.delete("/api/sticks/abc").fetch().await.status(), 404);
    let r = admin.delete(&format!("/api/sticks/{id}")).fetch().await;
    assert_eq!(r.status(), 204);
    let when = admin.get_json("/api/sticks").await.1[0]["revoked_at"].clone();
    assert!(when.is_string(), "{when}");
    let r = admin.delete(&format!("/api/sticks/{id}")).fetch().await;
    assert_eq!(r.status(), 204);
    assert_eq!(admin.get_json("/api/sticks").await.1[0]["revoked_at"], when);
    let (_, ev) = admin.get_json("/api/events?kind=stick.minted").await;
    assert_eq!(ev["events"].as_array().unwrap().len(), 2, "{ev}");
    // No file of the state dir holds a key (the database has its sha256).
    let dir = s.stop().await;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for k in [&key, &key2] {
                assert!(!text.contains(&k[9..]), "{} holds a key", p.display());
            }
        }
    }
    let db = crate::store_in(dir.path());
    let digests: Vec<String> = db
        .query_map("SELECT key_sha256 FROM sticks ORDER BY id", (), |r| {
            r.get(0)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    use sha2::Digest;
    assert_eq!(
        digests[0],
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    );
}

#[tokio::test]
async fn the_catalog_needs_a_live_key_and_lists_measured_images_as_plans_do() {
    let s = Web::start("").await;
    let (id, key) = mint(&s, "catalog").await;
    let (st, v) = stick_get(&s, None).await;
    assert_eq!(st, 401, "{v}");
    assert!(error(&v).contains("bty-lab usb build --server URL"), "{v}");
    let (st, v) = stick_get(
        &s,
        Some("btystick_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert!(error(&v).contains("not known"), "{v}");
    // The admin's password is no stick key.
    let r = s
        .get("/stick/catalog")
        .basic_auth("bty-lab", Some("x"))
        .fetch()
        .await;
    assert_eq!(r.status(), 401);
    assert!(s.get_json("/api/sticks").await.1[0]["last_used_at"].is_null());

    let (st, v) = stick_get(&s, Some(&key)).await;
    assert_eq!(st, 200, "{v}");
    let cat: ServerCatalog = contract("the stick catalog", &v);
    // alpine has no sha256 and size: not flashable, not listed.
    let names: Vec<&str> = cat.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["debian-12"]);
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let plan = s.plan(MAC).await;
    let img = &cat.images[0];
    assert_eq!(img.url, plan["image"]["url"].as_str().unwrap());
    assert_eq!(img.sha256, SHA);
    assert_eq!(img.size, 1234);
    assert_eq!(
        serde_json::to_value(img.format).unwrap(),
        plan["image"]["format"]
    );
    let list = s.get_json("/api/sticks").await.1;
    assert_eq!(list[0]["last_ip"], "127.0.0.1");
    assert!(list[0]["last_used_at"].is_string(), "{list}");

    // A browser (Origin or Sec-Fetch-*) gets 403 even with the key.
    for (h, val) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-mode", "cors"),
    ] {
        let r = s
            .get("/stick/catalog")
            .bearer_auth(&key)
            .header(h, val)
            .fetch()
            .await;
        assert_eq!(r.status(), 403, "{h}");
    }
    // A bad Host is refused like on the PXE routes.
    let r = s
        .get("/stick/catalog")
        .bearer_auth(&key)
        .header("host", "a b")
        .fetch()
        .await;
    assert_eq!(r.status(), 400);

    assert_eq!(
        s.delete(&format!("/api/sticks/{id}"))
            .fetch()
            .await
            .status(),
        204
    );
    let (st, v) = stick_get(&s, Some(&key)).await;
    assert_eq!(st, 401, "{v}");
    assert!(error(&v).contains("was revoked on 20"), "{v}");
    let (st, _) = stick_flash(&s, Some(&key), &start_body(&[MAC])).await;
    assert_eq!(st, 401);
    assert_eq!(s.cycles(MAC).await.len(), 1, "a revoked key starts nothing");
    s.stop().await;
}

#[tokio::test]
async fn a_flash_start_checks_its_fields_and_stores_nothing_for_strangers() {
    let s = Web::start("").await;
    let (_, key) = mint(&s, "start").await;
    // Without a key the body is not even read.
    let (st, _) = stick_flash(&s, None, &json!({"garbage": 1})).await;
    assert_eq!(st, 401);
    let (st, v) = stick_flash(&s, Some(&key), &json!({"garbage": 1})).await;
    assert_eq!(st, 400, "{v}");
    let mut cases = vec![];
    for (field, bad) in [
        ("macs", json!([])),
        ("macs", json!(vec![OTHER; 17])),
        ("image", json!("../etc/passwd")),
        ("image", json!("")),
        ("image", json!("x".repeat(129))),
        ("image", json!("a b")),
        ("size", json!(0)),
        ("size", json!(u64::MAX)),
        ("sha256", json!("abc")),
        ("sha256", json!(SHA.to_uppercase())),
        ("target_serial", json!("")),
        ("target_serial", json!("x".repeat(129))),
        ("target_serial", json!("a;reboot")),
    ] {
        let mut body = start_body(&[MAC]);
        body[field] = bad;
        cases.push((field, body));
    }
    for (field, body) in cases {
        let (st, v) = stick_flash(&s, Some(&key), &body).await;
        assert_eq!(st, 400, "{field}: {v}");
        assert!(error(&v).starts_with(field), "{field}: {v}");
    }
    let mut body = start_body(&[MAC]);
    body["macs"] = json!(["not-a-mac"]);
    assert_eq!(stick_flash(&s, Some(&key), &body).await.0, 400);

    // No registered MAC: 404 saying what to do; no machine, no event.
    // (A stick's own image names may start with `_` or `-`.)
    let mut body = start_body(&[MAC, OTHER]);
    body["image"] = json!("_scratch-1");
    body["source"] = json!("stick");
    let (st, v) = stick_flash(&s, Some(&key), &body).await;
    assert_eq!(st, 404, "{v}");
    assert!(
        error(&v)
            .contains("Register one of these MACs in bty-web to see stick flashes on its page"),
        "{v}"
    );
    assert!(s.machines().await.is_empty());
    assert!(s.events(MAC).await.is_empty() && s.events(OTHER).await.is_empty());
    assert_eq!(s.get_json(&format!("/api/machines/{MAC}")).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_stick_cycle_reports_like_a_plan_and_leaves_the_pxe_decision_alone() {
    let s = Web::start("").await;
    let (_, key) = mint(&s, "lab").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    // An open PXE cycle (offered) that the stick must not cancel.
    assert!(is_flash(&s.pxe(MAC).await));
    let pxe_cycle = s.machine(MAC).await["cycle"]["id"].to_string();

    // The first registered MAC among those sent is the machine.
    let mut body = start_body(&[OTHER, MAC]);
    body["source"] = json!("stick");
    body["image"] = json!("my-image");
    let (st, v) = stick_flash(&s, Some(&key), &body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["mac"], MAC);
    assert_eq!(
        v["report"]["done"],
        format!("{}/pxe/{MAC_HYP}/done", s.base)
    );
    assert_eq!(
        v["report"]["progress"],
        format!("{}/pxe/{MAC_HYP}/progress", s.base)
    );
    let stick_cycle = v["cycle"].as_str().unwrap().to_string();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert_eq!(s.get_json(&format!("/api/machines/{OTHER}")).await.0, 404);

    // The machine's current cycle is still the PXE one, still offered.
    let m = s.machine(MAC).await;
    assert_eq!(m["cycle"]["id"].to_string(), pxe_cycle);
    assert_eq!(m["cycle"]["state"], "offered");
    assert!(is_flash(&s.pxe(MAC).await), "the flash offer stands");

    // Reports: another address 403, the starting one 200.
    let (st, v) = elsewhere(&s).progress(MAC, &token, 100).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = elsewhere(&s).done(MAC, &token, true).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(s.progress(MAC, &token, 500).await.0, 200);
    let c = by_id(&s.cycles(MAC).await, &stick_cycle);
    assert_eq!(
        (c["state"].clone(), c["bytes_done"].clone()),
        (json!("flashing"), json!(500))
    );
    let (st, ack) = s.done(MAC, &token, true).await;
    assert_eq!(st, 200);
    assert_eq!(ack, json!({"recorded": true, "state": "done"}));
    let (st, ack) = s.done(MAC, &token, true).await;
    assert_eq!(
        (st, ack["recorded"].clone()),
        (200, json!(false)),
        "a replay changes nothing"
    );

    let hist = s.cycles(MAC).await;
    let c = by_id(&hist, &stick_cycle);
    assert_eq!(c["via"], "stick");
    assert_eq!(c["image_source"], "stick");
    assert_eq!(c["state"], "done");
    assert_eq!(c["ok"], true);
    assert_eq!(c["disk_sha256"], SHA);
    assert_eq!(c["duration_s"], 1.5);
    assert_eq!(c["image_name"], "my-image");
    assert_eq!(c["image_url"], "stick:my-image");
    assert_eq!(c["image_sha256"], SHA);
    assert_eq!(c["target_serial"], "BTYTEST");
    assert_eq!(c["boot_mode"], "usb-stick");
    assert_eq!(by_id(&hist, &pxe_cycle)["via"], "pxe");
    assert_eq!(by_id(&hist, &pxe_cycle)["state"], "offered");
    let evs = s.events(MAC).await;
    let started = evs
        .iter()
        .find(|e| e["kind"] == "stick.flash.started")
        .unwrap();
    let d = &started["details"];
    assert_eq!(
        (
            d["ip"].clone(),
            d["image"].clone(),
            d["source"].clone(),
            d["target_serial"].clone()
        ),
        (
            json!("127.0.0.1"),
            json!("my-image"),
            json!("stick"),
            json!("BTYTEST")
        ),
        "{started}"
    );
    let done = evs.iter().find(|e| e["kind"] == "flash.done").unwrap();
    assert!(
        done["summary"].as_str().unwrap().contains("USB stick"),
        "{done}"
    );

    // A done stick flash changes nothing of flash-once: the PXE flash is
    // still offered, and runs to its end as always.
    let m2 = s.machine(MAC).await;
    assert_eq!(m2["boot_mode"], m["boot_mode"]);
    assert_eq!(m2["arm_gen"], m["arm_gen"]);
    assert!(m2["parked_reason"].is_null());
    assert!(is_flash(&s.pxe(MAC).await));
    s.boot_kernel(MAC).await;
    let plan = s.plan(MAC).await;
    assert_eq!(plan["cycle"].as_str().unwrap(), pxe_cycle);
    assert_eq!(plan["image"]["name"], "debian-12");
    let (st, v) = s.done(MAC, &token, false).await;
    assert_eq!(st, 200, "the stick token closed its own cycle only: {v}");
    assert_eq!(
        s.done(MAC, plan["token"].as_str().unwrap(), true).await.0,
        200
    );
    assert!(
        is_local(&s.pxe(MAC).await),
        "flash-once is done by its PXE cycle"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_new_stick_flash_supersedes_the_open_one_and_operators_do_not_cancel_it() {
    let s = Web::start("").await;
    let (_, key) = mint(&s, "lab").await;
    s.flash(MAC, BootMode::FlashAlways).await;
    let (_, a) = stick_flash(&s, Some(&key), &start_body(&[MAC])).await;
    let ta = a["token"].as_str().unwrap().to_string();
    assert_eq!(s.progress(MAC, &ta, 10).await.0, 200);
    // An operator change re-arms and cancels PXE cycles, not a stick's.
    s.flash(MAC, BootMode::FlashOnce).await;
    let c = by_id(&s.cycles(MAC).await, a["cycle"].as_str().unwrap());
    assert_eq!(c["state"], "flashing");

    let (st, b) = stick_flash(&s, Some(&key), &start_body(&[MAC])).await;
    assert_eq!(st, 200, "{b}");
    let tb = b["token"].as_str().unwrap().to_string();
    let hist = s.cycles(MAC).await;
    let old = by_id(&hist, a["cycle"].as_str().unwrap());
    assert_eq!(old["state"], "failed");
    assert_eq!(
        old["reason"],
        "superseded by a new stick flash from 127.0.0.1"
    );
    let (st, v) = s.progress(MAC, &ta, 20).await;
    assert_eq!(st, 409, "{v}");
    assert!(error(&v).contains("stale token: stick flash cycle"), "{v}");
    assert_eq!(s.done(MAC, &ta, true).await.0, 409);
    assert_eq!(s.progress(MAC, &tb, 20).await.0, 200);
    assert_eq!(s.done(MAC, &tb, false).await.0, 200);
    let c = by_id(&s.cycles(MAC).await, b["cycle"].as_str().unwrap());
    assert_eq!(
        (c["state"].clone(), c["reason"].clone()),
        (json!("failed"), json!("disk vanished"))
    );
    let failed: Vec<Value> = s
        .events(MAC)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "flash.failed")
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.iter().all(|e| e["details"]["stick"] == true),
        "{failed:?}"
    );
    // The machine still gets its (new) PXE flash offer.
    assert!(is_flash(&s.pxe(MAC).await));
    s.stop().await;
}

#[tokio::test]
async fn settings_lists_stick_keys_and_revokes_them_and_the_machine_page_marks_stick_flashes() {
    let s = Web::start("[admin]\npassword = \"pw\"\n").await;
    let admin = s.admin("bty-lab", "pw");
    let (_, page) = admin.page("/ui/settings").await;
    assert!(
        page.contains("id=\"sticks\"") && page.contains("No stick key yet"),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "bty-lab usb build --server http://{} --image NAME=URL",
            s.addr
        )),
        "{page}"
    );
    let (id, key) = mint(&admin, "rack-3 stick").await;
    let (_, page) = admin.page("/ui/settings").await;
    assert!(page.contains("rack-3 stick"), "{page}");
    assert!(!page.contains(&key[9..]), "the page never shows a key");
    let action = format!("/ui/settings/sticks/{id}/revoke");
    assert!(page.contains(&format!("action=\"{action}\"")), "{page}");

    // Not logged in, or from another site: nothing is revoked.
    let (st, _, _) = s.post_form(&action, &[]).await;
    assert!(st == 303 || st == 401, "{st}");
    let r = admin
        .no_redirect
        .post(admin.url(&action))
        .basic_auth("bty-lab", Some("pw"))
        .header("origin", "http://evil.example")
        .form(&[("x", "1")])
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert!(admin.get_json("/api/sticks").await.1[0]["revoked_at"].is_null());
    assert_eq!(stick_get(&s, Some(&key)).await.0, 200);

    let (st, _, h) = admin.post_form(&action, &[]).await;
    assert_eq!(st, 303);
    let to = bty_testkit::client::location(&h);
    assert_eq!(to, format!("/ui/settings?revoked={id}#sticks"));
    let (_, page) = admin.page(&to).await;
    assert!(page.contains(&format!("Stick key {id} revoked")), "{page}");
    assert!(page.contains("revoked</span>"), "{page}");
    assert!(
        !page.contains(&format!("action=\"{action}\"")),
        "no second Revoke button"
    );
    assert!(admin.get_json("/api/sticks").await.1[0]["revoked_at"].is_string());
    assert_eq!(stick_get(&s, Some(&key)).await.0, 401);
    let (st, _, _) = admin.post_form("/ui/settings/sticks/77/revoke", &[]).await;
    assert_eq!(st, 404);

    // A stick flash shows on the machine's page while it runs and in the
    // history once done.
    let (_, key) = mint(&admin, "second").await;
    admin.flash(MAC, BootMode::FlashAlways).await;
    let (_, v) = stick_flash(&s, Some(&key), &start_body(&[MAC])).await;
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(s.progress(MAC, &token, 250).await.0, 200);
    let (_, page) = admin.page(&format!("/ui/machines/{MAC_HYP}")).await;
    assert!(page.contains("USB stick flash, cycle"), "{page}");
    assert!(page.contains("image from the server"), "{page}");
    assert!(page.contains("id=\"stick-state\">flashing"), "{page}");
    assert_eq!(s.done(MAC, &token, true).await.0, 200);
    let (_, page) = admin.page(&format!("/ui/machines/{MAC_HYP}")).await;
    assert!(!page.contains("USB stick flash, cycle"), "closed: {page}");
    assert!(
        page.contains(">USB stick</span>"),
        "history marks it: {page}"
    );
    s.stop().await;
}

/// With a real withcache, an image added without sha256 or size appears in
/// the stick's catalog once withcache has measured it, with withcache's
/// blob URL and digest, exactly as a flash plan gives them, and the bytes
/// behind that URL are the origin's.
#[tokio::test]
async fn the_catalog_lists_withcache_images_once_measured_with_the_plans_url() {
    use bty_proto::catalog::blob_url;
    use bty_testkit::cache::Cache;
    use bty_testkit::poll::until;
    use bty_testkit::{data, sha256_hex, Origin};

    const TOKEN: &str = "bty-web-to-withcache-0123456789abcdef";
    let body = data(1 << 20, 3);
    let o = Origin::files(vec![("images/lab.img.gz", body.clone())]);
    let wc = Cache::start(|c| {
        c.admin_password = Some("withcache-password".into());
        c.api_token = Some(bty_auth::ServiceToken::new(TOKEN));
    })
    .await;
    let toml = format!(
        "[withcache]\nurl = \"{}\"\nrefresh_secs = 600\ntoken = \"{TOKEN}\"\n",
        wc.base
    );
    let s = Web::start(&toml).await;
    let (_, key) = mint(&s, "wc").await;
    let src = format!("{}/images/lab.img.gz", o.base());
    let (st, v) = s
        .post_json("/api/images", &json!({"name": "lab-image", "url": src}))
        .await;
    assert_eq!(st, 201, "{v}");
    let listed = until(
        std::time::Duration::from_secs(30),
        "lab-image measured",
        || async {
            let (_, v) = stick_get(&s, Some(&key)).await;
            let cat: ServerCatalog = contract("the stick catalog", &v);
            cat.images.into_iter().find(|i| i.name == "lab-image")
        },
    )
    .await;
    assert_eq!(listed.url, blob_url(&wc.base, &src));
    assert_eq!(listed.sha256, sha256_hex(&body));
    assert_eq!(listed.size, body.len() as u64);
    s.put_machine_ok(
        MAC,
        &json!({"boot_mode": "bty-flash-once", "image": "lab-image", "target_disk_serial": "BTYTEST"}),
    )
    .await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let plan = s.plan(MAC).await;
    assert_eq!(plan["image"]["url"], listed.url);
    assert_eq!(plan["image"]["sha256"], listed.sha256);
    let got = reqwest::get(&listed.url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got.as_ref() == &body[..], "withcache served other bytes");
    // A server-image stick flash records the catalog's URL.
    let mut start = start_body(&[MAC]);
    start["image"] = json!("lab-image");
    start["format"] = json!("img.gz");
    start["sha256"] = json!(listed.sha256);
    let (st, v) = stick_flash(&s, Some(&key), &start).await;
    assert_eq!(st, 200, "{v}");
    let c = by_id(&s.cycles(MAC).await, v["cycle"].as_str().unwrap());
    assert_eq!(c["image_url"], listed.url);
    assert_eq!(c["image_source"], "server");
    s.stop().await;
}
