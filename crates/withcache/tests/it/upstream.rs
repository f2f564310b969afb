//! Issue 15: a withcache in front of another one (`WITHCACHE_UPSTREAM`),
//! so an image crosses the WAN once per site. Real servers on loopback:
//! origin ← central withcache ← rack withcache ← clients.

use std::time::Duration;

use bty_testkit::cache::Cache;
use bty_testkit::{data, sha256_hex as sha, Fault, Origin};
use serde_json::json;

use super::get_body;

/// A rack withcache whose upstream is `base`, with the default origin
/// rule (no private origins): the upstream is on loopback, and it must be
/// reachable anyway because the operator named it.
async fn rack(base: &str) -> Cache {
    let base = base.to_string();
    super::start(move |o| {
        o.allow_private_origins = false;
        o.upstream = Some(base);
    })
    .await
}

#[tokio::test]
async fn a_rack_cache_fetches_from_the_central_one_once() {
    let body = data(3 << 20, 15);
    let truth = sha(&body);
    let origin = Origin::start(body.clone());
    // Slow enough that the second client arrives while the bytes flow.
    origin.with(|c| {
        c.chunk = 64 << 10;
        c.delay = Duration::from_millis(5);
    });
    let central = super::start(|_| {}).await;
    let src = origin.url("img/disk.img");
    let r = central
        .add(json!({"name": "disk", "src": src, "sha256": truth}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rack = rack(&central.base).await;

    let url = rack.blob(&src);
    let (a, b) = tokio::join!(get_body(&rack.http, &url), get_body(&rack.http, &url));
    for (st, h, got) in [a.unwrap(), b.unwrap()] {
        assert_eq!(st, 200);
        assert_eq!(got.len(), body.len());
        assert_eq!(sha(&got), truth);
        // The rack promised the upstream's digest while it streamed.
        assert_eq!(h["x-withcache-sha256"], truth.as_str());
    }
    assert_eq!(origin.gets(), 1, "the origin is fetched once");
    assert_eq!(central.metric("downloads_started_total").await, 1);
    assert_eq!(
        central.metric("bytes_served_total").await,
        body.len() as u64,
        "the central cache serves the rack once"
    );
    // Clients finish once the bytes are verified, a moment before the
    // blob is synced and indexed (the counter).
    let stored = rack.metric_once_set("downloads_completed_total").await;
    assert_eq!(stored, 1, "the rack stored the blob once");
    assert_eq!(rack.metric("origin_bytes_total").await, body.len() as u64);

    // Now on the rack's disk: neither the central cache nor the origin
    // hears of the next client.
    let (st, h, got) = get_body(&rack.http, &url).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha(&got), truth);
    assert_eq!(h["etag"], format!("\"{truth}\"").as_str());
    assert_eq!(origin.gets(), 1);
    assert_eq!(
        central.metric("bytes_served_total").await,
        body.len() as u64
    );
}

#[tokio::test]
async fn a_blob_the_upstream_has_cached_comes_from_it_not_the_origin() {
    let body = data(200_000, 16);
    let origin = Origin::start(body.clone());
    let central = super::start(|_| {}).await;
    let src = origin.url("a.img");
    let r = central.add(json!({"name": "a", "src": src})).await;
    assert_eq!(r.status(), 201);
    central.download("a").await;
    assert_eq!(origin.gets(), 1);
    // The rack has its own catalog entry (with a sha256): it still asks
    // the central cache, never the origin.
    let rack = rack(&central.base).await;
    let r = rack
        .add(json!({"name": "a", "src": src, "sha256": sha(&body)}))
        .await;
    assert_eq!(r.status(), 201);
    rack.download("a").await;
    let (st, _, got) = get_body(&rack.http, &rack.blob(&src)).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(got, body);
    assert_eq!(origin.gets(), 1);
    assert_eq!(central.metric("hits_total").await, 1);
}

#[tokio::test]
async fn an_upstream_miss_is_this_caches_miss() {
    let origin = Origin::start(data(1000, 17));
    let central = super::start(|_| {}).await;
    let rack = rack(&central.base).await;
    let src = origin.url("not-in-any-catalog.img");
    let (st, _, text) = get_body(&rack.http, &rack.blob(&src)).await.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(st, 404, "{text}");
    assert!(text.contains("cache miss"), "{text}");
    assert!(text.contains(&central.base), "names the upstream: {text}");
    assert_eq!(origin.requests(), 0, "no cache went to the origin");
    // The central cache recorded the miss for its operator.
    let misses = central.misses().await;
    assert_eq!(misses.len(), 1, "{misses:?}");
    assert_eq!(misses[0]["src"], src.as_str(), "{misses:?}");
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let up = format!("http://127.0.0.1:{port}");
    let rack = super::start(|o| {
        o.upstream = Some(up.clone());
        o.fetch.max_attempts = 2;
    })
    .await;
    let origin = Origin::start(data(1000, 18));
    let src = origin.url("x.img");
    let (st, _, text) = get_body(&rack.http, &rack.blob(&src)).await.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(st, 502, "{text}");
    assert!(text.contains("upstream withcache"), "{text}");
    assert!(text.contains(&up), "names the upstream: {text}");
    assert!(text.contains("refused"), "says why: {text}");
    assert_eq!(origin.requests(), 0);
}

#[tokio::test]
async fn a_bad_upstream_url_is_refused_at_start() {
    for bad in ["ftp://central:3000", "central:3000", "http://"] {
        let r = Cache::try_start_in(tempfile::tempdir().unwrap(), |o| {
            o.upstream = Some(bad.into())
        })
        .await;
        let e = format!("{:#}", r.expect_err(bad));
        assert!(e.contains("WITHCACHE_UPSTREAM"), "{bad}: {e}");
    }
}

/// The upstream's connection breaks mid-blob: the rack resumes with
/// `Range` at the upstream's `/b/{key}/{name}`, as it would at an origin.
/// The kit's origin plays the upstream here (it serves one body at every
/// path and can break a response); the src is never connected to.
#[tokio::test]
async fn a_broken_transfer_from_the_upstream_resumes_with_range() {
    let body = data(1 << 20, 19);
    let truth = sha(&body);
    let upstream = Origin::start(body.clone());
    upstream.with(|c| {
        c.faults.push_back(Fault::Drop(300_000));
        c.delay = Duration::from_millis(2);
    });
    let rack = rack(&upstream.base()).await;
    let src = "http://origin.invalid/images/r.img";
    let (st, _, got) = get_body(&rack.http, &rack.blob(src)).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha(&got), truth);
    let log = upstream.log();
    assert_eq!(log.len(), 2, "first request and one resume: {log:?}");
    let want = format!("b/{}/r.img", bty_proto::catalog::blob_key(src));
    assert!(log.iter().all(|r| r.path == want), "{want}: {log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=300000-"), "{log:?}");
    assert_eq!(rack.metric("origin_bytes_total").await, body.len() as u64);
}
