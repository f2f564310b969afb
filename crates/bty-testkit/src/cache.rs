//! A real withcache on 127.0.0.1 (port 0) with a temp data dir, and its
//! client.

use std::ops::Deref;
use std::time::Duration;

use anyhow::bail;
use bty_proto::catalog::blob_url;
use serde_json::Value;

use crate::client::{Client, Fetch};

/// The session secret every test withcache gets (fixed, so a restart on
/// the same data dir keeps sessions valid).
pub const SESSION_SECRET: &str = "test-secret-test-secret-test-secret";

/// A running withcache. It derefs to its anonymous [`CacheClient`] (as
/// the fleet and a browser reach it); [`Cache::admin`] is the one that
/// logs in. Its `http` client does not follow redirects.
#[derive(Debug)]
pub struct Cache {
    /// Its data dir (database, blobs, temp files); kept until drop.
    pub dir: tempfile::TempDir,
    client: CacheClient,
    admin: CacheClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Deref for Cache {
    type Target = CacheClient;
    fn deref(&self) -> &CacheClient {
        &self.client
    }
}

/// The options a test withcache starts from: no password, the fixed
/// session secret, private origins allowed, everything else as the
/// environment (unset in tests) and withcache's defaults say.
pub fn options(dir: &std::path::Path) -> withcache::Options {
    let mut o = withcache::Options::from_env(dir.to_path_buf());
    o.admin_password = None;
    o.admin_password_hash = None;
    o.session_secret = Some(SESSION_SECRET.into());
    // The kit's origins ([`crate::origin::Origin`]) listen on 127.0.0.1,
    // which withcache refuses by default (issue 12: a catalog URL must not
    // read this host's own services). Tests are the documented opt-out's
    // use case; the tests of the refusal itself set it back to false.
    o.allow_private_origins = true;
    o
}

impl Cache {
    /// Start with [`options`] changed by `f`.
    pub async fn start(f: impl FnOnce(&mut withcache::Options)) -> Cache {
        let dir = tempfile::tempdir().expect("a temp dir");
        Self::start_in(dir, f).await
    }

    /// Start on an existing data dir (to restart on the same index).
    pub async fn start_in(
        dir: tempfile::TempDir,
        f: impl FnOnce(&mut withcache::Options),
    ) -> Cache {
        match Self::try_start_in(dir, f).await {
            Ok(c) => c,
            Err(e) => panic!("withcache did not start: {e:#}"),
        }
    }

    /// [`Cache::start_in`], with the failure as an error.
    pub async fn try_start_in(
        dir: tempfile::TempDir,
        f: impl FnOnce(&mut withcache::Options),
    ) -> anyhow::Result<Cache> {
        let mut o = options(dir.path());
        f(&mut o);
        let login = o.admin_password.clone().map(|p| (o.admin_user.clone(), p));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(withcache::serve(o, listener, async move {
            let _ = rx.await;
        }));
        let anonymous = Client::new(&base, false);
        let admin = match &login {
            Some((u, p)) => anonymous.with_login(u, p),
            None => anonymous.clone(),
        };
        let mut cache = Cache {
            dir,
            client: CacheClient(anonymous.clone()),
            admin: CacheClient(admin),
            stop: Some(tx),
            task: Some(task),
        };
        for _ in 0..300 {
            if let Ok(r) = anonymous.get("/healthz").send().await {
                if r.status().is_success() {
                    return Ok(cache);
                }
            }
            if cache.task.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(t) = cache.task.take() {
                    t.await??;
                }
                bail!("withcache stopped at start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("withcache did not become healthy")
    }

    /// The client that sends the admin login of the options (HTTP Basic);
    /// the anonymous one when they set no password.
    pub fn admin(&self) -> CacheClient {
        self.admin.clone()
    }

    /// Stop the server, wait for it, and hand back the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        crate::stop_server("withcache", self.stop.take(), self.task.take()).await;
        let empty = tempfile::tempdir().expect("a temp dir");
        std::mem::replace(&mut self.dir, empty)
    }
}

/// A client of withcache's API. It derefs to the generic [`Client`].
#[derive(Debug, Clone)]
pub struct CacheClient(pub Client);

impl Deref for CacheClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl CacheClient {
    /// withcache's URL for `src` (`/b/{key}/{name}`).
    pub fn blob(&self, src: &str) -> String {
        blob_url(&self.base, src)
    }

    /// `POST /catalog/entries` with `body`.
    pub async fn add(&self, body: Value) -> reqwest::Response {
        self.post("/catalog/entries").json(&body).fetch().await
    }

    /// `GET /catalog/entries`.
    pub async fn entries(&self) -> Vec<Value> {
        self.get_as("/catalog/entries").await
    }

    /// The names of [`CacheClient::entries`], sorted.
    pub async fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .entries()
            .await
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_string))
            .collect();
        n.sort();
        n
    }

    /// `GET /catalog/entries/{name}`.
    pub async fn entry(&self, name: &str) -> Value {
        self.get_as(&format!("/catalog/entries/{name}")).await
    }

    /// The `state` of entry `name` (`absent`, `downloading`, `cached`).
    pub async fn state(&self, name: &str) -> String {
        let e = self.entry(name).await;
        e["state"].as_str().unwrap_or_default().to_string()
    }

    /// Start a download through the API and wait until it is cached.
    pub async fn download(&self, name: &str) {
        let r = self
            .post(&format!("/catalog/entries/{name}/download"))
            .fetch()
            .await;
        let st = r.status();
        assert!(
            st.is_success(),
            "{st}: {}",
            r.text().await.unwrap_or_default()
        );
        self.wait_cached(name).await;
    }

    /// Wait (10 s at most) until entry `name` is cached.
    pub async fn wait_cached(&self, name: &str) {
        for _ in 0..500 {
            if self.state(name).await == "cached" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{name} never became cached: {}", self.entry(name).await);
    }

    /// The value of the counter or gauge `withcache_{name}` in `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.get_text("/metrics").await;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("withcache_{name} ")));
        match line.and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => panic!("no metric {name} in {text}"),
        }
    }

    /// [`CacheClient::metric`] once it is above 0, waiting up to 5 s (a
    /// client has its bytes a moment before the blob is indexed and
    /// counted); 0 if it never rises.
    pub async fn metric_once_set(&self, name: &str) -> u64 {
        for _ in 0..250 {
            let v = self.metric(name).await;
            if v > 0 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.metric(name).await
    }

    /// The last 1000 events.
    pub async fn events(&self) -> Vec<Value> {
        self.get_as("/events?limit=1000").await
    }

    /// The kinds of [`CacheClient::events`].
    pub async fn event_kinds(&self) -> Vec<String> {
        let e = self.events().await;
        e.iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_string))
            .collect()
    }

    /// `GET /misses`.
    pub async fn misses(&self) -> Vec<Value> {
        self.get_as("/misses").await
    }
}
