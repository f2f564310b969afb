//! withcache integration tests: the real server on 127.0.0.1, a real
//! origin written here (`origin.rs`) with fault injection, real SQLite in a
//! temp dir, real HTTP clients.

mod hostile_lan;
mod issue_11;
mod private_origins;
mod token;
mod upstream;

use std::time::Duration;

use bty_testkit::cache::Cache;
use bty_testkit::client::{cookie_pair, header, Fetch};
use bty_testkit::{data, sha256_hex as sha, Fault, Origin};
use bytes::Bytes;
use serde_json::{json, Value};

/// A withcache whose fetches give up and retry within milliseconds (so a
/// fault costs little time), changed by `f`.
async fn start(f: impl FnOnce(&mut withcache::Options)) -> Cache {
    start_in(tempfile::tempdir().unwrap(), f).await
}

/// [`start`] on an existing data dir.
async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut withcache::Options)) -> Cache {
    Cache::start_in(dir, |o| {
        o.fetch.retry_base_delay = Duration::from_millis(20);
        o.fetch.read_timeout = Duration::from_millis(800);
        o.fetch.max_attempts = 5;
        f(o)
    })
    .await
}

/// GET a URL and return the body, or Err if the transfer failed.
async fn get_body(
    http: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::StatusCode, http::HeaderMap, Bytes), String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.bytes().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, headers, body))
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn cached_blob_headers_ranges_and_conditionals_on_both_paths() {
    let body = data(300_000, 1);
    let truth = sha(&body);
    let origin = Origin::start(body.clone());
    // withcache answers octet-stream whatever the origin said.
    origin.with(|c| c.content_type = "text/html");
    for sendfile in [true, false] {
        let wc = start(|o| o.sendfile = sendfile).await;
        let src = origin.url("img/disk.img");
        let r = wc.add(json!({"name": "disk", "src": src})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        wc.download("disk").await;
        let url = wc.blob(&src);
        let etag = format!("\"{truth}\"");

        let (st, h, b) = get_body(&wc.http, &url).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(sha(&b), truth);
        assert_eq!(h["content-length"], "300000");
        assert_eq!(h["content-type"], "application/octet-stream");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-withcache-sha256"], truth.as_str());
        assert_eq!(h["etag"], etag.as_str());
        assert_eq!(h["accept-ranges"], "bytes");

        // HEAD: same headers, no body; does not count as a hit.
        let hits = wc.metric("hits_total").await;
        let r = wc.http.head(&url).fetch().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "300000");
        assert_eq!(r.headers()["etag"], etag.as_str());
        assert!(r.bytes().await.unwrap().is_empty());
        assert_eq!(wc.metric("hits_total").await, hits);

        let range = |spec: &'static str| {
            let (http, url) = (wc.http.clone(), url.clone());
            async move {
                let r = http.get(&url).header("range", spec).fetch().await;
                let st = r.status();
                let cr = r
                    .headers()
                    .get("content-range")
                    .map(|v| v.to_str().unwrap().to_string());
                (st, cr, r.bytes().await.unwrap())
            }
        };
        let (st, cr, b) = range("bytes=0-0").await;
        assert_eq!(
            (st.as_u16(), cr.as_deref()),
            (206, Some("bytes 0-0/300000"))
        );
        assert_eq!(&b[..], &body[..1]);
        let (st, cr, b) = range("bytes=-100").await;
        assert_eq!(
            (st.as_u16(), cr.as_deref()),
            (206, Some("bytes 299900-299999/300000"))
        );
        assert_eq!(&b[..], &body[299_900..]);
        let (st, _, b) = range("bytes=1000-").await;
        assert_eq!(st, 206);
        assert_eq!(&b[..], &body[1000..]);
        let (st, cr, b) = range("bytes=299999-400000").await;
        assert_eq!(
            (st.as_u16(), cr.as_deref()),
            (206, Some("bytes 299999-299999/300000"))
        );
        assert_eq!(b.len(), 1);
        let (st, cr, b) = range("bytes=300000-").await;
        assert_eq!((st.as_u16(), cr.as_deref()), (416, Some("bytes */300000")));
        assert!(b.is_empty());
        let (st, _, b) = range("bytes=0-1,5-6").await;
        assert_eq!(st, 200);
        assert_eq!(sha(&b), truth);

        // If-Range: stale tag → full body; current tag → the range.
        let r = wc
            .http
            .get(&url)
            .header("range", "bytes=0-9")
            .header("if-range", "\"stale\"")
            .fetch()
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 300_000);
        let r = wc
            .http
            .get(&url)
            .header("range", "bytes=0-9")
            .header("if-range", &etag)
            .fetch()
            .await;
        assert_eq!(r.status(), 206);
        assert_eq!(&r.bytes().await.unwrap()[..], &body[..10]);
        // If-None-Match.
        let r = wc
            .http
            .get(&url)
            .header("if-none-match", &etag)
            .fetch()
            .await;
        assert_eq!(r.status(), 304);
        let r = wc
            .http
            .get(&url)
            .header("if-none-match", "\"other\"")
            .fetch()
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 300_000);
        // The legacy query shape.
        let (st, _, b) = get_body(&wc.http, &wc.url(&format!("/blob?url={}", urlencode(&src))))
            .await
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(sha(&b), truth);
        // Keep-alive: several requests on one connection (the fast path
        // loops; the generic path is hyper's).
        let one = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        for _ in 0..3 {
            let (st, _, b) = get_body(&one, &url).await.unwrap();
            assert_eq!(st, 200);
            assert_eq!(sha(&b), truth);
        }
        assert!(wc.metric("bytes_served_total").await >= 300_000 * 5);
        wc.stop().await;
    }
    assert_eq!(origin.requests(), 2, "one download per instance");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn single_flight_32_clients_on_a_cold_entry_read_while_fetch() {
    for sendfile in [true, false] {
        let body = data(4 << 20, 2);
        let truth = sha(&body);
        let origin = Origin::start(body.clone());
        // A slow origin so clients join while the download runs.
        origin.with(|c| {
            c.chunk = 128 << 10;
            c.delay = Duration::from_millis(15);
        });
        let wc = start(|o| o.sendfile = sendfile).await;
        let src = origin.url("big.img");
        let r = wc
            .add(json!({"name": "big", "src": src, "sha256": truth, "size": body.len()}))
            .await;
        assert_eq!(r.status(), 201);
        let url = wc.blob(&src);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let http = reqwest::Client::new();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                get_body(&http, &url).await
            }));
        }
        let mut streamed = 0;
        for t in tasks {
            let (st, h, b) = t.await.unwrap().expect("every client gets the bytes");
            assert_eq!(st, 200);
            assert_eq!(b.len(), body.len());
            assert_eq!(sha(&b), truth, "no client ever gets corrupt bytes");
            assert_eq!(h["content-length"], body.len().to_string().as_str());
            if h.get("x-withcache-state").is_some() {
                streamed += 1;
            }
        }
        assert_eq!(origin.requests(), 1, "the origin is hit exactly once");
        assert!(
            streamed >= 16,
            "clients were streamed during the download ({streamed})"
        );
        assert_eq!(wc.metric("downloads_started_total").await, 1);
        assert_eq!(wc.metric("downloads_completed_total").await, 1);
        assert_eq!(wc.metric("origin_bytes_total").await, body.len() as u64);
        wc.stop().await;
    }
}

#[tokio::test]
async fn resume_after_dropped_connection_and_after_stall() {
    for sendfile in [true, false] {
        let body = data(1 << 20, 3);
        let truth = sha(&body);
        for fault in [
            Fault::Drop(300_000),
            Fault::Stall(300_000),
            Fault::Lie(200_000),
        ] {
            let origin = Origin::start(body.clone());
            origin.with(|c| {
                c.faults.push_back(fault);
                c.faults.push_back(Fault::Drop(100_000));
                c.delay = Duration::from_millis(2);
            });
            let wc = start(|o| {
                o.fetch.read_timeout = Duration::from_millis(300);
                o.sendfile = sendfile;
            })
            .await;
            let src = origin.url("r.img");
            wc.add(json!({"name": "r", "src": src})).await;
            // A client streams from the start while the download resumes.
            let (st, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
            assert_eq!(st, 200);
            assert_eq!(sha(&b), truth, "{fault:?}");
            wc.wait_cached("r").await;
            assert_eq!(origin.requests(), 3, "{fault:?}: first + two resumes");
            assert_eq!(origin.range_requests(), 2, "{fault:?}");
            assert_eq!(
                wc.metric("origin_bytes_total").await,
                body.len() as u64,
                "{fault:?}: resumed, not restarted"
            );
            let (_, h, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
            assert_eq!(h["x-withcache-sha256"], truth.as_str());
            assert_eq!(sha(&b), truth);
            wc.stop().await;
        }
    }
}

#[tokio::test]
async fn origin_without_range_support_is_read_past_when_unchanged() {
    let body = data(1 << 20, 4);
    let truth = sha(&body);
    let origin = Origin::start(body.clone());
    origin.with(|c| {
        c.ranges = false;
        c.faults.push_back(Fault::Drop(400_000));
        c.delay = Duration::from_millis(2);
    });
    let wc = start(|_| {}).await;
    let src = origin.url("norange.img");
    wc.add(json!({"name": "n", "src": src})).await;
    let (st, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha(&b), truth, "same ETag: the restart skips what we have");
    wc.wait_cached("n").await;
    assert_eq!(origin.requests(), 2);
    wc.stop().await;
}

#[tokio::test]
async fn origin_changing_mid_resume_restarts_and_never_splices() {
    for sendfile in [true, false] {
        let old = data(1 << 20, 5);
        let new = data(1 << 20, 6);
        let origin = Origin::start(old.clone());
        origin.with(|c| {
            c.faults.push_back(Fault::Drop(500_000));
            c.swap_after_first = Some(new.clone());
            c.delay = Duration::from_millis(2);
        });
        let wc = start(|o| o.sendfile = sendfile).await;
        let src = origin.url("moving.img");
        wc.add(json!({"name": "m", "src": src})).await;
        // This client started on the old version: it must fail, not get a mix.
        match get_body(&wc.http, &wc.blob(&src)).await {
            Err(_) => {}
            Ok((st, _, b)) => {
                assert_eq!(st, 200);
                assert_eq!(sha(&b), sha(&new), "never old bytes spliced with new ones");
            }
        }
        wc.wait_cached("m").await;
        let (_, h, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
        assert_eq!(sha(&b), sha(&new));
        assert_eq!(h["x-withcache-sha256"], sha(&new).as_str());
        // The resume carried If-Range; the origin answered with the new
        // version in full (200), so the download restarted from zero.
        assert_eq!(origin.requests(), 2);
        wc.stop().await;
    }
}

#[tokio::test]
async fn sha_mismatch_and_lying_origin_are_never_servable() {
    let body = data(600_000, 7);
    let origin = Origin::start(body.clone());
    origin.with(|c| c.delay = Duration::from_millis(2));
    let wc = start(|_| {}).await;
    let src = origin.url("bad.img");
    let wrong = "0".repeat(64);
    wc.add(json!({"name": "bad", "src": src, "sha256": wrong}))
        .await;
    // Streaming client: must get an error, never a complete 200 body.
    let got = get_body(&wc.http, &wc.blob(&src)).await;
    match got {
        Err(_) => {}
        Ok((st, _, b)) => assert!(
            st != 200 || b.len() < body.len(),
            "a mismatching download was delivered as complete"
        ),
    }
    // Nothing cached, nothing in /catalog, a failure event.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cat: Value = wc.get("/catalog").fetch().await.json().await.unwrap();
    assert_eq!(cat["entries"], json!([]));
    let blobs: Value = wc.get("/blobs").fetch().await.json().await.unwrap();
    assert_eq!(blobs["blobs"], json!([]));
    assert_eq!(blobs["reserved_bytes"], 0);
    assert!(wc
        .events()
        .await
        .iter()
        .any(|e| e["kind"] == "download.failed"
            && e["summary"].as_str().unwrap().contains("sha256 mismatch")));
    assert_eq!(wc.metric("downloads_failed_total").await, 1);
    let tmp = std::fs::read_dir(wc.dir.path().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the temp file is removed");

    // An origin that always sends less than it declares.
    let liar = Origin::start(body.clone());
    liar.with(|c| c.always = Fault::Lie(100_000));
    let src = liar.url("liar.img");
    wc.add(json!({"name": "liar", "src": src})).await;
    match get_body(&wc.http, &wc.blob(&src)).await {
        Err(_) => {}
        Ok((st, _, b)) => assert!(st != 200 || b.len() < body.len()),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wc.entry("liar").await["state"], "absent");
    assert_eq!(liar.requests(), 5, "bounded retries");
    // A catalog size that disagrees with the origin is refused up front.
    let sized = Origin::start(body.clone());
    let src = sized.url("sized.img");
    wc.add(json!({"name": "sized", "src": src, "size": 5}))
        .await;
    let r = wc.http.get(wc.blob(&src)).fetch().await;
    assert_eq!(r.status(), 502);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("differs from the catalog size"));
    wc.stop().await;
}

#[tokio::test]
async fn quota_evicts_lru_keeps_pinned_and_reports_full() {
    let a = data(100_000, 10);
    let b = data(100_000, 11);
    let c = data(100_000, 12);
    let big = data(400_000, 13);
    let (oa, ob, oc, obig) = (
        Origin::start(a.clone()),
        Origin::start(b.clone()),
        Origin::start(c.clone()),
        Origin::start(big.clone()),
    );
    let wc = start(|o| o.max_bytes = Some(250_000)).await;
    wc.add(json!({"name": "a", "src": oa.url("a")})).await;
    wc.add(json!({"name": "b", "src": ob.url("b")})).await;
    wc.add(json!({"name": "c", "src": oc.url("c"), "pinned": true}))
        .await;
    wc.add(json!({"name": "big", "src": obig.url("big")})).await;
    wc.download("a").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    wc.download("b").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Touch a: b is now least recently used.
    get_body(&wc.http, &wc.blob(&oa.url("a"))).await.unwrap();
    wc.download("c").await;
    assert_eq!(wc.entry("b").await["state"], "absent", "LRU evicted");
    assert_eq!(wc.entry("a").await["state"], "cached");
    assert_eq!(wc.metric("evictions_total").await, 1);
    // Bigger than the quota: clear error, nothing evicted.
    let r = wc.http.get(wc.blob(&obig.url("big"))).fetch().await;
    assert_eq!(r.status(), 507);
    assert!(r.text().await.unwrap().contains("--max-bytes"));
    // Fill with a (unpinned) + c (pinned); then b needs room: a goes, c stays.
    wc.download("b").await;
    assert_eq!(wc.entry("a").await["state"], "absent");
    assert_eq!(wc.entry("c").await["state"], "cached", "pinned is kept");
    // Two pinned entries fill the quota: "full".
    let (st, _) = wc
        .send_json(
            reqwest::Method::PUT,
            "/catalog/entries/b",
            Some(&json!({"src": ob.url("b"), "pinned": true})),
        )
        .await;
    assert_eq!(st, 200);
    let od = Origin::start(data(100_000, 14));
    wc.add(json!({"name": "d", "src": od.url("d")})).await;
    let r = wc.http.get(wc.blob(&od.url("d"))).fetch().await;
    assert_eq!(r.status(), 507);
    let text = r.text().await.unwrap();
    assert!(text.contains("cache full"), "{text}");
    let (used, _, _) = {
        let v: Value = wc.get("/blobs").fetch().await.json().await.unwrap();
        (v["used_bytes"].as_u64().unwrap(), 0, 0)
    };
    assert!(used <= 250_000);
    wc.stop().await;
}

#[tokio::test]
async fn only_http_and_https_origins() {
    let wc = start(|_| {}).await;
    for bad in [
        "file:///etc/passwd",
        "ftp://h/x.img",
        "gopher://h/x",
        "/etc/passwd",
    ] {
        let r = wc.add(json!({"name": "x", "src": bad})).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.text().await.unwrap().contains("http"));
        let r = wc.http.get(wc.blob(bad)).fetch().await;
        assert_eq!(r.status(), 400, "{bad}");
        let r = wc
            .get(&format!("/blob?url={}", urlencode(bad)))
            .fetch()
            .await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = wc.get("/b/!!!/x").fetch().await;
    assert_eq!(r.status(), 400);
    let r = wc.get("/blob").fetch().await;
    assert_eq!(r.status(), 400);
    // Import refuses non-http URLs too.
    let (st, _) = wc
        .post_json("/catalog/import", &json!({"url": "file:///etc/passwd"}))
        .await;
    assert_eq!(st, 400);
    wc.stop().await;
}

#[tokio::test]
async fn catalog_name_rules_and_bad_bodies() {
    let wc = start(|_| {}).await;
    let src = "http://127.0.0.1:9/x.img";
    for (body, why) in [
        (json!({"name": "has space", "src": src}), "image"),
        (json!({"name": "a/b", "src": src}), "image"),
        (json!({"name": ".hidden", "src": src}), "image"),
        (json!({"name": "a$b", "src": src}), "image"),
        (json!({"name": "x".repeat(129), "src": src}), "image"),
        (json!({"name": "", "src": src}), "image"),
        (json!({"src": src}), "name"),
        (json!({"name": "ok"}), "src"),
        (json!({"name": "ok", "src": src, "colour": 1}), "colour"),
        (json!({"name": "ok", "src": src, "sha256": "abc"}), "sha256"),
        (json!({"name": "ok", "src": src, "format": "tar"}), "format"),
        (json!({"name": "ok", "src": src, "size": -1}), "JSON"),
        (json!([1, 2]), "JSON"),
    ] {
        let r = wc.add(body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(why), "{body}: {text}");
    }
    let r = wc.post("/catalog/entries").body("not json").fetch().await;
    assert_eq!(r.status(), 400);
    let r = wc
        .add(json!({"name": "debian-12+b1_x86.img.zst", "src": src, "size_bytes": 7, "arch": "x86_64"}))
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["format"], "img",
        "guessed from the source URL, not the name"
    );
    let r = wc
        .add(json!({"name": "debian-12+b1_x86.img.zst", "src": src}))
        .await;
    assert_eq!(r.status(), 409);
    let (st, _) = wc
        .send_json(
            reqwest::Method::PUT,
            "/catalog/entries/debian-12+b1_x86.img.zst",
            Some(&json!({"name": "other", "src": src})),
        )
        .await;
    assert_eq!(st, 400);
    let r = wc.delete("/catalog/entries/nope").fetch().await;
    assert_eq!(r.status(), 404);
    let r = wc
        .delete("/catalog/entries/debian-12+b1_x86.img.zst")
        .fetch()
        .await;
    assert_eq!(r.status(), 204);
    wc.stop().await;
}

#[tokio::test]
async fn import_merges_and_never_drops_operator_entries() {
    let wc = start(|_| {}).await;
    let r = wc
        .add(json!({"name": "mine", "src": "http://127.0.0.1:9/mine.img"}))
        .await;
    assert_eq!(r.status(), 201);
    let toml1 = r#"version = 1
[[images]]
name = "mine"
src = "http://127.0.0.1:9/theirs.img"
[[images]]
name = "deb"
src = "http://127.0.0.1:9/deb.img.zst"
size_bytes = 10
netboot_ref = "ignored"
[[images]]
name = "bad name"
src = "http://127.0.0.1:9/x.img"
"#;
    let import = |body: String| {
        let wc_http = wc.http.clone();
        let url = wc.url("/catalog/import");
        async move {
            let r = wc_http
                .post(url)
                .header("content-type", "application/toml")
                .body(body)
                .fetch()
                .await;
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, rep) = import(toml1.into()).await;
    assert_eq!(st, 200);
    assert_eq!(rep["added"], json!(["deb"]));
    assert_eq!(rep["kept_operator"], json!(["mine"]));
    assert_eq!(rep["rejected"][0]["name"], "bad name");
    assert_eq!(
        wc.entry("mine").await["src"],
        "http://127.0.0.1:9/mine.img",
        "operator entry untouched"
    );
    // A later catalog without "deb" and with a changed entry: update, no delete.
    let toml2 = "version = 1\n[[images]]\nname = \"new\"\nsrc = \"http://127.0.0.1:9/n.img\"\n";
    let (_, rep) = import(toml2.into()).await;
    assert_eq!(rep["added"], json!(["new"]));
    assert_eq!(wc.entry("deb").await["size"], 10, "never deleted");
    let toml3 = "version = 1\n[[images]]\nname = \"deb\"\nsrc = \"http://127.0.0.1:9/deb2.img\"\n";
    let (_, rep) = import(toml3.into()).await;
    assert_eq!(rep["updated"], json!(["deb"]));
    let (st, _) = import("version = 2\n".into()).await;
    assert_eq!(st, 400);
    let (st, _) = import("<html>oops</html>".into()).await;
    assert_eq!(st, 400);
    // From a URL.
    let origin = Origin::start(Bytes::from(
        "version = 1\n[[images]]\nname = \"remote\"\nsrc = \"http://127.0.0.1:9/r.img\"\n",
    ));
    let r = wc
        .post("/catalog/import")
        .json(&json!({"url": origin.url("catalog.toml")}))
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["added"], json!(["remote"]));
    let all: Vec<Value> = wc
        .get("/catalog/entries")
        .fetch()
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<_> = all.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["deb", "mine", "new", "remote"]);
    wc.stop().await;
}

#[tokio::test]
async fn auth_open_plain_and_hash() {
    let body = data(1000, 20);
    let origin = Origin::start(body.clone());
    let src = origin.url("auth.img");
    // Open: writes work without credentials.
    let wc = start(|_| {}).await;
    assert_eq!(wc.add(json!({"name": "a", "src": src})).await.status(), 201);
    let r = wc.get("/ui/catalog").fetch().await;
    assert_eq!(r.status(), 200);
    wc.stop().await;

    let hash = bty_auth::hash_password("s3cret-pw").unwrap();
    for (plain, hash) in [(Some("s3cret-pw".to_string()), None), (None, Some(hash))] {
        let wc = start(|o| {
            o.admin_password = plain.clone();
            o.admin_password_hash = hash.clone();
            o.admin_user = "ops".into();
        })
        .await;
        let r = wc.add(json!({"name": "a", "src": src})).await;
        assert_eq!(r.status(), 401);
        assert!(header(r.headers(), "www-authenticate").starts_with("Basic"));
        let post = |user: &str, pw: &str| {
            wc.post("/catalog/entries")
                .basic_auth(user, Some(pw))
                .json(&json!({"name": "a", "src": src}))
                .send()
        };
        assert_eq!(post("ops", "wrong").await.unwrap().status(), 401);
        assert_eq!(post("bty-lab", "s3cret-pw").await.unwrap().status(), 401);
        assert_eq!(post("ops", "s3cret-pw").await.unwrap().status(), 201);
        for p in [
            "/events",
            "/misses",
            "/blobs",
            "/catalog/entries",
            "/downloads",
        ] {
            let r = wc.get(p).fetch().await;
            assert_eq!(r.status(), 401, "{p}");
        }
        let r = wc
            .delete(&format!("/blobs/{}", "a".repeat(64)))
            .fetch()
            .await;
        assert_eq!(r.status(), 401);
        // Reads stay open: the fleet never logs in.
        for p in ["/healthz", "/catalog", "/metrics"] {
            let r = wc.get(p).fetch().await;
            assert_eq!(r.status(), 200, "{p}");
        }
        let (st, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(b, body);
        // UI: redirect to login; a login sets a session cookie that works.
        let r = wc.get("/ui/catalog").fetch().await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/ui/login");
        let r = wc
            .post("/ui/login")
            .form(&[("user", "ops"), ("password", "nope")])
            .fetch()
            .await;
        assert_eq!(r.status(), 401);
        let r = wc
            .post("/ui/login")
            .form(&[("user", "ops"), ("password", "s3cret-pw")])
            .fetch()
            .await;
        assert_eq!(r.status(), 303);
        let cookie = cookie_pair(r.headers());
        let r = wc
            .get("/ui/catalog")
            .header("cookie", &cookie)
            .fetch()
            .await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("auth.img"));
        // The session also works for the API; a foreign Origin does not.
        let r = wc.get("/events").header("cookie", &cookie).fetch().await;
        assert_eq!(r.status(), 200);
        let r = wc
            .post("/ui/catalog/delete")
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .form(&[("name", "a")])
            .fetch()
            .await;
        assert_eq!(r.status(), 403);
        let kinds: Vec<String> = wc
            .get("/events?limit=100")
            .basic_auth("ops", Some("s3cret-pw"))
            .fetch()
            .await
            .json::<Vec<Value>>()
            .await
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert!(kinds.contains(&"auth.login.failed".to_string()));
        assert!(kinds.contains(&"auth.login.succeeded".to_string()));
        wc.stop().await;
    }
}

#[tokio::test]
async fn misses_events_metrics_and_one_click_fetch() {
    let body = data(50_000, 30);
    let origin = Origin::start(body.clone());
    let wc = start(|_| {}).await;
    let src = origin.url("vendor/cuda.run?sig=abc");
    let r = wc.http.get(wc.blob(&src)).fetch().await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(r.text().await.unwrap().contains("cache miss"));
    let r = wc.http.head(wc.blob(&src)).fetch().await;
    assert_eq!(r.status(), 404, "HEAD misses are recorded too");
    assert_eq!(origin.requests(), 0, "a miss never reaches the origin");
    let misses: Vec<Value> = wc.get("/misses").fetch().await.json().await.unwrap();
    assert_eq!(misses.len(), 1);
    assert_eq!(misses[0]["src"], src.as_str());
    assert_eq!(misses[0]["count"], 2);
    assert_eq!(wc.metric("misses_total").await, 2);
    // One click: the miss becomes a catalog entry and is downloaded.
    let r = wc
        .post("/ui/misses/fetch")
        .form(&[("url", src.as_str())])
        .fetch()
        .await;
    assert_eq!(r.status(), 303);
    wc.wait_cached("cuda.run").await;
    let misses: Vec<Value> = wc.get("/misses").fetch().await.json().await.unwrap();
    assert!(misses.is_empty(), "a stored URL is no longer a miss");
    for _ in 0..3 {
        let (st, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(b, body);
    }
    assert_eq!(wc.metric("hits_total").await, 3);
    assert_eq!(wc.metric("downloads_completed_total").await, 1);
    assert_eq!(wc.metric("origin_bytes_total").await, 50_000);
    assert_eq!(wc.metric("stored_bytes").await, 50_000);
    // /catalog lists it with the measured sha and size.
    let cat: Value = wc.get("/catalog").fetch().await.json().await.unwrap();
    assert_eq!(cat["entries"][0]["name"], "cuda.run");
    assert_eq!(cat["entries"][0]["sha256"], sha(&body).as_str());
    assert_eq!(cat["entries"][0]["size"], 50_000);
    let kinds: Vec<String> = wc
        .events()
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "blob.miss.recorded",
        "catalog.entry.added",
        "download.requested",
        "download.started",
        "download.completed",
    ] {
        assert_eq!(
            kinds.iter().filter(|x| *x == k).count(),
            1,
            "{k} in {kinds:?}"
        );
    }
    // UI pages render.
    for p in ["/ui/catalog", "/ui/misses", "/ui/events", "/ui/settings"] {
        let r = wc.get(p).fetch().await;
        assert_eq!(r.status(), 200, "{p}");
    }
    wc.stop().await;
}

#[tokio::test]
async fn delete_blob_and_restart_keeps_the_index() {
    let body = data(70_000, 40);
    let origin = Origin::start(body.clone());
    let wc = start(|_| {}).await;
    let src = origin.url("keep.img");
    wc.add(json!({"name": "keep", "src": src, "sha256": sha(&body)}))
        .await;
    wc.download("keep").await;
    // Leave a stray temp file: the next start sweeps it.
    std::fs::write(wc.dir.path().join("tmp/stray.part"), b"x").unwrap();
    let dir = wc.stop().await;
    let wc = start_in(dir, |_| {}).await;
    assert_eq!(
        std::fs::read_dir(wc.dir.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    let (st, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(b, body);
    assert_eq!(origin.requests(), 1, "served from disk after restart");
    let digest = sha(&body);
    assert!(wc.dir.path().join("blobs/sha256").join(&digest).exists());
    let r = wc.delete("/blobs/not-a-digest").fetch().await;
    assert_eq!(r.status(), 400);
    let r = wc.delete(&format!("/blobs/{digest}")).fetch().await;
    assert_eq!(r.status(), 204);
    let r = wc.delete(&format!("/blobs/{digest}")).fetch().await;
    assert_eq!(r.status(), 404);
    assert!(!wc.dir.path().join("blobs/sha256").join(&digest).exists());
    let cat: Value = wc.get("/catalog").fetch().await.json().await.unwrap();
    assert_eq!(cat["entries"], json!([]));
    wc.stop().await;
}

#[tokio::test]
async fn concurrent_clients_during_a_failing_download_all_fail_cleanly() {
    for sendfile in [true, false] {
        let body = data(2 << 20, 50);
        let origin = Origin::start(body.clone());
        origin.with(|c| {
            c.always = Fault::Drop(700_000);
            c.ranges = false;
            c.etag = false;
            c.delay = Duration::from_millis(3);
        });
        let wc = start(|o| {
            o.fetch.max_attempts = 3;
            o.sendfile = sendfile;
        })
        .await;
        let src = origin.url("flaky.img");
        wc.add(json!({"name": "flaky", "src": src})).await;
        let url = wc.blob(&src);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (http, url) = (reqwest::Client::new(), url.clone());
                tokio::spawn(async move { get_body(&http, &url).await })
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Err(_) => {}
                Ok((st, _, b)) => {
                    assert!(
                        st != 200 || b.len() != body.len() || b == body,
                        "corrupt body"
                    );
                    assert_ne!(st, 200, "no complete 200 from a failed download");
                }
            }
        }
        wc.stop().await;
    }
}

/// Read from a raw connection until `window` passes with the response
/// still open; return (head, body bytes so far).
async fn raw_get_for(addr: &str, path: &str, window: Duration) -> (String, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let split = text.find("\r\n\r\n").expect("a response head") + 4;
    (text[..split].to_string(), got.len() - split)
}

#[tokio::test]
async fn last_byte_is_held_back_until_the_download_is_verified() {
    let body = data(200_000, 60);
    for sendfile in [true, false] {
        let origin = Origin::start(body.clone());
        // All bytes, then the chunked body never ends: the download has
        // every byte but cannot know it is complete.
        origin.with(|c| {
            c.no_length = true;
            c.faults.push_back(Fault::Stall(200_000));
        });
        let wc = start(|o| {
            o.sendfile = sendfile;
            o.fetch.read_timeout = Duration::from_millis(1500);
        })
        .await;
        let src = origin.url("held.img");
        wc.add(json!({"name": "held", "src": src, "size": 200_000}))
            .await;
        let path = bty_proto::catalog::blob_path(&src);
        let addr = wc.base.trim_start_matches("http://").to_string();
        let (head, n) = raw_get_for(&addr, &path, Duration::from_millis(700)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 200000"),
            "{head}"
        );
        assert_eq!(
            n, 199_999,
            "sendfile={sendfile}: all but the last byte until verified"
        );
        // Afterwards it completes (the resume gets 416, the restart a full
        // body), and the bytes are right.
        wc.wait_cached("held").await;
        let (_, _, b) = get_body(&wc.http, &wc.blob(&src)).await.unwrap();
        assert_eq!(sha(&b), sha(&body));
        wc.stop().await;
    }
}

#[tokio::test]
async fn downloads_are_bounded_and_quota_holds_for_unknown_lengths() {
    let slow = data(300_000, 70);
    let (o1, o2) = (Origin::start(slow.clone()), Origin::start(slow.clone()));
    for o in [&o1, &o2] {
        o.with(|c| {
            c.chunk = 32 << 10;
            c.delay = Duration::from_millis(20);
        });
    }
    let wc = start(|o| {
        o.fetch.max_downloads = 1;
        o.max_bytes = Some(1_000_000);
    })
    .await;
    wc.add(json!({"name": "one", "src": o1.url("1")})).await;
    wc.add(json!({"name": "two", "src": o2.url("2")})).await;
    for n in ["one", "two"] {
        let r = wc
            .post(&format!("/catalog/entries/{n}/download"))
            .fetch()
            .await;
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let d: Value = wc.get("/downloads").fetch().await.json().await.unwrap();
    let mut phases: Vec<&str> = d["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["phase"].as_str().unwrap())
        .collect();
    phases.sort();
    assert_eq!(phases, ["queued", "running"], "one slot: {d}");
    assert_eq!(o1.requests() + o2.requests(), 1);
    wc.wait_cached("one").await;
    wc.wait_cached("two").await;
    // Nothing is pinned, so a third download evicts to fit: used stays
    // within the quota.
    let o3 = Origin::start(data(600_000, 71));
    o3.with(|c| c.no_length = true);
    wc.add(json!({"name": "three", "src": o3.url("3")})).await;
    wc.download("three").await;
    let blobs: Value = wc.get("/blobs").fetch().await.json().await.unwrap();
    assert!(
        blobs["used_bytes"].as_u64().unwrap() <= 1_000_000,
        "{blobs}"
    );
    // Pin everything that is cached: an unknown-length download that
    // outgrows the room fails while downloading, with the quota message.
    for n in ["one", "two", "three"] {
        let e = wc.entry(n).await;
        wc.put(&format!("/catalog/entries/{n}"))
            .json(&json!({"src": e["src"], "pinned": true}))
            .fetch()
            .await;
    }
    let o4 = Origin::start(data(3_000_000, 72));
    o4.with(|c| c.no_length = true);
    wc.add(json!({"name": "four", "src": o4.url("4")})).await;
    let r = wc.http.get(wc.blob(&o4.url("4"))).fetch().await;
    // Headers went out (chunked) before the quota ran out: the body must
    // not complete.
    if r.status() == 200 {
        assert!(
            r.bytes().await.is_err(),
            "a quota failure ends the body in an error"
        );
    } else {
        assert_eq!(r.status(), 507);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wc
        .events()
        .await
        .iter()
        .any(|e| e["kind"] == "download.failed"
            && e["summary"].as_str().unwrap().contains("cache full")));
    // Python-compatible delete by query.
    let r = wc.delete("/catalog/entries?name=four").fetch().await;
    assert_eq!(r.status(), 204);
    let r = wc.delete("/catalog/entries").fetch().await;
    assert_eq!(r.status(), 400);
    wc.stop().await;
}
