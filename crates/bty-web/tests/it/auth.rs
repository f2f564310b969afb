//! Auth through real requests: open mode, plain, argon2 hash, sessions,
//! rate limit, Origin, non-ASCII passwords. PXE stays open.

use bty_testkit::client::{header, Fetch};
use bty_testkit::web::*;
use serde_json::json;

const PW: &str = "pässwörd ü-€ 密码";

async fn start_with(admin: &str) -> Web {
    Web::start(admin).await
}

#[tokio::test]
async fn open_mode_lets_the_api_in() {
    let s = Web::start("").await;
    let (st, _) = s.get_json("/api/machines").await;
    assert_eq!(st, 200);
    s.stop().await;
}

async fn basic_and_pxe_checks(s: &Web) {
    let (st, e) = s.get_json("/api/machines").await;
    assert_eq!(st, 401);
    assert!(e["error"].as_str().unwrap().contains("login required"));
    let r = s.get("/api/machines").fetch().await;
    assert!(header(r.headers(), "www-authenticate").starts_with("Basic"));
    let r = s
        .get("/api/machines")
        .basic_auth("bty-lab", Some(PW))
        .fetch()
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .get("/api/machines")
        .basic_auth("bty-lab", Some("wrong"))
        .fetch()
        .await;
    assert_eq!(r.status(), 401);
    let r = s
        .get("/api/machines")
        .basic_auth("root", Some(PW))
        .fetch()
        .await;
    assert_eq!(r.status(), 401);
    // PXE, boot, health, catalog and the OpenAPI document stay open.
    for p in [
        "/pxe-bootstrap.ipxe",
        "/pxe/52:54:00:00:00:01",
        "/pxe/52:54:00:00:00:01/plan",
        "/healthz",
        "/version",
        "/metrics",
        "/catalog.toml",
        "/api/openapi.json",
        "/boot/bty-netboot-x86_64.vmlinuz",
    ] {
        let (st, _) = s.get_text(p).await;
        assert_eq!(st, 200, "{p}");
    }
}

#[tokio::test]
async fn plain_password_non_ascii() {
    let s = start_with(&format!("[admin]\npassword = {PW:?}\n")).await;
    basic_and_pxe_checks(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn argon2_hash_and_session_cookie() {
    let hash = bty_auth::hash_password(PW).unwrap();
    let s = start_with(&format!("[admin]\npassword_hash = {hash:?}\n")).await;
    basic_and_pxe_checks(&s).await;
    // Login sets an HttpOnly SameSite=Strict cookie that authorizes.
    let r = s
        .post("/api/login")
        .json(&json!({"password": PW}))
        .fetch()
        .await;
    assert_eq!(r.status(), 204);
    let cookie = header(r.headers(), "set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = s.get("/api/machines").header("cookie", &pair).fetch().await;
    assert_eq!(r.status(), 200);
    let r = s.post("/api/logout").header("cookie", &pair).fetch().await;
    assert_eq!(r.status(), 204);
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    // A forged cookie does not.
    let r = s
        .get("/api/machines")
        .header("cookie", "bty-session=forged.x")
        .fetch()
        .await;
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let s = start_with("[admin]\npassword = \"right\"\n").await;
    for _ in 0..5 {
        let (st, _) = s
            .post_json("/api/login", &json!({"password": "nope"}))
            .await;
        assert_eq!(st, 401);
    }
    let r = s
        .post("/api/login")
        .json(&json!({"password": "right"}))
        .fetch()
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("too many"));
    let r = s
        .get("/api/machines")
        .basic_auth("bty-lab", Some("right"))
        .fetch()
        .await;
    assert_eq!(r.status(), 429, "Basic is limited too");
    s.stop().await;
}

#[tokio::test]
async fn foreign_origin_is_refused_on_state_changes() {
    let s = start_with("[admin]\npassword = \"pw\"\n").await;
    let body = json!({"boot_mode": "ipxe-exit"});
    let put = |origin: Option<String>| {
        let mut r = s
            .put(&format!("/api/machines/{MAC}"))
            .basic_auth("bty-lab", Some("pw"))
            .json(&body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = put(Some("http://evil.example".into())).await.unwrap();
    assert_eq!(r.status(), 403);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("Origin"));
    let r = s
        .get(&format!("/api/machines/{MAC}"))
        .basic_auth("bty-lab", Some("pw"))
        .fetch()
        .await;
    assert_eq!(r.status(), 404, "nothing was written");
    let r = put(Some(format!("http://{}", s.addr))).await.unwrap();
    assert_eq!(r.status(), 201);
    let r = put(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .post("/api/login")
        .header("origin", "http://evil.example")
        .json(&json!({"password": "pw"}))
        .fetch()
        .await;
    assert_eq!(r.status(), 403);
    s.stop().await;
}

/// issue 11: every answer carries an `X-Request-Id` (the client's when it
/// sends a usable one), and JSON errors carry the same id in `ErrorBody`;
/// the browser's own `/favicon.ico` is served, not a 404.
#[tokio::test]
async fn request_ids_in_and_out_and_in_error_bodies() {
    let s = start_with("[admin]\npassword = \"pw\"\n").await;
    let r = s
        .get("/api/machines")
        .header("x-request-id", "ticket-1234")
        .fetch()
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "ticket-1234");
    let body: bty_proto::ErrorBody = r.json().await.unwrap();
    assert_eq!(body.request_id.as_deref(), Some("ticket-1234"));
    // Made up when missing; on open routes and errors alike.
    for path in ["/healthz", "/api/nope", "/pxe/not-a-mac"] {
        let r = s.get(path).fetch().await;
        let id = header(r.headers(), "x-request-id");
        assert_eq!(id.len(), 16, "{path}: {id}");
        if !r.status().is_success() {
            let body: bty_proto::ErrorBody = r.json().await.unwrap();
            assert_eq!(body.request_id.as_deref(), Some(id.as_str()), "{path}");
        }
    }
    let r = s.get("/favicon.ico").fetch().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/x-icon");
    s.stop().await;
}
