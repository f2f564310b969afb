//! Test harness for the operator UIs: a real bty-web on 127.0.0.1 with a
//! temp state dir, a static catalog and a password; a simulated agent that
//! walks a flash cycle over the real PXE endpoints; a real withcache with a
//! password and a slow origin for it to download from; and a headless
//! Chromium driven through chromedriver (WebDriver).
//!
//! This crate only exists for its tests (`publish = false`); it keeps the
//! WebDriver client out of bty-web's dependencies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The admin password of the test server (not the default one).
pub const PASSWORD: &str = "ui-test-password";
/// The admin user.
pub const USER: &str = "bty-lab";
/// sha256 of the catalog's image (and what the agent "reads back").
pub const SHA: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
/// Size of the catalog's image: 4 GiB.
pub const IMAGE_SIZE: u64 = 4 << 30;

/// A running bty-web.
pub struct Web {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its address.
    pub addr: SocketAddr,
    /// State dir (kept until drop).
    pub dir: tempfile::TempDir,
    /// HTTP client for the API and the PXE endpoints.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Web {
    /// Start bty-web in-process with a password and a two-image catalog.
    pub async fn start() -> anyhow::Result<Web> {
        let dir = tempfile::tempdir()?;
        let state = dir.path();
        let cat = state.join("catalog.toml");
        std::fs::write(
            &cat,
            format!(
                "version = 1\n\
                 [[images]]\nname = \"debian-12\"\nsrc = \"http://127.0.0.1:9/debian-12.img.zst\"\nsha256 = \"{SHA}\"\nsize = {IMAGE_SIZE}\ndescription = \"Debian 12 generic cloud\"\n\
                 [[images]]\nname = \"alpine-3.20\"\nsrc = \"http://127.0.0.1:9/alpine.img.gz\"\n"
            ),
        )?;
        let toml = format!(
            "[server]\nstate_dir = {:?}\n[images]\ncatalog = {:?}\n[admin]\npassword = {PASSWORD:?}\n",
            state.display().to_string(),
            cat.display().to_string()
        );
        let config = bty_web::Config::from_toml_str(&toml)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bty_web::serve(config, listener, async {
            let _ = rx.await;
        }));
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(Web {
                        base,
                        addr,
                        dir,
                        http,
                        stop: Some(tx),
                        task: Some(task),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("bty-web did not become healthy")
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `PUT /api/machines/{mac}` as the admin.
    pub async fn put_machine(&self, mac: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .put(self.url(&format!("/api/machines/{mac}")))
            .basic_auth(USER, Some(PASSWORD))
            .json(body)
            .send()
            .await?;
        let st = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !st.is_success() {
            bail!("PUT {mac}: {st} {v}");
        }
        Ok(v)
    }

    /// `GET /api/machines/{mac}` as the admin.
    pub async fn machine(&self, mac: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(self.url(&format!("/api/machines/{mac}")))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
}

/// A simulated `bty` agent for one machine: PXE contact, plan, progress,
/// done, over the same open endpoints the real agent uses.
pub struct Agent {
    http: reqwest::Client,
    base: String,
    /// The machine.
    pub mac: String,
    /// The plan's token once taken.
    pub token: Option<String>,
}

impl Agent {
    /// An agent for `mac` against `web`.
    pub fn new(web: &Web, mac: &str) -> Agent {
        Agent {
            http: web.http.clone(),
            base: web.base.clone(),
            mac: mac.to_string(),
            token: None,
        }
    }

    /// `GET /pxe/{mac}`: the iPXE script.
    pub async fn pxe(&self) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}/pxe/{}", self.base, self.mac))
            .send()
            .await?;
        Ok(r.error_for_status()?.text().await?)
    }

    /// `GET /pxe/{mac}/plan`; keeps the token.
    pub async fn plan(&mut self) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}/pxe/{}/plan", self.base, self.mac))
            .send()
            .await?;
        let v: Value = r.error_for_status()?.json().await?;
        self.token = v["token"].as_str().map(str::to_string);
        Ok(v)
    }

    /// PXE contact then plan; fails unless the plan is a flash.
    pub async fn start_flash(&mut self) -> anyhow::Result<()> {
        self.pxe().await?;
        let p = self.plan().await?;
        if p["mode"] != "flash" {
            bail!("{}: plan is not a flash: {p}", self.mac);
        }
        Ok(())
    }

    /// `POST /pxe/{mac}/progress`.
    pub async fn progress(&self, done: u64, total: u64, rate: f64) -> anyhow::Result<()> {
        let token = self.token.as_deref().context("no plan taken")?;
        let r = self
            .http
            .post(format!("{}/pxe/{}/progress", self.base, self.mac))
            .json(
                &json!({"token": token, "bytes_done": done, "bytes_total": total,
                          "phase": "writing", "rate": rate}),
            )
            .send()
            .await?;
        r.error_for_status()?;
        Ok(())
    }

    /// `POST /pxe/{mac}/done` with the read-back digest.
    pub async fn done(&self, ok: bool) -> anyhow::Result<()> {
        let token = self.token.as_deref().context("no plan taken")?;
        let mut body = json!({"token": token, "ok": ok, "duration_s": 42.0});
        if ok {
            body["sha256"] = json!(SHA);
        } else {
            body["reason"] = json!("simulated failure");
        }
        let r = self
            .http
            .post(format!("{}/pxe/{}/done", self.base, self.mac))
            .json(&body)
            .send()
            .await?;
        r.error_for_status()?;
        Ok(())
    }
}

/// Whether a required external tool is present; with `BTY_REQUIRE_TOOLS=1`
/// a missing tool is a failure, otherwise the caller skips.
pub fn tool_present(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{path} is missing and BTY_REQUIRE_TOOLS=1: apt-get install -y chromium chromium-driver");
    }
    println!("skipping: {path} not installed");
    false
}

/// A chromedriver process on a free loopback port, killed on drop.
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
    /// Start `/usr/bin/chromedriver` and wait until it answers.
    pub async fn start() -> anyhow::Result<Driver> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting /usr/bin/chromedriver")?;
        let profile = tempfile::tempdir()?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let d = Driver {
            child,
            url,
            profile: profile.path().to_path_buf(),
            _profile: profile,
        };
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/status", d.url)).send().await {
                if r.status().is_success() {
                    return Ok(d);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("chromedriver did not answer on {}", d.url)
    }

    /// A headless Chromium session with the flags TESTING.md lists.
    pub async fn browser(&self) -> anyhow::Result<fantoccini::Client> {
        self.browser_with(&[]).await
    }

    /// A headless Chromium session with `extra` command-line flags too
    /// (e.g. `--force-dark-mode`).
    pub async fn browser_with(&self, extra: &[&str]) -> anyhow::Result<fantoccini::Client> {
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
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        // Keep the console, for `console_messages`.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let conn = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(conn)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("opening a Chromium session through chromedriver")
    }
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
pub async fn console_messages(b: &fantoccini::Client) -> anyhow::Result<Vec<String>> {
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
pub async fn assert_no_favicon_404(b: &fantoccini::Client) -> anyhow::Result<()> {
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

/// A running withcache with the admin password [`PASSWORD`].
pub struct Cache {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Data dir (kept until drop).
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Cache {
    /// Start withcache in-process with a 1 GiB quota.
    pub async fn start() -> anyhow::Result<Cache> {
        let dir = tempfile::tempdir()?;
        let mut o = withcache::Options::from_env(dir.path().to_path_buf());
        o.admin_user = USER.to_string();
        o.admin_password = Some(PASSWORD.to_string());
        o.admin_password_hash = None;
        o.session_secret = Some("ui-test-session-secret-ui-test-session".into());
        o.max_bytes = Some(1 << 30);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(withcache::serve(o, listener, async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(Cache {
                        base,
                        dir,
                        stop: Some(tx),
                        task: Some(task),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("withcache did not become healthy")
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await??;
        }
        Ok(())
    }
}

/// An image origin on 127.0.0.1 that sends its body slowly: `chunk` bytes,
/// then a pause of `pause`, so a download takes long enough to watch.
/// Plain HTTP/1.1 on a tokio socket: one response per connection, the
/// whole body (a Range request is answered in full, which withcache
/// handles as a restart).
pub struct SlowOrigin {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowOrigin {
    /// Serve `body` for every path.
    pub async fn start(body: Vec<u8>, chunk: usize, pause: Duration) -> anyhow::Result<SlowOrigin> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let body = std::sync::Arc::new(body);
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() || req.starts_with(b"HEAD ") {
                        return;
                    }
                    for part in body.chunks(chunk.max(1)) {
                        if sock.write_all(part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(pause).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(SlowOrigin { addr, task })
    }

    /// URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}
