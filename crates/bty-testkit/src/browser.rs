//! Headless Chromium through chromedriver (WebDriver), and the page
//! helpers the UI tests share: reading text, running a script, waiting
//! for a path, screenshots, the console, and the report of a failed walk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use fantoccini::Client;
use serde_json::json;

use crate::poll::try_until;
use crate::tools;

/// The chromedriver binary (Debian's `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The Chromium binary (Debian's `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The tool gate for the browser tests: chromedriver and Chromium both
/// present (see [`tools::have_file`]).
pub fn present() -> bool {
    let pkg = "chromium chromium-driver";
    tools::have_file(CHROMEDRIVER, pkg) && tools::have_file(CHROMIUM, pkg)
}

/// A chromedriver process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub url: String,
    _profile: tempfile::TempDir,
    /// The fresh `--user-data-dir`.
    pub profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Start [`CHROMEDRIVER`] and wait until it says it is ready. The
    /// port is picked free and released before chromedriver binds it, so
    /// another process can take it in between (tests run in parallel):
    /// a chromedriver that exits, or a port that answers but not as a
    /// ready chromedriver, is tried again on a new port.
    pub async fn start() -> anyhow::Result<Driver> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once().await {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    async fn start_once() -> anyhow::Result<Driver> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let profile = tempfile::tempdir()?;
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: profile.path().to_path_buf(),
            _profile: profile,
        };
        let status = format!("{}/status", d.url);
        for _ in 0..400 {
            if let Ok(Some(st)) = d.child.try_wait() {
                bail!("chromedriver exited at start ({st}) on port {port}");
            }
            if ready(port) {
                return Ok(d);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("chromedriver did not say it was ready on {status}")
    }

    /// A headless Chromium session with the flags TESTING.md lists.
    pub async fn browser(&self) -> anyhow::Result<Client> {
        self.browser_with(&[]).await
    }

    /// A headless Chromium session with `extra` command-line flags too
    /// (e.g. `--force-dark-mode`).
    pub async fn browser_with(&self, extra: &[&str]) -> anyhow::Result<Client> {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", self.profile.display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        // Keep the console, for `console_messages`.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // A session start can fail under load (Chromium slow to come up on
        // a busy machine): tried three times before the test fails.
        let mut last = None;
        for attempt in 0..3u64 {
            let conn = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(conn)
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
        }
        Err(anyhow::anyhow!(
            "{}",
            last.map(|e| e.to_string()).unwrap_or_default()
        ))
        .context("opening a Chromium session through chromedriver (3 tries)")
    }
}

/// Does a ready chromedriver answer `GET /status` on `port`? (Not only an
/// open port: another process may hold it.)
fn ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    // HTTP/1.1: chromedriver ignores 1.0 requests, and keeps the
    // connection open, so read until the answer says ready.
    let req = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if c.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = c.read(&mut buf) {
        got.extend_from_slice(buf.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&got);
        if text.contains("\"ready\":true") {
            return true;
        }
    }
    false
}

/// chromedriver's log endpoint (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The browser console's messages since the last call (level and text),
/// e.g. `SEVERE http://…/favicon.ico - Failed to load resource: … 404`.
pub async fn console_messages(b: &Client) -> anyhow::Result<Vec<String>> {
    let v = b
        .issue_cmd(BrowserLog)
        .await
        .context("reading the browser console through chromedriver")?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    format!(
                        "{} {}",
                        m["level"].as_str().unwrap_or("?"),
                        m["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Fails if the console says a favicon was missing (issue 11: every page
/// used to log a `/favicon.ico` 404).
pub async fn assert_no_favicon_404(b: &Client) -> anyhow::Result<()> {
    let messages = console_messages(b).await?;
    for m in &messages {
        eprintln!("console: {m}");
    }
    if let Some(m) = messages.iter().find(|m| m.contains("favicon")) {
        bail!("the console reports a favicon problem: {m}");
    }
    Ok(())
}

/// `<workspace>/target/ui-screenshots`, created.
pub fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// A screenshot of the page as `{name}.png` in [`screenshot_dir`].
pub async fn shot(b: &Client, name: &str) -> anyhow::Result<()> {
    let png = b.screenshot().await?;
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    println!("screenshot {}", path.display());
    Ok(())
}

/// Run `script` in the page; its return value.
pub async fn js(b: &Client, script: &str) -> anyhow::Result<serde_json::Value> {
    Ok(b.execute(script, vec![]).await?)
}

/// `innerText` of the first match of `css`, read in one script call: a
/// live swap may replace the element between a find and a read, which
/// WebDriver reports as a stale element.
pub async fn text(b: &Client, css: &str) -> anyhow::Result<String> {
    let v = b
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;",
            vec![json!(css)],
        )
        .await?;
    v.as_str()
        .map(str::to_string)
        .with_context(|| format!("no element matches {css}"))
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `secs`.
pub async fn until<T, F, Fut>(secs: u64, what: &str, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let every = Duration::from_millis(50);
    try_until(Duration::from_secs(secs), every, what, f).await
}

/// Wait (10 s at most) until the page's path is `path`.
pub async fn path_is(b: &Client, path: &str) -> anyhow::Result<()> {
    until(10, path, || async {
        Ok((b.current_url().await?.path() == path).then_some(()))
    })
    .await
}

/// How a walk through the UI ended: on success the console is checked
/// for a missing favicon ([`assert_no_favicon_404`]); on failure a
/// screenshot `{prefix}zz-failure` and the start of the page's source
/// are left for the reader. Returns the walk's outcome.
pub async fn conclude(b: &Client, prefix: &str, walk: anyhow::Result<()>) -> anyhow::Result<()> {
    let r = match walk {
        Ok(()) => assert_no_favicon_404(b).await,
        e => e,
    };
    if r.is_err() {
        let _ = shot(b, &format!("{prefix}zz-failure")).await;
        if let Ok(src) = b.source().await {
            let head: String = src.chars().take(4000).collect();
            eprintln!("page at failure:\n{head}");
        }
    }
    r
}
