//! The flash cycle through real HTTP requests on a real listening socket.

use std::time::Duration;

use bty_proto::BootMode;
use bty_testkit::client::{header, Fetch};
use bty_testkit::sse;
use bty_testkit::web::*;
use serde_json::{json, Value};

fn token(plan: &Value) -> String {
    plan["token"]
        .as_str()
        .expect("flash plan has a token")
        .to_string()
}

/// One full cycle: pxe → boot?mac → plan → progress → done. Returns the plan.
async fn full_cycle(s: &Web, mac: &str) -> Value {
    let script = s.pxe(mac).await;
    assert!(is_flash(&script), "{script}");
    s.boot_kernel(mac).await;
    assert_eq!(s.machine(mac).await["cycle"]["state"], "booted");
    let plan = s.plan(mac).await;
    assert_eq!(plan["mode"], "flash", "{plan}");
    let t = token(&plan);
    assert_eq!(s.progress(mac, &t, 400).await.0, 200);
    assert_eq!(s.progress(mac, &t, 1000).await.0, 200);
    let (st, ack) = s.done(mac, &t, true).await;
    assert_eq!(st, 200);
    assert_eq!(ack, json!({"recorded": true, "state": "done"}));
    plan
}

#[tokio::test]
async fn walk_flash_once_then_three_flash_always_cycles() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let plan = full_cycle(&s, MAC).await;
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["image"]["name"], "debian-12");
    assert_eq!(
        plan["image"]["url"],
        "https://images.example/debian-12.img.zst"
    );
    assert_eq!(plan["image"]["sha256"], SHA);
    assert_eq!(plan["image"]["size"], 1234);
    assert_eq!(plan["image"]["format"], "img.zst");
    assert_eq!(plan["target"]["serial"], "BTYTEST");
    assert_eq!(
        plan["report"]["done"],
        format!("{}/pxe/{MAC_HYP}/done", s.base)
    );
    assert_eq!(plan["token"].as_str().unwrap().len(), 32);
    // flash-once: local for good.
    for _ in 0..3 {
        assert!(is_local(&s.pxe(MAC).await));
    }
    assert_eq!(s.plan(MAC).await["mode"], "exit");

    // Switch to flash-always: re-arms; flash, disk, flash, disk, flash, disk.
    s.flash(MAC, BootMode::FlashAlways).await;
    let mut cycles = Vec::new();
    for _ in 0..3 {
        let plan = full_cycle(&s, MAC).await;
        cycles.push(plan["cycle"].as_str().unwrap().to_string());
        let script = s.pxe(MAC).await;
        assert!(is_local(&script), "disk turn after a flash: {script}");
    }
    cycles.dedup();
    assert_eq!(cycles.len(), 3, "each flash-always cycle is new");
    let (_, hist) = s.get_json(&format!("/api/machines/{MAC}/cycles")).await;
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 4);
    assert!(hist.iter().all(|c| c["state"] == "done" && c["ok"] == true));
    assert!(
        hist.iter().all(|c| c.get("token").is_none()),
        "tokens are not exposed"
    );
    let (_, m) = s.get_text("/metrics").await;
    assert!(m.contains("bty_flashes_done_total 4"), "{m}");
    assert!(m.contains("bty_flashes_started_total 4"), "{m}");
    assert!(m.contains("bty_flash_bytes_reported_total 4000"), "{m}");
    assert!(m.contains("bty_pxe_offers_total{kind=\"flash\"} 4"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn crash_mid_cycle_reflashes_never_local_then_parks_and_put_unparks() {
    let s = Web::start("[flash]\nmax_attempts = 2\n").await;
    for mode in [BootMode::FlashOnce, BootMode::FlashAlways] {
        s.flash(MAC, mode).await;
        // Attempt 1: booted, then the machine reboots without done.
        assert!(is_flash(&s.pxe(MAC).await));
        s.boot_kernel(MAC).await;
        let p1 = s.plan(MAC).await;
        assert_eq!(s.progress(MAC, &token(&p1), 10).await.0, 200);
        // Attempt 2: a new cycle, never the local disk.
        let script = s.pxe(MAC).await;
        assert!(is_flash(&script), "{mode}: {script}");
        assert!(script.contains("attempt 2"), "{script}");
        let m = s.machine(MAC).await;
        assert_eq!(m["cycle"]["attempt"], 2);
        // The old token is now stale.
        let (st, e) = s.progress(MAC, &token(&p1), 20).await;
        assert_eq!(st, 409);
        assert!(e["error"].as_str().unwrap().contains("stale"), "{e}");
        s.boot_kernel(MAC).await;
        let p2 = s.plan(MAC).await;
        assert_ne!(p1["cycle"], p2["cycle"]);
        let (st, _) = s.done(MAC, &token(&p2), false).await;
        assert_eq!(st, 200);
        // Out of attempts: parked, repeatedly.
        for _ in 0..2 {
            let script = s.pxe(MAC).await;
            assert!(is_parked(&script), "{script}");
            assert!(script.contains(&format!("chain http://{}/pxe/{MAC_HYP}", s.addr)));
            assert!(!script.contains("sanboot"), "{script}");
        }
        let plan = s.plan(MAC).await;
        assert_eq!(plan["mode"], "interactive");
        assert!(plan["reason"].as_str().unwrap().contains("parked"));
        assert!(s.machine(MAC).await["parked_reason"].is_string());
        assert!(s
            .events(MAC)
            .await
            .iter()
            .any(|e| e["kind"] == "machine.parked"));
        // Any PUT un-parks, even one that changes nothing else.
        let same = s.machine(MAC).await;
        let (st, m) = s
            .put_machine(
                MAC,
                &json!({"boot_mode": same["boot_mode"], "image": "debian-12", "target_disk_serial": "BTYTEST"}),
            )
            .await;
        assert_eq!(st, 200, "{m}");
        assert!(m["parked_reason"].is_null());
        let script = s.pxe(MAC).await;
        assert!(
            is_flash(&script) && script.contains("attempt 1"),
            "{script}"
        );
        full_cycle_from_offered(&s).await;
    }
    s.stop().await;
}

async fn full_cycle_from_offered(s: &Web) {
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    assert_eq!(s.done(MAC, &token(&p), true).await.0, 200);
}

#[tokio::test]
async fn offered_cycle_is_reserved_without_spending_an_attempt() {
    let s = Web::start("[flash]\nmax_attempts = 1\n").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    let a = s.pxe(MAC).await;
    let b = s.pxe(MAC).await;
    assert!(is_flash(&a) && is_flash(&b));
    assert_eq!(a, b, "same cycle re-served");
    s.stop().await;
}

#[tokio::test]
async fn stale_foreign_missing_tokens_and_replayed_done() {
    let s = Web::start("").await;
    let other = "52:54:00:00:00:02";
    s.flash(MAC, BootMode::FlashOnce).await;
    s.flash(other, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.pxe(other).await;
    s.boot_kernel(MAC).await;
    s.boot_kernel(other).await;
    let p = s.plan(MAC).await;
    let po = s.plan(other).await;
    let before = s.machine(MAC).await;

    let (st, e) = s.done(MAC, &token(&po), true).await;
    assert_eq!(st, 409);
    assert!(
        e["error"].as_str().unwrap().contains("another machine"),
        "{e}"
    );
    let (st, _) = s.done(MAC, "", true).await;
    assert_eq!(st, 409);
    let (st, _) = s.done(MAC, "00000000000000000000000000000000", true).await;
    assert_eq!(st, 409);
    let (st, _) = s
        .post_json(&format!("/pxe/{MAC}/done"), &json!({"ok": true}))
        .await;
    assert_eq!(st, 400, "token is a required field");
    assert_eq!(
        s.machine(MAC).await,
        before,
        "refused reports change nothing"
    );

    let (st, ack) = s.done(MAC, &token(&p), true).await;
    assert_eq!((st, ack["recorded"].clone()), (200, json!(true)));
    let after = s.machine(MAC).await;
    // Replays: acknowledged, nothing changes, even with another verdict.
    for ok in [true, false] {
        let (st, ack) = s.done(MAC, &token(&p), ok).await;
        assert_eq!(st, 200);
        assert_eq!(ack, json!({"recorded": false, "state": "done"}));
    }
    assert_eq!(s.machine(MAC).await["cycle"], after["cycle"]);
    // Progress after done is refused.
    assert_eq!(s.progress(MAC, &token(&p), 5).await.0, 409);
    let done_events = s
        .events(MAC)
        .await
        .iter()
        .filter(|e| e["kind"] == "flash.done")
        .count();
    assert_eq!(done_events, 1, "done changes state exactly once");
    // Reports for unknown machines.
    let (st, _) = s.done("52:54:00:99:99:99", &token(&p), true).await;
    assert_eq!(st, 404);
    let (_, m) = s.get_text("/metrics").await;
    assert!(m.contains("bty_reports_refused_total 4"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn operator_change_rearms_flash_once_and_cancels_open_cycles() {
    // `alpine` measured (an unmeasured image is never flashed).
    let dir = tempfile::tempdir().unwrap();
    let measured = format!("alpine.img.gz\"\nsha256 = \"{SHA}\"\nsize = 99\n");
    let cat = catalog_toml().replace("alpine.img.gz\"\n", &measured);
    std::fs::write(dir.path().join("catalog.toml"), cat).unwrap();
    let s = Web::start_in(dir, "").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    // Change the image mid-flash: the open cycle is cancelled, its token stale.
    let (st, _) = s
        .put_machine(MAC, &json!({"boot_mode": "bty-flash-once", "image": "alpine", "target_disk_serial": "BTYTEST"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(s.done(MAC, &token(&p), true).await.0, 409);
    let script = s.pxe(MAC).await;
    assert!(is_flash(&script) && script.contains("alpine"), "{script}");
    s.boot_kernel(MAC).await;
    let p2 = s.plan(MAC).await;
    assert_eq!(p2["image"]["format"], "img.gz");
    assert_eq!(s.done(MAC, &token(&p2), true).await.0, 200);
    assert!(is_local(&s.pxe(MAC).await));
    // Labels only: no re-arm.
    let (st, _) = s
        .put_machine(MAC, &json!({"boot_mode": "bty-flash-once", "image": "alpine", "target_disk_serial": "BTYTEST", "labels": ["rack 1"]}))
        .await;
    assert_eq!(st, 200);
    assert!(is_local(&s.pxe(MAC).await));
    // Target change: re-arm.
    let (st, _) = s
        .put_machine(MAC, &json!({"boot_mode": "bty-flash-once", "image": "alpine", "target_disk_serial": "OTHER-1"}))
        .await;
    assert_eq!(st, 200);
    assert!(is_flash(&s.pxe(MAC).await));
    let (_, hist) = s.get_json(&format!("/api/machines/{MAC}/cycles")).await;
    let states: Vec<_> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].clone())
        .collect();
    assert_eq!(
        states,
        vec![json!("offered"), json!("done"), json!("cancelled")]
    );
    s.stop().await;
}

#[tokio::test]
async fn discovery_inventory_alternation_and_ipxe_exit() {
    let s = Web::start("").await;
    let script = s.pxe(MAC).await;
    assert!(script.contains("netboot env for inventory"), "{script}");
    assert!(script.contains(&format!(
        "kernel http://{}/boot/bty-netboot-x86_64.vmlinuz?mac={MAC} initrd=bty-netboot-x86_64.initrd bty.server=http://{} bty.mac={MAC} console=tty0 console=ttyS0,115200",
        s.addr, s.addr
    )));
    let m = s.machine(MAC).await;
    assert_eq!(m["boot_mode"], "bty-inventory");
    assert!(s
        .events(MAC)
        .await
        .iter()
        .any(|e| e["kind"] == "machine.discovered"));
    assert_eq!(s.plan(MAC).await["mode"], "inventory");
    let inv = json!({"disks": [{"name": "vda", "serial": "BTYTEST", "size_bytes": 1000}], "nics": [], "lshw": {"x": 1}});
    let (st, _) = s.post_json(&format!("/pxe/{MAC}/inventory"), &inv).await;
    assert_eq!(st, 204);
    assert_eq!(s.machine(MAC).await["inventory"]["lshw"]["x"], 1);
    assert!(is_local(&s.pxe(MAC).await), "disk after inventory");
    // The firmware the agent found: in the event's summary and on the page.
    let (_, page) = s.get_text(&format!("/ui/machines/{MAC}")).await;
    assert!(!page.contains("Secure Boot"), "no firmware reported yet");
    let inv = json!({"disks": [], "nics": [],
        "firmware": {"kind": "uefi", "secure_boot": "enabled"}});
    let (st, _) = s.post_json(&format!("/pxe/{MAC}/inventory"), &inv).await;
    assert_eq!(st, 204);
    assert_eq!(
        s.machine(MAC).await["inventory"]["firmware"]["secure_boot"],
        "enabled"
    );
    let reported = s.events(MAC).await;
    assert!(
        reported.iter().any(|e| e["kind"] == "machine.inventory"
            && e["summary"]
                .as_str()
                .unwrap_or("")
                .contains("UEFI, Secure Boot on")),
        "{reported:?}"
    );
    let (st, page) = s.get_text(&format!("/ui/machines/{MAC}")).await;
    assert_eq!(st, 200);
    assert!(page.contains("UEFI, Secure Boot on"), "the page shows it");
    assert!(is_local(&s.pxe(MAC).await), "disk after inventory");
    assert!(
        s.pxe(MAC).await.contains("netboot env for inventory"),
        "then inventory again"
    );
    // Unknown machine inventory: 404 + orphan event.
    let (st, _) = s.post_json("/pxe/52:54:00:00:00:77/inventory", &inv).await;
    assert_eq!(st, 404);
    // Plan auto-registers too.
    assert_eq!(s.plan("52:54:00:00:00:78").await["mode"], "inventory");
    // ipxe-exit with a custom drive.
    let (st, _) = s
        .put_machine(
            MAC,
            &json!({"boot_mode": "ipxe-exit", "sanboot_drive": "0x81"}),
        )
        .await;
    assert_eq!(st, 200);
    let script = s.pxe(MAC).await;
    assert!(
        script.contains(
            "iseq ${platform} efi && exit 1 || sanboot --no-describe --drive 0x81 || exit"
        ),
        "{script}"
    );
    let plan = s.plan(MAC).await;
    assert_eq!(plan["mode"], "exit");
    s.stop().await;
}

#[tokio::test]
async fn legacy_status_is_off_and_can_only_fail_a_cycle() {
    let path = format!("/pxe/{MAC}/status");
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    let (st, _) = s.post_json(&path, &json!({"status": "failed"})).await;
    assert_eq!(st, 403, "off by default");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");
    s.stop().await;

    let s = Web::start("[pxe]\nlegacy_status = true\n").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    s.plan(MAC).await;
    let (st, _) = s.post_json(&path, &json!({"status": "done"})).await;
    assert_eq!(st, 409, "never completes a cycle");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "flashing");
    let (st, _) = s
        .post_json(&path, &json!({"status": "failed", "reason": "x"}))
        .await;
    assert_eq!(st, 204);
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "failed");
    // No open cycle: accepted, nothing changes.
    s.put_machine_ok(MAC, &json!({"boot_mode": "ipxe-exit"}))
        .await;
    let (st, _) = s
        .post_json(&path, &json!({"status": "failed", "reason": "x"}))
        .await;
    assert_eq!(st, 204);
    let (st, _) = s.post_json(&path, &json!({"status": "maybe"})).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_json(
            "/pxe/52:54:00:00:00:55/status",
            &json!({"status": "failed"}),
        )
        .await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test]
async fn image_leaving_the_catalog_mid_flash_parks_instead_of_local() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashAlways).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    s.plan(MAC).await;
    // The operator removes the image from the static catalog file.
    std::fs::write(
        s.path().join("catalog.toml"),
        "version = 1\n[[images]]\nname = \"alpine\"\nsrc = \"https://images.example/alpine.img.gz\"\n",
    )
    .unwrap();
    let (st, v) = s.post_json("/api/images/refresh", &json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "debian-12"));
    let script = s.pxe(MAC).await;
    assert!(is_parked(&script), "{script}");
    s.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    let dir = s.stop().await;
    let s = Web::start_in(dir, "").await;
    assert_eq!(s.done(MAC, &token(&p), true).await.0, 200);
    assert!(is_local(&s.pxe(MAC).await));
    s.stop().await;
}

#[tokio::test]
async fn sse_streams_small_events_with_keepalive_headers() {
    let s = Web::start("").await;
    let r = s.get("/api/events/stream").fetch().await;
    assert_eq!(r.status(), 200);
    assert!(header(r.headers(), "content-type").starts_with("text/event-stream"));
    let mut stream = sse::Reader::new(r);
    s.flash(MAC, BootMode::FlashOnce).await;
    s.pxe(MAC).await;
    s.boot_kernel(MAC).await;
    let p = s.plan(MAC).await;
    s.progress(MAC, &token(&p), 77).await;
    let seen = stream
        .collect(Duration::from_secs(5), |name, _| name == "progress")
        .await;
    let names: Vec<&str> = seen.iter().map(|e| e.name.as_str()).collect();
    for name in ["hello", "machine", "event", "progress"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(
        seen.iter().any(|e| e.data.contains("\"bytes_done\":77")),
        "{seen:?}"
    );
    drop(stream);
    s.stop().await;
}

/// The machine page's iPXE preview, then the script the next PXE contact
/// really gets: equal (the preview of a cycle not opened yet shows its id
/// as 0, and is compared with the served script's id set to 0).
async fn preview_then_served(s: &Web, mac: &str) -> String {
    let (st, preview) = s.get_text(&format!("/ui/machines/{mac}/ipxe")).await;
    assert_eq!(st, 200, "{preview}");
    let served = s.pxe(mac).await;
    let opened = s.machine(mac).await["cycle"]["id"].as_i64();
    let served_as_previewed = match opened {
        Some(id) if preview.contains("(cycle 0, attempt") => served
            .replace(&format!("# cycle {id},"), "# cycle 0,")
            .replace(&format!("(cycle {id},"), "(cycle 0,"),
        _ => served.clone(),
    };
    assert_eq!(preview, served_as_previewed, "preview drifted from /pxe");
    served
}

#[tokio::test]
async fn preview_shows_the_script_the_machine_is_served() {
    // max_attempts = 1: the second crash parks.
    let s = Web::start("[flash]\nmax_attempts = 1\n").await;
    // Discovered: inventory.
    s.pxe(MAC).await;
    let script = preview_then_served(&s, MAC).await;
    assert!(script.contains("netboot env for inventory"), "{script}");
    // Inventory posted: the disk's turn.
    let inv = json!({"disks": [{"name": "vda", "serial": "BTYTEST"}], "nics": []});
    let (st, _) = s.post_json(&format!("/pxe/{MAC}/inventory"), &inv).await;
    assert_eq!(st, 204);
    assert!(is_local(&preview_then_served(&s, MAC).await));
    // Flash mode, no cycle yet: a new cycle (previewed as cycle 0).
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&preview_then_served(&s, MAC).await));
    // Offered, never booted: the same cycle again.
    let script = preview_then_served(&s, MAC).await;
    assert!(script.contains("(cycle 1, attempt 1)"), "{script}");
    // Booted, then silence: out of attempts, parked with the reason the
    // contact gives (the preview says it before the contact happens).
    s.boot_kernel(MAC).await;
    let script = preview_then_served(&s, MAC).await;
    assert!(is_parked(&script), "{script}");
    assert!(
        script.contains("1 flash attempts did not end in done ok"),
        "{script}"
    );
    // Parked: stays so.
    assert!(is_parked(&preview_then_served(&s, MAC).await));
    // Released to ipxe-exit on another drive: local.
    let body = json!({"boot_mode": "ipxe-exit", "sanboot_drive": "0x81"});
    assert_eq!(s.put_machine(MAC, &body).await.0, 200);
    let script = preview_then_served(&s, MAC).await;
    assert!(script.contains("--drive 0x81"), "{script}");
    s.stop().await;
}
