//! Issue 11 (withcache rebuilt on the shared web kit): JSON `ErrorBody`
//! with the request id on the API, and the three operator-facing details
//! fixed on the way, each against the real server and a real origin.

use std::time::Duration;

use bty_proto::ErrorBody;
use serde_json::{json, Value};

use bty_testkit::{data, Fault, Origin};

use super::{start, start_in};
use bty_testkit::client::{header, Fetch};

#[tokio::test]
async fn issue_11_api_errors_are_error_bodies_with_the_request_id() {
    let wc = start(|_| {}).await;
    let cases = [
        (
            wc.post("/catalog/entries")
                .json(&json!({"name": "has space", "src": "http://127.0.0.1:9/x.img"})),
            400,
            "image:",
        ),
        (wc.get("/catalog/entries/nope"), 404, "no catalog entry"),
        (
            wc.post("/catalog/entries").body("not json"),
            400,
            "invalid JSON body",
        ),
        (
            wc.delete(&format!("/blobs/{}", "a".repeat(64))),
            404,
            "no blob",
        ),
    ];
    for (i, (req, status, text)) in cases.into_iter().enumerate() {
        let id = format!("issue-11-{i}");
        let r = req.header("x-request-id", &id).fetch().await;
        assert_eq!(r.status(), status, "{text}");
        assert_eq!(r.headers()["content-type"], "application/json", "{text}");
        assert_eq!(r.headers()["x-request-id"], id.as_str());
        let body: ErrorBody = r.json().await.unwrap();
        assert!(body.error.contains(text), "{text}: {body:?}");
        assert_eq!(body.request_id.as_deref(), Some(id.as_str()));
    }
    wc.stop().await;
    // With a password: 401 as ErrorBody with a Basic challenge.
    let wc = start(|o| o.admin_password = Some("pw".into())).await;
    let r = wc.get("/events").fetch().await;
    assert_eq!(r.status(), 401);
    assert!(header(r.headers(), "www-authenticate").contains("realm=\"withcache\""));
    let id = header(r.headers(), "x-request-id");
    let body: ErrorBody = r.json().await.unwrap();
    assert!(body.error.contains("login required"), "{body:?}");
    assert_eq!(body.request_id, Some(id));
    // The byte surface stays text (curl prints it), with an id too.
    let r = wc.get("/blob").fetch().await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["x-request-id"].len(), 16);
    wc.stop().await;
}

#[tokio::test]
async fn issue_11_a_download_cut_short_names_declared_and_received_bytes() {
    let body = data(300_000, 40);
    let origin = Origin::start(body);
    // Declares all 300 000 bytes, sends 100 000, closes; no Range, no
    // validators, so every attempt starts over.
    origin.with(|c| {
        c.always = Fault::Lie(100_000);
        c.ranges = false;
        c.etag = false;
    });
    let wc = start(|_| {}).await;
    wc.add(json!({"name": "short", "src": origin.url("short.img")}))
        .await;
    let r = wc.post("/catalog/entries/short/download").fetch().await;
    assert_eq!(r.status(), 202);
    let mut failed = None;
    for _ in 0..250 {
        let events: Vec<Value> = wc.get_as("/events?limit=100").await;
        failed = events
            .into_iter()
            .find(|e| e["kind"] == "download.failed")
            .map(|e| e["summary"].as_str().unwrap().to_string());
        if failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = failed.expect("the download never failed");
    assert!(
        why.contains("declared 300000 bytes") && why.contains("after 100000"),
        "{why}"
    );
    assert!(!why.contains("error decoding response body"), "{why}");
    wc.stop().await;
}

#[tokio::test]
async fn issue_11_a_blob_keeps_the_misses_its_url_collected() {
    let origin = Origin::start(data(20_000, 41));
    let wc = start(|_| {}).await;
    let src = origin.url("vendor/tool.run");
    for _ in 0..3 {
        let r = wc.http.get(wc.blob(&src)).fetch().await;
        assert_eq!(r.status(), 404);
    }
    let (st, v) = wc.post_json("/misses/fetch", &json!({"url": src})).await;
    assert_eq!(st, 202);
    let name = v["name"].as_str().unwrap().to_string();
    wc.wait_cached(&name).await;
    let blobs: Value = wc.get_as("/blobs").await;
    let blob = &blobs["blobs"][0];
    assert_eq!(blob["sources"], json!([src]));
    assert_eq!(blob["misses"], 3, "{blobs}");
    // The miss row itself is gone: the URL is cached now.
    let misses: Vec<Value> = wc.get_as("/misses").await;
    assert!(misses.is_empty(), "{misses:?}");
    // And the count survives a restart (it is in the database).
    let dir = wc.stop().await;
    let wc = start_in(dir, |_| {}).await;
    let blobs: Value = wc.get_as("/blobs").await;
    assert_eq!(blobs["blobs"][0]["misses"], 3, "{blobs}");
    wc.stop().await;
}

#[tokio::test]
async fn issue_11_open_mode_login_page_says_the_ui_is_open() {
    let wc = start(|_| {}).await;
    let r = wc.get("/ui/login?next=/ui/misses").fetch().await;
    assert_eq!(r.status(), 200, "no redirect away");
    let page = r.text().await.unwrap();
    assert!(page.contains("No admin password is set"), "{page}");
    assert!(page.contains("nothing to log in to"), "{page}");
    assert!(page.contains("id=\"continue\""), "{page}");
    assert!(!page.contains("type=\"password\""), "{page}");
    wc.stop().await;
}
