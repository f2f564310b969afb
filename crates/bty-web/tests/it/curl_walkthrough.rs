//! examples/curl-walkthrough.sh (curl + bash) against a live server, so the
//! README's curl walk is proven.

use bty_testkit::tools;
use bty_testkit::web::*;

#[tokio::test]
async fn curl_walkthrough_script_passes() {
    if !tools::have("curl", "curl") || !tools::have("bash", "bash") {
        return;
    }
    let s = Web::start("[admin]\npassword = \"walk-pw\"\n").await;
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
    let hist = s.admin("bty-lab", "walk-pw").cycles(MAC).await;
    assert_eq!(hist.len(), 4);
    s.stop().await;
}
