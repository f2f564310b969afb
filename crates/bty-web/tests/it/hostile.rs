//! Issue 12, "the LAN is hostile": what another host on the LAN (or a
//! browser on it) tries against the open PXE and agent endpoints. Each test
//! is an attack on a real bty-web; the machine under attack is [`MAC`],
//! booted from 127.0.0.1, the attacker is 127.0.0.2 unless said otherwise.

use std::net::{IpAddr, Ipv4Addr};

use bty_proto::BootMode;
use bty_testkit::client::Fetch;
use bty_testkit::web::*;
use serde_json::{json, Value};

/// Another host on the LAN.
fn attacker(s: &Web) -> WebClient {
    WebClient(s.0.from_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
}

fn token(plan: &Value) -> String {
    plan["token"]
        .as_str()
        .expect("flash plan has a token")
        .to_string()
}

/// The machine PXE-boots, fetches the kernel and takes its plan.
async fn flashing(s: &Web) -> Value {
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe(MAC).await));
    s.boot_kernel(MAC).await;
    let plan = s.plan(MAC).await;
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "flashing");
    plan
}

#[tokio::test]
async fn attack_tokenless_status_cannot_complete_a_cycle() {
    let s = Web::start("").await;
    flashing(&s).await;
    let a = attacker(&s);
    let path = format!("/pxe/{MAC}/status");
    let (st, v) = a.post_json(&path, &json!({"status": "done"})).await;
    assert_eq!(st, 403, "the legacy path is off by default: {v}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "flashing");
    s.stop().await;

    let s = Web::start("[pxe]\nlegacy_status = true\n").await;
    flashing(&s).await;
    let a = attacker(&s);
    let (st, v) = a.post_json(&path, &json!({"status": "done"})).await;
    assert_eq!(st, 409, "a tokenless report never completes a cycle: {v}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "flashing");
    let (st, _) = a
        .post_json(&path, &json!({"status": "failed", "reason": "x"}))
        .await;
    assert_eq!(st, 204, "it may still fail one");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "failed");
    s.stop().await;
}

#[tokio::test]
async fn attack_plan_before_the_kernel_was_fetched_gets_no_token() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe(MAC).await));
    // Offered, not booted: nobody fetched the netboot kernel yet.
    let (st, v) = s.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 409, "{v}");
    assert!(v.get("token").is_none(), "{v}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");
    // A machine nobody offered anything asks for a plan: none either.
    s.flash("52:54:00:00:00:77", BootMode::FlashOnce).await;
    let (st, v) = s.get_json("/pxe/52:54:00:00:00:77/plan").await;
    assert_eq!(st, 409, "{v}");
    assert!(v.get("token").is_none(), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn attack_plan_and_reports_from_another_address_are_refused() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe(MAC).await));
    s.boot_kernel(MAC).await; // from 127.0.0.1
    let a = attacker(&s);
    let (st, v) = a.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 403, "{v}");
    assert!(v.get("token").is_none(), "{v}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "booted");
    // The real agent takes its plan; the attacker who learnt the token
    // still cannot report with it.
    let t = token(&s.plan(MAC).await);
    let (st, v) = a.done(MAC, &t, true).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = a.progress(MAC, &t, 10).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "flashing");
    // The agent's own reports go through.
    assert_eq!(s.done(MAC, &t, true).await.0, 200);
    s.stop().await;
}

/// Another host polls `/boot/...?mac=` for the machine, hoping to fetch
/// the netboot kernel between the machine's PXE contact and its own kernel
/// fetch: the cycle is the machine's address's, so the polls boot
/// nothing, and the plan stays out of the attacker's reach.
#[tokio::test]
async fn attack_racing_the_kernel_fetch_from_another_address_boots_nothing() {
    let s = Web::start("").await;
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe(MAC).await)); // offered to 127.0.0.1
    let a = attacker(&s);
    let kernel = format!("/boot/bty-netboot-x86_64.vmlinuz?mac={MAC}");
    for _ in 0..3 {
        let st = a.get(&kernel).fetch().await.status();
        assert!(st == 200 || st == 404, "{st}");
        assert_eq!(s.machine(MAC).await["cycle"]["state"], "offered");
    }
    let (st, v) = a.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 409, "not booted, so no plan for anyone: {v}");
    assert!(v.get("token").is_none(), "{v}");
    // The machine's own fetch boots it, and its plan comes.
    s.boot_kernel(MAC).await;
    assert_eq!(s.machine(MAC).await["cycle"]["state"], "booted");
    let (st, v) = a.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 403, "{v}");
    token(&s.plan(MAC).await);
    s.stop().await;
}

/// What a browser adds to a request a page makes (`<img src>`, `fetch`).
const BROWSER: [(&str, &str); 2] = [
    ("sec-fetch-mode", "no-cors"),
    ("origin", "http://evil.example"),
];

#[tokio::test]
async fn attack_browser_gets_change_nothing() {
    let s = Web::start("").await;
    let plan = flashing(&s).await;
    let id = plan["cycle"].clone();
    for (h, v) in BROWSER {
        let r = s.get(&format!("/pxe/{MAC}")).header(h, v).fetch().await;
        assert!(
            r.status() == 200 || r.status() == 403,
            "{h}: {}",
            r.status()
        );
        let m = s.machine(MAC).await;
        assert_eq!(m["cycle"]["state"], "flashing", "{h}: {m}");
        assert_eq!(m["cycle"]["id"].to_string(), id.as_str().unwrap(), "{h}");
        let r = s
            .get(&format!("/pxe/{MAC}/plan"))
            .header(h, v)
            .fetch()
            .await;
        assert_eq!(r.status(), 403, "{h}");
    }
    // A browser fetching the kernel does not boot an offered cycle.
    s.flash("52:54:00:00:00:78", BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe("52:54:00:00:00:78").await));
    let r = s
        .get("/boot/bty-netboot-x86_64.vmlinuz?mac=52:54:00:00:00:78")
        .header("sec-fetch-dest", "image")
        .fetch()
        .await;
    assert!(r.status() == 200 || r.status() == 403, "{}", r.status());
    let m = s.machine("52:54:00:00:00:78").await;
    assert_eq!(m["cycle"]["state"], "offered", "{m}");
    s.stop().await;
}

#[tokio::test]
async fn attack_repeated_pxe_gets_are_one_contact() {
    let s = Web::start("[pxe]\nrepeat_window_secs = 10\n").await;
    s.flash(MAC, BootMode::FlashAlways).await;
    assert!(is_flash(&s.pxe(MAC).await));
    s.boot_kernel(MAC).await;
    let t = token(&s.plan(MAC).await);
    assert_eq!(s.done(MAC, &t, true).await.0, 200);
    // The disk's turn, asked for three times in a row: still the disk's
    // turn, and no new cycle.
    for _ in 0..3 {
        let script = s.pxe(MAC).await;
        assert!(is_local(&script), "{script}");
    }
    assert_eq!(s.cycles(MAC).await.len(), 1);
    // While it flashes, a burst of GETs is one reboot: one new attempt at
    // most, never parked.
    s.flash(MAC, BootMode::FlashOnce).await;
    assert!(is_flash(&s.pxe(MAC).await));
    s.boot_kernel(MAC).await;
    s.plan(MAC).await;
    for _ in 0..5 {
        assert!(is_flash(&s.pxe(MAC).await));
        s.boot_kernel(MAC).await;
    }
    let m = s.machine(MAC).await;
    assert!(m["parked_reason"].is_null(), "{m}");
    assert!(m["cycle"]["attempt"].as_u64().unwrap() <= 2, "{m}");
    s.stop().await;
}

#[tokio::test]
async fn attack_unmeasured_image_is_never_flashed() {
    let s = Web::start("").await;
    // `alpine` has no sha256 and no size in the catalog.
    let body =
        json!({"boot_mode": "bty-flash-once", "image": "alpine", "target_disk_serial": "BTYTEST"});
    s.put_machine_ok(MAC, &body).await;
    let script = s.pxe(MAC).await;
    assert!(!is_flash(&script), "{script}");
    let (st, plan) = s.get_json(&format!("/pxe/{MAC}/plan")).await;
    assert_eq!(st, 200, "{plan}");
    assert_ne!(plan["mode"], "flash", "{plan}");
    assert!(plan.get("token").is_none(), "{plan}");
    s.stop().await;
}

#[tokio::test]
async fn attack_ten_thousand_random_macs_stay_within_the_cap() {
    let s = Web::start("[discovery]\nmax_unassigned = 50\nper_ip_per_minute = 100000\n").await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let c = s.0.anonymous();
        tasks.push(tokio::spawn(async move {
            for i in 0..1250u32 {
                let n = t * 1250 + i;
                let mac = format!(
                    "02:00:00:{:02x}:{:02x}:{:02x}",
                    n >> 16,
                    (n >> 8) & 255,
                    n & 255
                );
                let r = c.get(&format!("/pxe/{mac}")).fetch().await;
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ms = s.machines().await;
    assert!(ms.len() <= 50, "{} machines", ms.len());
    // What the flood leaves on disk (machines, events, WAL) is bounded too.
    let dir = s.stop().await;
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    eprintln!("10 000 random MACs: {} KiB of state on disk", bytes >> 10);
    assert!(bytes < STATE_BOUND_MIB << 20, "{bytes} bytes of state");
}

/// The state a 10 000-MAC flood may leave on disk (it is ~3 events per MAC
/// until events are pruned).
const STATE_BOUND_MIB: u64 = 32;

#[tokio::test]
async fn attack_one_address_cannot_register_macs_without_limit() {
    let s = Web::start("[discovery]\nper_ip_per_minute = 20\n").await;
    let a = attacker(&s);
    let mut refused = 0;
    for n in 0..40u32 {
        let r = a.get(&format!("/pxe/02:00:00:00:01:{n:02x}")).fetch().await;
        if r.status() == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 20);
    assert_eq!(s.machines().await.len(), 20);
    // Another address is not held back, nor a known machine.
    s.pxe("02:00:00:00:02:01").await;
    a.pxe("02:00:00:00:01:00").await;
    s.stop().await;
}

#[tokio::test]
async fn attack_boot_dir_over_the_state_dir_is_refused() {
    for boot in [".", ".."] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let b = state.join(boot);
        let extra = format!("[boot]\ndir = {:?}\n", b.display().to_string());
        match Web::try_start_in(dir, &extra).await {
            Ok(w) => {
                let (st, _) = w.get_text("/boot/state.db").await;
                w.stop().await;
                panic!(
                    "started with boot dir {} (GET /boot/state.db: {st})",
                    b.display()
                );
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("[boot] dir") && e.contains("state_dir"), "{e}");
            }
        }
    }
}
