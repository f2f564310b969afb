//! Issue 12, "The LAN is hostile": withcache as a server-side request
//! forgery. Whoever may add a catalog entry names the URL withcache
//! fetches and then serves without a login, so by default it must not
//! connect to loopback, link-local (the cloud metadata address) and the
//! like, whether the URL, a DNS name or a redirect leads there; a lab
//! mirror on a private network must keep working with no flag.
//!
//! Every origin here is on this host (loopback or one of its own
//! addresses); the metadata address is only ever refused, never
//! connected to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bty_testkit::cache::Cache;
use bty_testkit::{data, sha256_hex as sha, Origin};
use serde_json::{json, Value};

/// A withcache with the default rule (the kit allows private origins, as
/// its origins are on 127.0.0.1) and fast retries.
async fn strict() -> Cache {
    Cache::start(|o| {
        o.allow_private_origins = false;
        o.fetch.retry_base_delay = Duration::from_millis(20);
        o.fetch.max_attempts = 3;
    })
    .await
}

/// The refusal message's promises: what was refused, and the opt-out.
fn assert_refusal(msg: &str, says: &str) {
    assert!(msg.contains("refused origin"), "{msg}");
    assert!(msg.contains(says), "{msg}");
    assert!(msg.contains("--allow-private-origins"), "{msg}");
    assert!(msg.contains("WITHCACHE_ALLOW_PRIVATE_ORIGINS=1"), "{msg}");
}

/// This host's IPv4 addresses other than loopback (none on a host with
/// loopback only: the tests that need one say so and skip).
fn host_addrs() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we only read, then free
    // with freeifaddrs; every pointer is checked for null before use.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() && i32::from((*sa).sa_family) == libc::AF_INET {
                let sin = &*(sa as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// An origin on `ip` that answers every request with a 302 to `to`, and
/// counts the requests.
async fn redirector(ip: IpAddr, to: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let (to, counted) = (to.clone(), counted.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                http::StatusCode::FOUND,
                [(http::header::LOCATION, to)],
                "moved",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// The summary of the first `download.failed` event, waiting up to 10 s.
async fn failure(wc: &Cache) -> String {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let events = wc.admin().events().await;
        if let Some(e) = events.iter().find(|e| e["kind"] == "download.failed") {
            return e["summary"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no download.failed event: {:?}", wc.admin().events().await);
}

/// The `error` of a refused request, after checking its status.
async fn refused(r: reqwest::Response) -> String {
    let st = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(st, 400, "{body}");
    body["error"].as_str().unwrap_or_default().to_string()
}

/// Registering a loopback or metadata URL is a 400 that says why and how
/// to allow it; nothing is stored and nothing is fetched, whichever way
/// the URL comes in (POST, PUT, an imported catalog, a promoted miss, a
/// catalog URL).
#[tokio::test]
async fn loopback_and_metadata_origins_are_refused_at_registration() {
    let origin = Origin::start(data(10_000, 1));
    let port = origin.addr.port();
    let wc = strict().await;
    let admin = wc.admin();
    let cases = [
        (origin.url("x.img"), "127.0.0.1 is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254 is the cloud metadata address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/x.img"),
            "a loopback address",
        ),
        (
            format!("http://2130706433:{port}/x.img"),
            "127.0.0.1 is a loopback address",
        ),
        (
            format!("http://localhost:{port}/x.img"),
            "localhost is a loopback name",
        ),
        ("http://[fe80::1]/x.img".to_string(), "a link-local address"),
        ("http://0.0.0.0:3000/x.img".to_string(), "unspecified"),
    ];
    for (src, says) in &cases {
        // The loopback one asks for the download in the same request: on a
        // withcache that let it in, the origin would count a request.
        let r = admin
            .post("/catalog/entries?download=1")
            .json(&json!({"name": "evil", "src": src}))
            .send()
            .await
            .unwrap();
        let msg = refused(r).await;
        assert_refusal(&msg, says);
        assert!(msg.starts_with("src: "), "{msg}");
        let r = admin
            .put("/catalog/entries/evil")
            .json(&json!({"src": src}))
            .send()
            .await
            .unwrap();
        assert_refusal(&refused(r).await, says);
    }
    // A miss promoted to an entry.
    let r = admin
        .post("/misses/fetch")
        .json(&json!({"url": origin.url("x.img")}))
        .send()
        .await
        .unwrap();
    assert_refusal(&refused(r).await, "loopback");
    // A catalog file naming them: each image rejected with the reason.
    let file = cases
        .iter()
        .enumerate()
        .map(|(i, (src, _))| format!("[[images]]\nname = \"evil{i}\"\nsrc = \"{src}\"\n"))
        .collect::<String>();
    let r = admin
        .post("/catalog/import")
        .body(format!("version = 1\n{file}"))
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), cases.len(), "{report}");
    for (r, (_, says)) in rejected.iter().zip(&cases) {
        assert_refusal(r["reason"].as_str().unwrap(), says);
    }
    // A catalog fetched from a loopback URL.
    let r = admin
        .post("/catalog/import")
        .json(&json!({"url": origin.url("catalog.toml")}))
        .send()
        .await
        .unwrap();
    assert_refusal(&refused(r).await, "127.0.0.1 is a loopback address");

    assert!(wc.admin().names().await.is_empty());
    let (_, page) = wc.admin().page("/ui/settings").await;
    assert!(page.contains(r#"id="private-origins">refused"#), "{page}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.requests(), 0, "{:?}", origin.log());
}

/// An origin withcache accepts (on one of this host's own addresses, not
/// loopback) redirects to loopback: by literal, by the name `localhost`
/// (the resolver's check) and as IPv4-mapped IPv6. Each download fails
/// at once (one request to the redirector, no retries) with the refusal
/// as its message, in the event log and to a client; the loopback target
/// sees nothing.
#[tokio::test]
async fn a_redirect_to_loopback_is_refused_and_the_target_sees_nothing() {
    let Some(&host) = host_addrs().first() else {
        eprintln!("SKIPPED: this host has no IPv4 address but loopback");
        return;
    };
    let target = Origin::start(data(10_000, 2));
    let port = target.addr.port();
    for (to, says) in [
        (target.url("secret"), "127.0.0.1 is a loopback address"),
        (
            format!("http://localhost:{port}/secret"),
            "localhost resolves to",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/secret"),
            "a loopback address",
        ),
    ] {
        let (addr, hits) = redirector(host.into(), to).await;
        let wc = strict().await;
        let src = format!("http://{addr}/image.img");
        let r = wc.admin().add(json!({"name": "image", "src": src})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        // A client's request starts the download and is told why it failed.
        let started = Instant::now();
        let r = wc.http.get(wc.blob(&src)).send().await.unwrap();
        let (st, text) = (r.status(), r.text().await.unwrap());
        assert_eq!(st, 502, "{text}");
        assert_refusal(&text, says);
        assert_refusal(&failure(&wc).await, says);
        eprintln!("redirect refused after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "retried a refusal");
        assert_eq!(wc.admin().state("image").await, "absent");
    }
    assert_eq!(target.requests(), 0, "{:?}", target.log());
}

/// An entry stored while private origins were allowed is refused when
/// its download starts after a restart without the flag.
#[tokio::test]
async fn a_stored_loopback_entry_fails_at_download_time() {
    let origin = Origin::start(data(10_000, 3));
    let wc = Cache::start(|_| {}).await;
    let src = origin.url("x.img");
    let r = wc.admin().add(json!({"name": "x", "src": src})).await;
    assert_eq!(r.status(), 201);
    let dir = wc.stop().await;
    let wc = Cache::start_in(dir, |o| o.allow_private_origins = false).await;
    let r = wc
        .admin()
        .post("/catalog/entries/x/download")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_refusal(&failure(&wc).await, "127.0.0.1 is a loopback address");
    assert_eq!(origin.requests(), 0);
}

/// The default allows every address of this host but loopback (private
/// ones such as 10.x, 172.16/12 or 192.168.x included): a lab's mirror
/// needs no flag.
#[tokio::test]
async fn an_origin_on_a_private_or_public_address_is_allowed_by_default() {
    let addrs = host_addrs();
    if addrs.is_empty() {
        eprintln!("SKIPPED: this host has no IPv4 address but loopback");
        return;
    }
    let wc = strict().await;
    let body = data(200_000, 4);
    for (i, ip) in addrs.iter().enumerate() {
        let origin = Origin::start_at((*ip).into(), body.clone());
        let name = format!("mirror{i}");
        let src = origin.url("image.img");
        eprintln!("origin at {src}");
        let r = wc.admin().add(json!({"name": name, "src": src})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        wc.admin().download(&name).await;
        let got = wc.http.get(wc.blob(&src)).send().await.unwrap();
        assert_eq!(sha(&got.bytes().await.unwrap()), sha(&body));
        assert_eq!(origin.gets(), 1);
    }
}

/// With `allow_private_origins` loopback origins work: directly and
/// through a redirect.
#[tokio::test]
async fn allow_private_origins_lets_loopback_in() {
    let body = data(50_000, 5);
    let origin = Origin::start(body.clone());
    let (addr, hits) = redirector(Ipv4Addr::LOCALHOST.into(), origin.url("real.img")).await;
    let wc = Cache::start(|o| o.allow_private_origins = true).await;
    for (name, src) in [
        ("direct", origin.url("x.img")),
        ("moved", format!("http://{addr}/x.img")),
        (
            "named",
            format!("http://localhost:{}/y.img", origin.addr.port()),
        ),
    ] {
        let r = wc.admin().add(json!({"name": name, "src": src})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        wc.admin().download(name).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(origin.gets(), 3);
}
