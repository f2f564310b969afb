//! withcache's operator UI in real headless Chromium: log in, add a
//! catalog entry that points at a slow origin on loopback, start its
//! download, watch the progress bar move live without a page reload, see
//! the entry become cached, see a client's miss recorded, visit every page
//! (also phone-sized and dark), log out. Screenshots of each page go to
//! `target/ui-screenshots/wc-*.png`.

use std::time::{Duration, Instant};

use anyhow::bail;
use bty_testkit::browser::{self, js, path_is, text, until, Driver};
use bty_testkit::cache::Cache;
use bty_testkit::Origin;
use bty_ui_tests::{PASSWORD, USER};
use fantoccini::{Client, Locator};
use serde_json::json;

/// 3 MiB sent 48 KiB per 100 ms: about 6.5 s of download.
const IMAGE_LEN: usize = 3 << 20;
const CHUNK: usize = 48 << 10;

/// A screenshot named `wc-{name}`.
async fn shot(b: &Client, name: &str) -> anyhow::Result<()> {
    browser::shot(b, &format!("wc-{name}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withcache_walkthrough_in_chromium() -> anyhow::Result<()> {
    if !browser::present() {
        return Ok(());
    }
    let body: Vec<u8> = (0..IMAGE_LEN).map(|i| (i * 7 % 251) as u8).collect();
    let origin = bty_ui_tests::slow_origin(body, CHUNK, Duration::from_millis(100));
    let wc = bty_ui_tests::cache().await?;
    let driver = Driver::start().await?;
    let b = driver.browser().await?;
    let r = browser::conclude(&b, "wc-", walkthrough(&wc, &origin, &b).await).await;
    let _ = b.close().await;
    let r = match r {
        Ok(()) => dark(&wc, &driver).await,
        e => e,
    };
    wc.stop().await;
    r
}

async fn walkthrough(wc: &Cache, origin: &Origin, b: &Client) -> anyhow::Result<()> {
    // 1. Log in; a wrong password first shows the message.
    b.goto(&wc.url("/ui/misses")).await?;
    path_is(b, "/ui/login").await?;
    shot(b, "01-login").await?;
    b.find(Locator::Id("user")).await?.clear().await?;
    b.find(Locator::Id("user")).await?.send_keys(USER).await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys("wrong")
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    let err = until(10, "the login error", || async {
        Ok(text(b, "#login-error").await.ok())
    })
    .await?;
    assert_eq!(err, "Wrong user name or password.");
    b.find(Locator::Id("password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    b.find(Locator::Id("login")).await?.click().await?;
    // Back to the page asked for first.
    path_is(b, "/ui/misses").await?;

    // 2. Add an entry pointing at the slow origin; bad input first.
    b.goto(&wc.url("/ui/catalog")).await?;
    let src = origin.url("images/slow.img");
    b.find(Locator::Id("name"))
        .await?
        .send_keys("slow image")
        .await?;
    b.find(Locator::Id("src")).await?.send_keys(&src).await?;
    b.find(Locator::Id("add")).await?.click().await?;
    let msg = until(10, "the name's error", || async {
        Ok(text(b, "#err-name").await.ok())
    })
    .await?;
    assert!(msg.contains("Nothing was saved."), "{msg}");
    // The typed URL is still there; fix the name only.
    let kept = b.find(Locator::Id("src")).await?.prop("value").await?;
    assert_eq!(kept.as_deref(), Some(src.as_str()));
    shot(b, "02-catalog-bad-input").await?;
    let name = b.find(Locator::Id("name")).await?;
    name.clear().await?;
    name.send_keys("slow-image").await?;
    b.find(Locator::Id("add")).await?.click().await?;
    let notice = until(10, "the added notice", || async {
        Ok(text(b, "#notice").await.ok())
    })
    .await?;
    assert_eq!(notice, "Added slow-image.");
    assert_eq!(
        js(
            b,
            "return document.querySelector('#e-slow-image').dataset.state;"
        )
        .await?,
        json!("absent")
    );

    // 3. Start the download, then watch the bar move without a reload.
    b.find(Locator::Css("button[data-download='slow-image']"))
        .await?
        .click()
        .await?;
    until(10, "the download notice", || async {
        Ok(text(b, "#notice")
            .await
            .ok()
            .filter(|t| t.contains("download of slow-image started")))
    })
    .await?;
    js(b, "window.__noReload = 'still here'; return null;").await?;
    let t0 = Instant::now();
    let mut seen: Vec<f64> = Vec::new();
    let mut mid_shot = false;
    loop {
        let v = js(
            b,
            "const r = document.querySelector('#e-slow-image'); \
             const p = r && r.querySelector('progress'); \
             return [r ? r.dataset.state : null, p && p.hasAttribute('value') ? p.value : null];",
        )
        .await?;
        let state = v[0].as_str().unwrap_or("").to_string();
        if let Some(p) = v[1].as_f64() {
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            if !mid_shot && p > 20.0 {
                shot(b, "03-catalog-downloading").await?;
                mid_shot = true;
            }
        }
        if state == "cached" {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("not cached after 60 s; bar values seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "download watched for {:.1} s, bar values {seen:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        seen.len() >= 3,
        "the bar moved through too few values: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(
        js(b, "return window.__noReload;").await?,
        json!("still here"),
        "the page was reloaded"
    );
    let row = text(b, "#e-slow-image").await?;
    assert!(row.contains("cached"), "{row}");
    assert!(row.contains("3.0 MiB"), "{row}");
    assert!(row.contains("Download again"), "{row}");
    // The usage line followed too, live.
    let usage = text(b, "#usage").await?;
    assert!(usage.contains("3.0 MiB"), "{usage}");
    shot(b, "04-catalog-cached").await?;

    // 4. A client asks for a URL that is not in the catalog: a miss.
    let miss = origin.url("vendor/not-in-catalog.img");
    let r = reqwest::get(wc.blob(&miss)).await?;
    assert_eq!(r.status(), 404);
    b.goto(&wc.url("/ui/misses")).await?;
    let table = text(b, "#misses").await?;
    assert!(table.contains(&miss), "{table}");
    // Times are localised by the browser: the title keeps the original.
    until(5, "the miss time to be localised", || async {
        let t = js(
            b,
            "const t = document.querySelector('#misses time'); return t ? t.textContent : '';",
        )
        .await?;
        let t = t.as_str().unwrap_or("").to_string();
        Ok((!t.is_empty() && !t.ends_with("UTC")).then_some(t))
    })
    .await?;
    shot(b, "05-misses").await?;

    // 5. Events and settings.
    b.goto(&wc.url("/ui/events")).await?;
    let ev = text(b, "#events").await?;
    for kind in [
        "auth.login.failed",
        "auth.login.succeeded",
        "catalog.entry.added",
        "download.requested",
    ] {
        assert!(ev.contains(kind), "{kind} missing: {ev}");
    }
    shot(b, "06-events").await?;
    b.goto(&wc.url("/ui/settings")).await?;
    let storage = text(b, "#storage").await?;
    assert!(
        storage.contains(&wc.dir.path().display().to_string()),
        "{storage}"
    );
    assert!(storage.contains("1.0 GiB"), "{storage}");
    assert!(text(b, "#version").await?.starts_with("withcache "));
    shot(b, "07-settings").await?;

    // 6. Phone-sized: one column, nothing cut off sideways.
    b.set_window_size(390, 844).await?;
    b.goto(&wc.url("/ui/catalog")).await?;
    let overflow = js(
        b,
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
    )
    .await?;
    assert_eq!(
        overflow,
        json!(true),
        "the page scrolls sideways on a phone"
    );
    shot(b, "08-phone-catalog").await?;
    b.set_window_size(1280, 900).await?;

    // 7. Log out: back at the login page, and the pages are closed again.
    b.goto(&wc.url("/ui/catalog")).await?;
    b.find(Locator::Id("logout")).await?.click().await?;
    path_is(b, "/ui/login").await?;
    b.goto(&wc.url("/ui/settings")).await?;
    path_is(b, "/ui/login").await?;
    Ok(())
}

/// The same pages in the dark theme (Chromium told the system is dark).
async fn dark(wc: &Cache, driver: &Driver) -> anyhow::Result<()> {
    let b = driver.browser_with(&["--force-dark-mode"]).await?;
    let r = async {
        b.goto(&wc.url("/ui/login")).await?;
        let dark = js(
            &b,
            "return window.matchMedia('(prefers-color-scheme: dark)').matches;",
        )
        .await?;
        if dark != json!(true) {
            println!("this Chromium ignores --force-dark-mode; no dark screenshots");
            return Ok(());
        }
        let bg = js(
            &b,
            "return getComputedStyle(document.body).backgroundColor;",
        )
        .await?;
        assert_eq!(bg, json!("rgb(15, 20, 26)"), "the dark background");
        b.find(Locator::Id("password"))
            .await?
            .send_keys(PASSWORD)
            .await?;
        b.find(Locator::Id("login")).await?.click().await?;
        path_is(&b, "/ui/catalog").await?;
        shot(&b, "09-dark-catalog").await?;
        anyhow::Ok(())
    }
    .await;
    let _ = b.close().await;
    r
}
