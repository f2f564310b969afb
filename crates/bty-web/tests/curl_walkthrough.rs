//! examples/curl-walkthrough.sh (curl + bash) against a live server, so the
//! README's curl walk is proven.

mod common;

use common::*;

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn curl_walkthrough_script_passes() {
    for tool in ["curl", "bash"] {
        if !have(tool) {
            if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{tool} is required (BTY_REQUIRE_TOOLS=1) but not installed");
            }
            eprintln!("skipping: {tool} not installed");
            return;
        }
    }
    let s = Server::start("[admin]\npassword = \"walk-pw\"\n").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/curl-walkthrough.sh"
    );
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .env("BTY_URL", &s.base)
        .env("BTY_PASSWORD", "walk-pw")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("walkthrough OK"));
    let (_, hist) = s
        .client
        .get(s.url(&format!("/api/machines/{MAC}/cycles")))
        .basic_auth("bty-lab", Some("walk-pw"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .map(|v| ((), v))
        .unwrap();
    assert_eq!(hist.as_array().unwrap().len(), 4);
    s.stop().await;
}
