//! Issue 12, "The LAN is hostile": withcache's login form under attack.

use std::net::IpAddr;

use bty_testkit::cache::Cache;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A flood of failed UI logins with huge, hostile user names leaves a
/// bounded trace: a few events, each short and with the user escaped.
#[tokio::test]
async fn a_failed_login_flood_leaves_a_bounded_sanitised_trace() {
    let wc = Cache::start(|o| o.admin_password = Some("pw".into())).await;
    let url = format!("{}/ui/login", wc.admin().base.clone());
    let user = format!("\n\u{1b}[31mroot{}", "A".repeat(8000));
    let mut tasks = Vec::new();
    for i in 0..300 {
        // Many addresses, so the login rate limit alone does not stop it.
        let http = client_from(&format!("127.0.{}.{}", 1 + i / 250, 2 + i % 250));
        let (url, user) = (url.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(&url)
                .form(&[("user", user.as_str()), ("password", "nope")])
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        let st = t.await.unwrap();
        assert!(st == 401 || st == 429, "{st}");
    }
    let events = wc.admin().events().await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "auth.login.failed")
        .collect();
    let longest = failed
        .iter()
        .map(|e| e.to_string().len())
        .max()
        .unwrap_or(0);
    eprintln!(
        "300 failed logins → {} events, longest {longest} bytes",
        failed.len()
    );
    assert!(!failed.is_empty());
    assert!(failed.len() <= 20, "{} failed-login events", failed.len());
    assert!(longest <= 600, "an event of {longest} bytes");
    for e in &failed {
        let fields = e.as_object().unwrap().values().filter_map(|v| v.as_str());
        for text in fields {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
}

/// withcache's login form refuses a cross-site POST like bty-web's.
#[tokio::test]
async fn a_cross_origin_login_post_is_refused() {
    let wc = Cache::start(|o| o.admin_password = Some("pw".into())).await;
    let base = wc.admin().base.clone();
    let http = client_from("127.0.0.7");
    let r = http
        .post(format!("{base}/ui/login"))
        .header("origin", "http://evil.example")
        .form(&[("user", "bty-lab"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // The same login from the page's own origin works.
    let host = base.trim_start_matches("http://").to_string();
    let r = http
        .post(format!("{base}/ui/login"))
        .header("origin", format!("http://{host}"))
        .form(&[("user", "bty-lab"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

/// A client that never finishes its request head is cut off after the
/// header timeout on withcache's own head reader (the sendfile path) too,
/// however slowly it drips bytes.
#[tokio::test]
async fn a_slowloris_is_cut_off_by_the_fast_path() {
    use tokio::io::AsyncWriteExt;
    let wc = Cache::start(|o| o.http.header_timeout = std::time::Duration::from_secs(2)).await;
    let addr = wc.admin().base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /b/").await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = None;
    while started.elapsed() < std::time::Duration::from_secs(8) {
        let mut b = [0u8; 64];
        let gone = match s.try_read(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        if gone || s.write_all(b"x").await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!("withcache slowloris cut off after {cut:?}");
    let cut = cut.expect("never disconnected");
    assert!(cut < std::time::Duration::from_secs(4), "{cut:?}");
}

/// Request bodies are capped at 1 MiB (axum's default was 2 MiB).
#[tokio::test]
async fn a_large_request_body_is_refused() {
    let wc = Cache::start(|_| {}).await;
    let big = format!("{{\"name\": \"x\", \"src\": \"{}\"}}", "a".repeat(3 << 19));
    let r = wc
        .admin()
        .post("/catalog/entries")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
