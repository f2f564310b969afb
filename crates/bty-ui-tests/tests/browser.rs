//! The operator's walk through the UI in real headless Chromium: log in,
//! register a machine, assign an image, watch a simulated agent's progress
//! move the bar live, see `done` fill in "last flashed", filter and page
//! the machines list while updates stream, log out. Screenshots of every
//! page go to `target/ui-screenshots/`.

use std::time::{Duration, Instant};

use bty_testkit::browser::{self, js, shot, text, until, Driver};
use bty_testkit::web::{SimAgent, Web};
use bty_ui_tests::{admin, IMAGE_SIZE, PASSWORD, SHA, USER};
use fantoccini::{Client, Locator};
use serde_json::json;

const MAC: &str = "52:54:00:c0:ff:ee";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_walkthrough_in_chromium() -> anyhow::Result<()> {
    if !browser::present() {
        return Ok(());
    }
    let t0 = Instant::now();
    let web = bty_ui_tests::web().await?;
    let driver = Driver::start().await?;
    let b = driver.browser().await?;
    eprintln!("browser up after {:?}", t0.elapsed());
    let r = browser::conclude(&b, "", walkthrough(&web, &b).await).await;
    eprintln!("walkthrough took {:?}", t0.elapsed());
    let _ = b.close().await;
    web.stop().await;
    r
}

async fn walkthrough(web: &Web, b: &Client) -> anyhow::Result<()> {
    // 1. Log in (a wrong password first: the message shows).
    b.goto(&web.url("/ui/machines")).await?;
    let url = b.current_url().await?;
    assert_eq!(url.path(), "/ui/login", "not logged in: the login form");
    b.find(Locator::Id("user")).await?.clear().await?;
    b.find(Locator::Id("user")).await?.send_keys(USER).await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys("wrong")
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    let err = text(b, "#login-error").await?;
    assert_eq!(err, "Wrong user name or password.");
    shot(b, "01-login-error").await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    until(10, "the machines page after login", || async {
        Ok((b.current_url().await?.path() == "/ui/machines").then_some(()))
    })
    .await?;

    // 2. Register a machine.
    b.goto(&web.url("/ui/machines/new")).await?;
    b.find(Locator::Id("f-mac"))
        .await?
        .send_keys("52-54-00-C0-FF-EE")
        .await?;
    b.find(Locator::Id("f-name"))
        .await?
        .send_keys("bench-07")
        .await?;
    b.find(Locator::Id("f-labels"))
        .await?
        .send_keys("rack3, ci")
        .await?;
    shot(b, "02-register").await?;
    b.find(Locator::Id("save")).await?.click().await?;
    let saved = until(10, "the saved notice", || async {
        Ok(b.find(Locator::Id("saved")).await.ok())
    })
    .await?;
    assert_eq!(saved.text().await?, "Machine registered.");
    let m = admin(web).machine(MAC).await;
    assert_eq!(m["name"], "bench-07");

    // 3. Assign an image with the bulk action on the list.
    b.goto(&web.url("/ui/machines")).await?;
    b.find(Locator::Css("input.sel[value='52:54:00:c0:ff:ee']"))
        .await?
        .click()
        .await?;
    b.find(Locator::Id("bulk-image"))
        .await?
        .select_by_value("debian-12")
        .await?;
    b.find(Locator::Id("bulk-assign")).await?.click().await?;
    let notice = until(10, "the bulk notice", || async {
        Ok(b.find(Locator::Id("notice")).await.ok())
    })
    .await?;
    assert_eq!(notice.text().await?, "1 machine(s) updated.");
    assert_eq!(admin(web).machine(MAC).await["image"], "debian-12");
    // Then flash-once onto a disk, on the machine's own page.
    b.goto(&web.url("/ui/machines/52-54-00-c0-ff-ee")).await?;
    b.find(Locator::Id("f-mode"))
        .await?
        .select_by_value("bty-flash-once")
        .await?;
    b.find(Locator::Id("f-target"))
        .await?
        .send_keys("BTYTEST")
        .await?;
    b.find(Locator::Id("save")).await?.click().await?;
    until(10, "the saved edit", || async {
        Ok(b.find(Locator::Id("saved")).await.ok())
    })
    .await?;
    let m = admin(web).machine(MAC).await;
    assert_eq!(
        (m["boot_mode"].as_str(), m["target_disk_serial"].as_str()),
        (Some("bty-flash-once"), Some("BTYTEST"))
    );
    let preview = text(b, "#ipxe pre").await?;
    assert!(
        preview.contains("flash debian-12 onto disk serial BTYTEST"),
        "{preview}"
    );
    shot(b, "03-machine-assigned").await?;

    // 4. The agent flashes; the bar moves live (no reload).
    let mut agent = SimAgent::new(web, MAC);
    agent.start_flash().await?;
    until(10, "the progress bar", || async {
        Ok(b.find(Locator::Css("#status .progress")).await.ok())
    })
    .await?;
    js(b, "window.__noReload = 'still here'; return null;").await?;
    let total = IMAGE_SIZE;
    let mut seen = Vec::new();
    for i in 1..=12u64 {
        agent
            .progress(total * i / 13, total, 180.0 * 1048576.0)
            .await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let pct = js(b, "const e = document.querySelector('#status .progress'); return e ? e.dataset.pct : null;").await?;
        if let Some(p) = pct.as_str() {
            if seen.last().map(String::as_str) != Some(p) {
                seen.push(p.to_string());
            }
        }
        if i == 6 {
            shot(b, "04-machine-flashing").await?;
        }
    }
    println!("bar went through {seen:?}");
    assert!(seen.len() >= 4, "the bar should move live, saw {seen:?}");
    let nums: Vec<u32> = seen
        .iter()
        .filter_map(|s| s.trim_end_matches('%').parse().ok())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] <= w[1]), "monotonic: {nums:?}");
    assert!(*nums.last().unwrap() >= 80, "{nums:?}");
    let rate = text(b, "#status .progress .rate").await?;
    assert_eq!(rate, "180.0 MiB/s");
    assert_ne!(text(b, "#status .progress .eta").await?, "–");
    assert_eq!(
        js(b, "return window.__noReload;").await?,
        json!("still here"),
        "the page reloaded"
    );

    // 5. done: last flashed and the digest appear live.
    agent.done(true).await?;
    let lf = until(10, "last flashed", || async {
        let t = text(b, "#last-flashed").await?;
        Ok((!t.contains("never")).then_some(t))
    })
    .await?;
    assert!(lf.contains("debian-12 on disk BTYTEST"), "{lf}");
    // Localised by the browser: the <time> no longer says UTC. htmx runs
    // the localising hook when the swapped content settles, a moment after
    // the text itself changed, so wait for it rather than read at once.
    until(5, "the last-flashed time to be localised", || async {
        let t = js(
            b,
            "return document.querySelector('#last-flashed time').textContent;",
        )
        .await?;
        let t = t.as_str().unwrap_or("").to_string();
        Ok((!t.is_empty() && !t.ends_with("UTC")).then_some(t))
    })
    .await?;
    assert_eq!(text(b, "#disk-sha").await?, SHA);
    let seen = text(b, "#last-seen").await?;
    assert!(seen.contains("127.0.0.1"), "last seen is live too: {seen}");
    assert_eq!(text(b, "#state").await?, "flashed");
    assert_eq!(
        js(b, "return window.__noReload;").await?,
        json!("still here")
    );
    let ev = text(b, "#event-rows tr:first-child").await?;
    assert!(
        ev.contains("flash.done"),
        "the event row arrived live: {ev}"
    );
    shot(b, "05-machine-flashed").await?;

    // 6. Many machines, some flashing: filter and page while updates stream.
    let mut agents = Vec::new();
    for i in 0..40u32 {
        let mac = format!("52:54:00:00:10:{i:02x}");
        if i % 4 == 0 {
            admin(web)
                .put_machine_ok(
                    &mac,
                    &json!({"boot_mode": "bty-flash-once", "image": "debian-12",
                "target_disk_serial": format!("DISK{i}"), "name": format!("node{i:02}")}),
                )
                .await;
            let mut a = SimAgent::new(web, &mac);
            a.start_flash().await?;
            agents.push(a);
        } else {
            admin(web)
                .put_machine_ok(
                    &mac,
                    &json!({"boot_mode": "ipxe-exit", "name": format!("node{i:02}")}),
                )
                .await;
        }
    }
    // Pages left behind must not keep their live streams open (the
    // browser's six connections per server would run out).
    let open = bty_web::ui::open_streams();
    assert!(
        open <= 2,
        "{open} live streams still open after visiting pages"
    );
    let t = Instant::now();
    b.goto(&web.url("/ui/machines?per_page=10&page=2&sort=mac&dir=asc"))
        .await?;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "page 2 took {:?}",
        t.elapsed()
    );
    let caption = text(b, "#count").await?;
    assert_eq!(caption, "41 machines, page 2 of 5");
    let rows_before = js(
        b,
        "return [...document.querySelectorAll('#machines tbody tr')].map(r => r.id);",
    )
    .await?;
    assert_eq!(rows_before.as_array().map(Vec::len), Some(10));
    // Select a row: the selection must survive its live swaps.
    b.find(Locator::Css("#machines tbody tr:nth-child(3) input.sel"))
        .await?
        .click()
        .await?;
    // Page 2 holds 52:54:00:00:10:0a..13; 0c and 10 are flashing there.
    let stream = {
        let agents = agents.clone();
        let web = web.anonymous();
        tokio::spawn(async move {
            for step in 1..=20u64 {
                for a in &agents {
                    let done = IMAGE_SIZE * step / 25;
                    let _ = a.progress(done, IMAGE_SIZE, 1e8).await;
                }
                // A stranger PXE-boots: it must not push into this page.
                if step <= 8 {
                    web.get_text(&format!("/pxe/52:54:00:00:20:{step:02x}"))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let pct = until(10, "a live progress cell on page 2", || async {
        let v = js(b, "const e = document.querySelector('#m-525400001010 .progress'); return e ? e.dataset.pct : null;").await?;
        Ok(v.as_str().filter(|p| *p != "–" && *p != "0%").map(str::to_string))
    })
    .await?;
    println!("page-2 row progress: {pct}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows_after = js(
        b,
        "return [...document.querySelectorAll('#machines tbody tr')].map(r => r.id);",
    )
    .await?;
    assert_eq!(
        rows_after, rows_before,
        "live updates must not change the rows of the page"
    );
    assert_eq!(text(b, "#count").await?, caption, "nor the paging");
    let checked = js(
        b,
        "return document.querySelector('#machines tbody tr:nth-child(3) input.sel').checked;",
    )
    .await?;
    assert_eq!(checked, json!(true), "selection survives live swaps");
    let notice = text(b, "#live-notice").await?;
    assert!(notice.contains("changed outside this page"), "{notice}");
    shot(b, "06-machines-page2-live").await?;
    // Filter to flashing machines (htmx swap, URL pushed), then page on.
    b.find(Locator::Css("input[name=filter][value=flashing]"))
        .await?
        .click()
        .await?;
    until(10, "the flashing filter", || async {
        let c = text(b, "#count").await?;
        Ok(c.starts_with("10 machines (flashing)").then_some(()))
    })
    .await?;
    assert!(b
        .current_url()
        .await?
        .query()
        .unwrap_or("")
        .contains("filter=flashing"));
    let states = js(
        b,
        "return [...document.querySelectorAll('#machines tbody .badge')].map(e => e.textContent);",
    )
    .await?;
    assert!(
        states.as_array().unwrap().iter().all(|s| s == "flashing"),
        "{states}"
    );
    b.find(Locator::Id("per_page"))
        .await?
        .select_by_value("10")
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.find(Locator::Css("input[name=filter][value=all]"))
        .await?
        .click()
        .await?;
    until(10, "all machines again", || async {
        Ok(text(b, "#count").await?.contains("page 1 of").then_some(()))
    })
    .await?;
    b.find(Locator::Id("next-page")).await?.click().await?;
    until(10, "page 2", || async {
        Ok(text(b, "#count").await?.contains("page 2 of").then_some(()))
    })
    .await?;
    // Updates were streaming all along; when they stop, the row on this
    // page shows the last report.
    stream.await?;
    until(10, "the last progress in the row", || async {
        let v = js(b, "const e = document.querySelector('#m-525400001010 .progress'); return e ? e.dataset.pct : null;").await?;
        Ok((v == json!("80%")).then_some(()))
    })
    .await?;
    shot(b, "07-machines-list").await?;

    // 7. The other pages.
    b.goto(&web.url("/ui/dashboard")).await?;
    assert!(text(b, "#count-flashing").await?.parse::<u32>()? >= 10);
    // A flash that moves while the dashboard is open updates its bar live.
    let a0 = &agents[0];
    a0.progress(IMAGE_SIZE * 95 / 100, IMAGE_SIZE, 1e8).await?;
    let key = a0.mac.replace(':', "");
    until(10, "the dashboard bar", || async {
        let v = js(b, &format!("const e = document.querySelector('[sse-swap=\"dprog-{key}\"]'); return e ? e.dataset.pct : null;")).await?;
        Ok((v == json!("95%")).then_some(()))
    })
    .await?;
    shot(b, "08-dashboard").await?;
    b.goto(&web.url("/ui/images")).await?;
    assert!(text(b, "#images").await?.contains("debian-12"));
    shot(b, "09-images").await?;
    b.goto(&web.url("/ui/events")).await?;
    b.find(Locator::Css("#events tbody tr:first-child input[name=id]"))
        .await?
        .click()
        .await?;
    b.find(Locator::Id("ack")).await?.click().await?;
    let n = until(10, "the ack notice", || async {
        Ok(b.find(Locator::Id("notice")).await.ok())
    })
    .await?;
    assert_eq!(n.text().await?, "1 event(s) changed.");
    shot(b, "10-events").await?;
    b.goto(&web.url("/ui/settings")).await?;
    assert!(text(b, "#dhcp-pxe").await?.contains("Option 67"));
    shot(b, "11-settings").await?;
    // Phone-sized.
    b.set_window_size(390, 844).await?;
    b.goto(&web.url("/ui/machines/52-54-00-c0-ff-ee")).await?;
    shot(b, "12-phone-machine").await?;
    b.goto(&web.url("/ui/machines")).await?;
    shot(b, "13-phone-machines").await?;
    // Keyboard: the first Tab reaches the skip link.
    b.set_window_size(1280, 900).await?;
    b.goto(&web.url("/ui/dashboard")).await?;
    b.find(Locator::Css("body"))
        .await?
        .send_keys("\u{E004}")
        .await?;
    let focused = js(b, "return document.activeElement.className;").await?;
    assert_eq!(focused, json!("skip"));

    // 8. Log out: back to the login page, and the pages are closed again.
    b.find(Locator::Id("logout")).await?.click().await?;
    until(10, "the login page", || async {
        Ok((b.current_url().await?.path() == "/ui/login").then_some(()))
    })
    .await?;
    b.goto(&web.url("/ui/machines")).await?;
    assert_eq!(b.current_url().await?.path(), "/ui/login");
    shot(b, "00-login").await?;
    Ok(())
}

/// The Machines page's import in Chromium: a CSV with a bad row is
/// uploaded, the preview names the row and field and nothing is saved;
/// the fixed file previews clean, Apply saves all of it and the list
/// shows the machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_import_in_chromium() -> anyhow::Result<()> {
    if !browser::present() {
        return Ok(());
    }
    let web = bty_ui_tests::web().await?;
    let driver = Driver::start().await?;
    let b = driver.browser().await?;
    let files = tempfile::tempdir()?;
    let r = browser::conclude(&b, "import-", import_walk(&web, &b, files.path()).await).await;
    let _ = b.close().await;
    web.stop().await;
    r
}

async fn import_walk(web: &Web, b: &Client, dir: &std::path::Path) -> anyhow::Result<()> {
    b.goto(&web.url("/ui/login")).await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    until(10, "logged in", || async {
        Ok((b.current_url().await?.path() != "/ui/login").then_some(()))
    })
    .await?;
    b.goto(&web.url("/ui/machines")).await?;
    b.find(Locator::Id("import-link")).await?.click().await?;
    until(10, "the import page", || async {
        Ok((b.current_url().await?.path() == "/ui/machines/import").then_some(()))
    })
    .await?;
    let header = "mac,name,boot_mode,image,target_disk_serial,sanboot_drive,labels";
    let upload = |name: &str, body: String| {
        let p = dir.join(name);
        std::fs::write(&p, body).map(|()| p)
    };
    let bad = upload(
        "lab-bad.csv",
        format!(
            "{header}\n52:54:00:1e:00:01,imp-1,bty-flash-once,debian-12,S1,,rack9\n\
             52:54:00:1e:00:02,imp-2,flash,,,,\n"
        ),
    )?;
    b.find(Locator::Id("import-file"))
        .await?
        .send_keys(&bad.display().to_string())
        .await?;
    b.find(Locator::Id("import-preview-button"))
        .await?
        .click()
        .await?;
    let refused = until(10, "the refused preview", || async {
        Ok(b.find(Locator::Id("import-refused")).await.ok())
    })
    .await?;
    assert!(refused.text().await?.contains("Nothing can be applied"));
    let row = text(b, "#import-rows tr[data-line=\"3\"]").await?;
    assert!(row.contains("boot_mode: unknown boot mode"), "{row}");
    assert!(b.find(Locator::Id("import-apply")).await.is_err());
    shot(b, "14-import-refused").await?;
    assert!(admin(web).machines().await.is_empty(), "nothing applied");

    let good = upload(
        "lab.csv",
        format!(
            "{header}\n52:54:00:1e:00:01,imp-1,bty-flash-once,debian-12,S1,,rack9\n\
             52:54:00:1e:00:02,imp-2,ipxe-exit,,,,\n"
        ),
    )?;
    b.find(Locator::Id("import-file"))
        .await?
        .send_keys(&good.display().to_string())
        .await?;
    b.find(Locator::Id("import-preview-button"))
        .await?
        .click()
        .await?;
    let ready = until(10, "the clean preview", || async {
        Ok(b.find(Locator::Id("import-ready")).await.ok())
    })
    .await?;
    assert!(ready.text().await?.contains("2 to create"));
    shot(b, "15-import-preview").await?;
    assert!(
        admin(web).machines().await.is_empty(),
        "a preview saves nothing"
    );
    b.find(Locator::Id("import-apply")).await?.click().await?;
    let notice = until(10, "the machines list after apply", || async {
        Ok(b.find(Locator::Id("notice")).await.ok())
    })
    .await?;
    assert_eq!(
        notice.text().await?,
        "Import applied: 2 machine(s) created or updated."
    );
    let list = text(b, "table").await?;
    assert!(list.contains("imp-1") && list.contains("imp-2"), "{list}");
    let m = admin(web).machine("52:54:00:1e:00:01").await;
    assert_eq!(m["image"], "debian-12");
    assert_eq!(m["labels"], json!(["rack9"]));
    shot(b, "16-import-applied").await?;
    Ok(())
}
