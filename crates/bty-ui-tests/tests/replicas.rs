//! Two bty-web replicas on one PostgreSQL (issue 15): 500 simulated
//! targets each run a full flash cycle, every request going to a replica
//! picked at random, and the plan request racing on both replicas at once
//! (the case a per-MAC lock exists for). Every machine must end with
//! exactly one cycle, done; every `done` posted must be kept. Meanwhile a
//! real Chromium logged in on replica A watches a machine whose agent
//! reports only to replica B: the progress bar must move live (the bus
//! crosses replicas through LISTEN/NOTIFY).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bty_proto::plan::{DoneReport, Phase, ProgressReport};
use bty_testkit::browser::{self, js, until, Driver};
use bty_testkit::client::Fetch;
use bty_testkit::web::WebClient;
use bty_ui_tests::{admin, IMAGE_SIZE, PASSWORD, USER};
use fantoccini::Locator;
use serde_json::json;

const TARGETS: u32 = 500;
/// Targets in flight at once (each one a task doing its whole cycle).
const IN_FLIGHT: usize = 64;

fn mac(i: u32) -> String {
    format!("52:54:00:0a:{:02x}:{:02x}", i >> 8, i & 0xff)
}

/// One target's whole cycle, each step on a replica picked at random.
async fn flash_one(webs: &[WebClient; 2], mac: &str, seed: u64) -> anyhow::Result<()> {
    let pick = |step: u64| &webs[((seed >> step) & 1) as usize];
    let script = pick(0).pxe(mac).await;
    anyhow::ensure!(
        script.contains("kernel http://"),
        "{mac}: not a flash script: {script}"
    );
    pick(1).boot_kernel(mac).await;
    // The agent's plan request, sent to both replicas at once: both must
    // hand out the same cycle and token.
    let (a, b) = tokio::join!(webs[0].plan_typed(mac), webs[1].plan_typed(mac));
    anyhow::ensure!(
        (&a.cycle, &a.token) == (&b.cycle, &b.token),
        "{mac}: the two replicas gave two plans: {a:?} / {b:?}"
    );
    let token = a.token.clone().unwrap_or_default();
    let sha = a.image.as_ref().and_then(|i| i.sha256.clone());
    for (i, step) in [2u64, 3].into_iter().enumerate() {
        let p = ProgressReport {
            token: token.clone(),
            bytes_done: (i as u64 + 1) * 500,
            bytes_total: Some(1000),
            phase: Phase::Writing,
            rate: Some(1e6),
        };
        let (st, v) = pick(step).report_progress(mac, &p).await;
        anyhow::ensure!(st == 200, "{mac}: progress answered {st}: {v}");
    }
    let done = DoneReport {
        token,
        ok: true,
        reason: None,
        sha256: sha,
        duration_s: Some(1.0),
    };
    let (st, v) = pick(4).report_done(mac, &done).await;
    anyhow::ensure!(st == 200, "{mac}: done answered {st}: {v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_flash_500_targets_once_each_and_share_live_updates() -> anyhow::Result<()> {
    if !bty_testkit::pg::available() {
        return Ok(());
    }
    let url = bty_testkit::pg::fresh_database();
    let a = bty_ui_tests::web_on(&url).await?;
    let b = bty_ui_tests::web_on(&url).await?;
    let (aa, ab) = (admin(&a), admin(&b));

    // Registered through both replicas: each sees the other's machines.
    for i in 0..TARGETS {
        let web = if i % 2 == 0 { &aa } else { &ab };
        web.put_machine_ok(
            &mac(i),
            &json!({"boot_mode": "bty-flash-once", "image": "debian-12",
                    "target_disk_serial": format!("DISK{i}")}),
        )
        .await;
    }
    assert_eq!(aa.machines().await.len() as u32, TARGETS);
    assert_eq!(ab.machines().await.len() as u32, TARGETS);

    let anon = Arc::new([WebClient(aa.anonymous()), WebClient(ab.anonymous())]);
    let t0 = Instant::now();
    let failures = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for i in 0..TARGETS {
        let (anon, failures, sem) = (anon.clone(), failures.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = sem.acquire_owned().await;
            let seed = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
            if let Err(e) = flash_one(&anon, &mac(i), seed).await {
                eprintln!("{e:#}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let took = t0.elapsed();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "targets failed (above)"
    );
    println!(
        "{TARGETS} targets, full cycle each over two replicas: {took:?} ({:.0} cycles/s)",
        f64::from(TARGETS) / took.as_secs_f64()
    );

    // Every machine: exactly one cycle, done, as both replicas see it.
    for i in 0..TARGETS {
        let m = mac(i);
        for web in [&aa, &ab] {
            let cycles = web.cycles(&m).await;
            let states: Vec<_> = cycles.iter().map(|c| c["state"].clone()).collect();
            assert_eq!(states, vec![json!("done")], "{m}: {cycles:?}");
        }
    }

    // A browser on replica A, the agent on replica B.
    if !browser::present() {
        return Ok(());
    }
    let watched = "52:54:00:0b:00:01";
    aa.put_machine_ok(
        watched,
        &json!({"boot_mode": "bty-flash-once", "image": "debian-12",
                "target_disk_serial": "WATCHED"}),
    )
    .await;
    let driver = Driver::start().await?;
    let br = driver.browser().await?;
    let walk = async {
        let page = "/ui/machines/52-54-00-0b-00-01";
        br.goto(&a.url(page)).await?;
        br.find(Locator::Id("user")).await?.clear().await?;
        br.find(Locator::Id("user")).await?.send_keys(USER).await?;
        br.find(Locator::Id("password"))
            .await?
            .send_keys(PASSWORD)
            .await?;
        br.find(Locator::Id("login")).await?.click().await?;
        until(10, "the machine page on replica A after login", || async {
            Ok((br.current_url().await?.path() == page).then_some(()))
        })
        .await?;
        let mut agent = bty_testkit::web::SimAgent::new(&ab, watched);
        agent.start_flash().await?;
        until(10, "the progress bar on replica A", || async {
            Ok(br.find(Locator::Css("#status .progress")).await.ok())
        })
        .await?;
        js(&br, "window.__noReload = 'still here'; return null;").await?;
        agent.progress(IMAGE_SIZE / 2, IMAGE_SIZE, 1e8).await?;
        let pct = until(10, "replica B's progress report on replica A's page", || async {
            let v = js(&br, "const e = document.querySelector('#status .progress'); return e ? e.dataset.pct : null;").await?;
            Ok(v.as_str().filter(|p| p.starts_with("50")).map(str::to_owned))
        })
        .await?;
        let still = js(&br, "return window.__noReload || null;").await?;
        anyhow::ensure!(still == json!("still here"), "the page reloaded");
        println!("replica A's page shows {pct} from replica B's report");
        Ok(())
    };
    let r = browser::conclude(&br, "replicas-", walk.await).await;
    let _ = br.close().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_report_to_one_replica_reaches_the_others_event_stream() -> anyhow::Result<()> {
    if !bty_testkit::pg::available() {
        return Ok(());
    }
    let url = bty_testkit::pg::fresh_database();
    let a = bty_ui_tests::web_on(&url).await?;
    let b = bty_ui_tests::web_on(&url).await?;
    let m = "52:54:00:0c:00:01";
    admin(&a)
        .put_machine_ok(
            m,
            &json!({"boot_mode": "bty-flash-once", "image": "debian-12",
                    "target_disk_serial": "SSE"}),
        )
        .await;
    let resp = admin(&a).get("/api/events/stream").fetch().await;
    let mut sse = bty_testkit::sse::Reader::new(resp);
    let hello = sse
        .next(tokio::time::Instant::now() + Duration::from_secs(10))
        .await;
    assert_eq!(hello.map(|e| e.name).as_deref(), Some("hello"));
    let mut agent = bty_testkit::web::SimAgent::new(&admin(&b), m);
    agent.start_flash().await?;
    agent.progress(700, 1000, 1e6).await?;
    let got = sse
        .until(Duration::from_secs(10), |name, data| {
            name == "progress" && data.contains("\"bytes_done\":700")
        })
        .await;
    assert!(
        got.is_some(),
        "replica A's stream never carried B's progress"
    );
    Ok(())
}
