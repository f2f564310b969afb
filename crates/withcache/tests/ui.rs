//! withcache's operator UI against the real server on 127.0.0.1: login,
//! logout and the guard, every form's bad input (a clear message, the
//! typed values back, nothing saved — checked through the JSON API), the
//! pages, and the catalog's live stream sending only the rows that change
//! while a real (slow) origin written here is downloaded.

use std::time::{Duration, Instant};

use bty_proto::catalog::blob_url;
use bty_testkit::cache::{Cache, CacheClient};
use bty_testkit::client::{cookie_pair, header, location, slashes, Fetch};
use bty_testkit::sse;
use bty_testkit::{data, sha256_hex as sha, Origin};

/// withcache with a 64 MiB quota and `password`.
async fn start(password: Option<&str>) -> Cache {
    Cache::start(|o| {
        o.admin_password = password.map(str::to_string);
        o.max_bytes = Some(64 << 20);
    })
    .await
}

/// Post a form as a browser does (no redirect followed): status, the
/// page, `Location`.
async fn post(wc: &CacheClient, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let (st, page, h) = wc.post_form(path, form).await;
    (st, page, location(&h))
}

#[tokio::test]
async fn ui_login_logout_guard_and_rate_limit() {
    let wc = start(Some("correct horse")).await;
    // Not logged in: pages send you to the login form and back afterwards.
    let r = wc.get("/ui/misses").fetch().await;
    assert_eq!(r.status(), 303);
    // The shared login flow keeps the path's slashes readable.
    assert_eq!(r.headers()["location"], "/ui/login?next=/ui/misses");
    let (st, page) = wc.page("/ui/login?next=%2Fui%2Fmisses").await;
    assert_eq!(st, 200);
    assert!(page.contains("Log in to withcache"), "{page}");
    assert!(page.contains("value=\"/ui/misses\""), "{page}");
    assert!(page.contains("href=\"/ui/static/app.css\""), "{page}");
    // A post without a session changes nothing and goes to the login.
    let (st, _, loc) = post(
        &wc,
        "/ui/catalog/add",
        &[("name", "x"), ("src", "http://127.0.0.1:9/x.img")],
    )
    .await;
    assert_eq!(st, 303);
    assert!(loc.starts_with("/ui/login"), "{loc}");
    assert!(wc.admin().entries().await.is_empty());
    // Wrong password: 401, the message, the typed user kept.
    let (st, page, _) = post(
        &wc,
        "/ui/login",
        &[
            ("user", "bty-lab"),
            ("password", "nope"),
            ("next", "/ui/misses"),
        ],
    )
    .await;
    assert_eq!(st, 401);
    assert!(page.contains("Wrong user name or password."), "{page}");
    assert!(page.contains("value=\"bty-lab\""), "{page}");
    // Right password: a session cookie and back to the page asked for.
    let r = wc
        .post("/ui/login")
        .form(&[
            ("user", "bty-lab"),
            ("password", "correct horse"),
            ("next", "/ui/misses"),
        ])
        .fetch()
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/misses");
    let cookie = cookie_pair(r.headers());
    let r = wc.get("/ui/misses").header("cookie", &cookie).fetch().await;
    assert_eq!(r.status(), 200);
    let page = slashes(r.text().await.unwrap());
    assert!(page.contains("id=\"logout\""), "{page}");
    assert!(page.contains("aria-current=\"page\">Misses<"), "{page}");
    // A cross-site form post is refused even with the session.
    let r = wc
        .post("/ui/catalog/add")
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("name", "x"), ("src", "http://127.0.0.1:9/x.img")])
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    assert!(wc.admin().entries().await.is_empty());
    // An open redirect through next is not possible.
    let r = wc
        .post("/ui/login")
        .form(&[
            ("user", "bty-lab"),
            ("password", "correct horse"),
            ("next", "//evil.example/ui/"),
        ])
        .fetch()
        .await;
    assert_eq!(r.headers()["location"], "/ui/catalog");
    // Logout clears the cookie.
    let r = wc
        .post("/ui/logout")
        .header("cookie", &cookie)
        .fetch()
        .await;
    assert_eq!(r.status(), 303);
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    // Guessing is slowed down, with a message that says so.
    let mut limited = None;
    for _ in 0..30 {
        let (st, page, _) = post(
            &wc,
            "/ui/login",
            &[("user", "bty-lab"), ("password", "guess")],
        )
        .await;
        if st == 429 {
            limited = Some(page);
            break;
        }
        assert_eq!(st, 401);
    }
    let page = limited.expect("30 wrong passwords were never rate-limited");
    assert!(page.contains("Too many failed logins"), "{page}");
    wc.stop().await;
}

#[tokio::test]
async fn ui_add_bad_input_saves_nothing() {
    let wc = start(None).await;
    let sha_ok = "a".repeat(64);
    // (form, message, field the message sits at)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("src", "http://127.0.0.1:9/a.img")],
            "name: required",
            "name",
        ),
        (
            &[("name", "two words"), ("src", "http://127.0.0.1:9/a.img")],
            "image:",
            "name",
        ),
        (&[("name", "a")], "src: required", "src"),
        (
            &[("name", "a"), ("src", "ftp://127.0.0.1/a.img")],
            "src:",
            "src",
        ),
        (
            &[
                ("name", "a"),
                ("src", "http://127.0.0.1:9/a.img"),
                ("sha256", "xyz"),
            ],
            "sha256:",
            "sha256",
        ),
        (
            &[
                ("name", "a"),
                ("src", "http://127.0.0.1:9/a.img"),
                ("size", "lots"),
            ],
            "size:",
            "size",
        ),
        (
            &[
                ("name", "a"),
                ("src", "http://127.0.0.1:9/a.img"),
                ("format", "zip"),
            ],
            "format:",
            "format",
        ),
    ];
    for (form, msg, field) in cases {
        let (st, page, _) = post(&wc, "/ui/catalog/add", form).await;
        assert_eq!(st, 400, "{form:?}: {page}");
        assert!(page.contains(msg), "{form:?}: wants {msg:?} in {page}");
        assert!(page.contains("Nothing was saved."), "{form:?}: {page}");
        assert!(
            page.contains(&format!("id=\"err-{field}\"")),
            "{form:?}: the message sits at field {field}: {page}"
        );
        // The typed values come back for correction.
        for (k, v) in form.iter().filter(|(k, _)| *k != "format") {
            assert!(
                page.contains(&format!("value=\"{v}\"")),
                "{form:?}: {k} not kept: {page}"
            );
        }
        assert!(
            wc.admin().entries().await.is_empty(),
            "{form:?} saved something"
        );
    }
    // A good entry, then the same name again: 409, the first one intact.
    let (st, _, loc) = post(
        &wc,
        "/ui/catalog/add",
        &[
            ("name", "debian-12"),
            ("src", "http://127.0.0.1:9/debian-12.img.zst"),
            ("sha256", &sha_ok),
            ("size", "2K"),
            ("pinned", "on"),
        ],
    )
    .await;
    assert_eq!(st, 303);
    assert_eq!(loc, "/ui/catalog?done=added&what=debian-12");
    let (_, page) = wc.page(&loc).await;
    assert!(page.contains("Added debian-12."), "{page}");
    let (st, page, _) = post(
        &wc,
        "/ui/catalog/add",
        &[
            ("name", "debian-12"),
            ("src", "http://127.0.0.1:9/other.img"),
        ],
    )
    .await;
    assert_eq!(st, 409);
    assert!(page.contains("exists already"), "{page}");
    let e = wc.admin().entries().await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["src"], "http://127.0.0.1:9/debian-12.img.zst");
    assert_eq!(e[0]["size"], 2048);
    assert_eq!(e[0]["format"], "img.zst");
    assert_eq!(e[0]["pinned"], true);
    assert_eq!(e[0]["sha256"], sha_ok.as_str());
    wc.stop().await;
}

#[tokio::test]
async fn ui_other_forms_report_bad_input() {
    let wc = start(None).await;
    let (st, page, _) = post(&wc, "/ui/catalog/download", &[("name", "nope")]).await;
    assert_eq!(st, 404);
    assert!(page.contains("no catalog entry named"), "{page}");
    let (st, page, _) = post(&wc, "/ui/catalog/delete", &[("name", "nope")]).await;
    assert_eq!(st, 404);
    assert!(page.contains("Nothing was deleted."), "{page}");
    let (st, page, _) = post(&wc, "/ui/catalog/import", &[("url", "")]).await;
    assert_eq!(st, 400);
    assert!(page.contains("url: required"), "{page}");
    // Port 9 on loopback: nothing listens there.
    let (st, page, _) = post(
        &wc,
        "/ui/catalog/import",
        &[("url", "http://127.0.0.1:9/catalog.toml")],
    )
    .await;
    assert_eq!(st, 502);
    assert!(page.contains("fetching the catalog"), "{page}");
    assert!(
        page.contains("value=\"http://127.0.0.1:9/catalog.toml\""),
        "{page}"
    );
    let (st, page, _) = post(&wc, "/ui/misses/fetch", &[("url", "not a url")]).await;
    assert_eq!(st, 400);
    assert!(page.contains("url:"), "{page}");
    let (st, page, _) = post(
        &wc,
        "/ui/misses/dismiss",
        &[("url", "http://127.0.0.1:9/x")],
    )
    .await;
    assert_eq!(st, 404);
    assert!(page.contains("No miss is recorded"), "{page}");
    // A form with no fields at all is a message, not a framework error.
    let (st, page, _) = post(&wc, "/ui/catalog/add", &[]).await;
    assert_eq!(st, 400);
    assert!(page.contains("name: required"), "{page}");
    assert!(wc.admin().entries().await.is_empty());
    let (st, page) = wc.page("/ui/events?before=abc").await;
    assert_eq!(st, 200);
    assert!(page.contains("is not a number"), "{page}");
    wc.stop().await;
}

#[tokio::test]
async fn ui_pages_misses_import_events_and_settings() {
    let body = data(20_000, 7);
    let origin = Origin::start(body.clone());
    let wc = start(None).await;
    // A client asks for an unknown URL: a miss on the Misses page.
    let src = origin.url("vendor/tool.img");
    let r = wc.http.get(blob_url(&wc.base, &src)).fetch().await;
    assert_eq!(r.status(), 404);
    let (st, page) = wc.page("/ui/misses").await;
    assert_eq!(st, 200);
    assert!(page.contains(&src), "{page}");
    // One click adds it and downloads it.
    let (st, _, loc) = post(&wc, "/ui/misses/fetch", &[("url", &src)]).await;
    assert_eq!(st, 303);
    assert!(loc.starts_with("/ui/catalog?done=promoted"), "{loc}");
    let name = wc.admin().entries().await[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Instant::now();
    while wc.state(&name).await != "cached" {
        assert!(t.elapsed() < Duration::from_secs(20), "never cached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = wc.page("/ui/catalog").await;
    assert!(
        page.contains(&format!("sha256 {}", &sha(&body)[..12])),
        "{page}"
    );
    assert!(page.contains("Download again"), "{page}");
    // Once cached it is no longer a miss.
    let (_, page) = wc.page("/ui/misses").await;
    assert!(page.contains("No misses."), "{page}");
    // Another miss, dismissed.
    let other = origin.url("vendor/other.img");
    wc.http.get(blob_url(&wc.base, &other)).fetch().await;
    let (_, page) = wc.page("/ui/misses").await;
    assert!(page.contains(&other), "{page}");
    let (st, _, loc) = post(&wc, "/ui/misses/dismiss", &[("url", &other)]).await;
    assert_eq!((st, loc.as_str()), (303, "/ui/misses?done=dismissed&what="));
    let (_, page) = wc.page(&loc).await;
    assert!(page.contains("Dismissed the miss."), "{page}");
    assert!(page.contains("No misses."), "{page}");
    assert!(
        wc.admin().entries().await.len() == 1,
        "dismissing adds nothing"
    );
    // Import a catalog served by the origin.
    origin.with(|c| {
        c.body = format!(
            "version = 1\n[[images]]\nname = \"alpine\"\nsrc = \"{}\"\n",
            origin.url("alpine.img.gz")
        )
        .into()
    });
    let (st, _, loc) = post(
        &wc,
        "/ui/catalog/import",
        &[("url", &origin.url("catalog.toml"))],
    )
    .await;
    assert_eq!(st, 303, "{loc}");
    let (_, page) = wc.page(&loc).await;
    assert!(page.contains("Imported the catalog: 1 added"), "{page}");
    assert!(page.contains("id=\"e-alpine\""), "{page}");
    // Delete it again.
    let (st, _, _) = post(&wc, "/ui/catalog/delete", &[("name", "alpine")]).await;
    assert_eq!(st, 303);
    assert_eq!(wc.admin().entries().await.len(), 1);
    // Events: everything above, searchable.
    let (_, page) = wc.page("/ui/events").await;
    for kind in [
        "catalog.entry.added",
        "catalog.imported",
        "catalog.entry.deleted",
    ] {
        assert!(page.contains(kind), "{kind}: {page}");
    }
    let (_, page) = wc.page("/ui/events?q=imported").await;
    assert!(page.contains("catalog.imported"), "{page}");
    assert!(!page.contains("catalog.entry.deleted"), "{page}");
    // Settings: where the data is, the quota, the limits, the version.
    let (st, page) = wc.page("/ui/settings").await;
    assert_eq!(st, 200);
    assert!(page.contains("64.0 MiB"), "{page}");
    assert!(page.contains("Free on the file system"), "{page}");
    assert!(
        page.contains(&format!("withcache {}", env!("CARGO_PKG_VERSION"))),
        "{page}"
    );
    assert!(page.contains("No admin password is set"), "{page}");
    // The kit's withcache allows loopback origins, and the page says so.
    assert!(page.contains(r#"id="private-origins">allowed"#), "{page}");
    // The shared assets.
    let r = wc.get("/ui/static/app.css").fetch().await;
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("prefers-color-scheme: dark"));
    let (st, _) = wc.page("/ui/static/nope.js").await;
    assert_eq!(st, 404);
    wc.stop().await;
}

#[tokio::test]
async fn ui_catalog_stream_sends_only_changed_rows() {
    // 1 MiB in 32 KiB chunks every 100 ms: about 3 s of download.
    let body = data(1 << 20, 11);
    let origin = Origin::start(body.clone());
    origin.with(|c| {
        c.chunk = 32 << 10;
        c.delay = Duration::from_millis(100);
    });
    let wc = start(None).await;
    for (name, path) in [("slow", "slow.img"), ("idle", "idle.img")] {
        let (st, page, _) = post(
            &wc,
            "/ui/catalog/add",
            &[
                ("name", name),
                ("src", &origin.url(path)),
                ("sha256", &sha(&body)),
            ],
        )
        .await;
        assert_eq!(st, 303, "{page}");
    }
    let resp = wc.get("/ui/catalog/live").fetch().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (st, _, loc) = post(&wc, "/ui/catalog/download", &[("name", "slow")]).await;
    assert_eq!(
        (st, loc.as_str()),
        (303, "/ui/catalog?done=download&what=slow")
    );
    // Without JavaScript the page refreshes itself while downloads run.
    let (_, page) = wc.page(&loc).await;
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"),
        "{page}"
    );
    assert!(page.contains("The download of slow started."), "{page}");
    let t = Instant::now();
    let mut stream = sse::Reader::new(resp);
    let events = stream
        .collect(Duration::from_secs(30), |name, data| {
            name == "row-slow" && data.contains("data-state=\"cached\"")
        })
        .await;
    let bytes = stream.bytes;
    let events: Vec<(String, String)> = events.into_iter().map(|e| (e.name, e.data)).collect();
    let secs = t.elapsed().as_secs_f64();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        events
            .last()
            .is_some_and(|(n, d)| n == "row-slow" && d.contains("data-state=\"cached\"")),
        "the row never turned cached: {names:?}"
    );
    assert!(
        !names.contains(&"row-idle"),
        "an unchanged row was sent: {names:?}"
    );
    // The bar moved through several values before it was done.
    let pcts: Vec<u64> = events
        .iter()
        .filter(|(n, d)| n == "row-slow" && d.contains("<progress"))
        .filter_map(|(_, d)| {
            let v = d.split("value=\"").nth(1)?.split('"').next()?;
            v.parse().ok()
        })
        .collect();
    assert!(pcts.len() >= 3, "too few progress updates: {pcts:?}");
    assert!(pcts.windows(2).all(|w| w[0] <= w[1]), "{pcts:?}");
    assert!(*pcts.first().unwrap() < 50, "{pcts:?}");
    assert!(names.contains(&"usage"), "{names:?}");
    // Each event is one row, not the table: small and bounded.
    for (n, d) in &events {
        assert!(d.len() < 3000, "{n} is {} bytes", d.len());
        assert!(!d.contains("<table"), "{n} carries a table");
    }
    let rate = bytes as f64 / secs;
    println!(
        "catalog stream: {} events, {bytes} bytes in {secs:.1} s = {rate:.0} B/s",
        events.len()
    );
    assert!(rate < 10_000.0, "{rate} B/s for one download");
    assert_eq!(wc.state("slow").await, "cached");
    wc.stop().await;
}

#[tokio::test]
async fn ui_catalog_stream_tells_once_when_entries_change_elsewhere() {
    let wc = start(None).await;
    let (st, _, _) = post(
        &wc,
        "/ui/catalog/add",
        &[("name", "first"), ("src", "http://127.0.0.1:9/first.img")],
    )
    .await;
    assert_eq!(st, 303);
    let resp = wc.get("/ui/catalog/live").fetch().await;
    // Someone else adds two entries through the API.
    for n in ["second", "third"] {
        let (st, _) = wc
            .post_json(
                "/catalog/entries",
                &serde_json::json!({"name": n, "src": format!("http://127.0.0.1:9/{n}.img")}),
            )
            .await;
        assert_eq!(st, 201);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let events: Vec<(String, String)> = sse::Reader::new(resp)
        .collect(Duration::from_secs(2), |_, _| false)
        .await
        .into_iter()
        .map(|e| (e.name, e.data))
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["notice"], "one notice, no rows: {events:?}");
    assert!(events[0].1.contains("reload"), "{events:?}");
    wc.stop().await;
}
