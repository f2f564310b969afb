//! The real bty services listening inside the test namespace, either as
//! the operator runs them, `bty-lab serve` started with `ip netns exec`
//! ([`StackOptions::lab`]), or in-process.
//!
//! In-process, bty-web is assembled from its public [`bty_web::build_state`] and
//! [`bty_web::router`] (what [`bty_web::serve`] does) with one extra layer:
//! a request log ([`RequestLog`]) that records method, path, User-Agent,
//! status and content type of every request, so tests can assert what the
//! firmware and iPXE actually fetched. bty-tftp runs through its contract
//! entry point [`bty_tftp::serve`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::netns::{Netns, HOST_IP};

mod lab;

pub use lab::readme_env;
use lab::{Deployed, LabServe};

/// Admin account of the test's bty-web (and withcache).
pub const ADMIN_USER: &str = "bty-lab";
/// Its password for the in-process services.
pub const ADMIN_PASSWORD: &str = "e2e-admin-password";
/// bty-web's port on the test LAN.
pub const WEB_PORT: u16 = 8080;
/// withcache's port on the test LAN.
pub const WITHCACHE_PORT: u16 = 3000;

/// One request as bty-web answered it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Client address.
    pub client: SocketAddr,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// `User-Agent`, empty when absent.
    pub user_agent: String,
    /// Response status.
    pub status: u16,
    /// Response `Content-Type`, empty when absent.
    pub content_type: String,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} -> {} [{}] UA={:?}",
            self.client.ip(),
            self.method,
            self.uri,
            self.status,
            self.content_type,
            self.user_agent
        )
    }
}

/// Every request bty-web answered, in order.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Logged>>>);

impl RequestLog {
    /// A copy of the log.
    pub fn all(&self) -> Vec<Logged> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests whose path (without query) is `path` and method `method`.
    pub fn matching(&self, method: &str, path: &str) -> Vec<Logged> {
        self.all()
            .into_iter()
            .filter(|l| l.method == method && l.uri.split('?').next() == Some(path))
            .collect()
    }

    /// The log as text, one request per line (for failure messages).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for l in self.all() {
            s.push_str(&l.to_string());
            s.push('\n');
        }
        s
    }

    fn push(&self, l: Logged) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    }
}

async fn record(log: RequestLog, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let resp = next.run(req).await;
    log.push(Logged {
        client,
        method,
        uri,
        user_agent,
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    });
    resp
}

/// Where the services' tracing output goes: one file per stack, swapped
/// when the next (serialized) test builds its stack.
static LOG_FILE: OnceLock<Arc<Mutex<Option<std::fs::File>>>> = OnceLock::new();

#[derive(Clone)]
struct SwapWriter(Arc<Mutex<Option<std::fs::File>>>);

impl std::io::Write for SwapWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_to(path: &Path) -> anyhow::Result<()> {
    let slot = LOG_FILE.get_or_init(|| {
        let slot = Arc::new(Mutex::new(None));
        let w = SwapWriter(slot.clone());
        let filter = tracing_subscriber::EnvFilter::try_from_env("BTY_E2E_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        slot
    });
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// A service on its own runtime (threads in the namespace), so that
/// killing it drops every task it spawned, open connections included, as
/// killing a process would.
struct Service {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Service {
    fn spawn<F, Fut>(ns: &Netns, name: &'static str, f: F) -> anyhow::Result<Service>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let rt = ns.runtime()?;
        let (tx, rx) = oneshot::channel();
        let task = rt.spawn(f(rx));
        Ok(Service {
            name,
            stop: Some(tx),
            task: Some(task),
            rt: Some(rt),
        })
    }

    /// Ask for a graceful stop, give it `grace`, then drop everything.
    fn stop(&mut self, grace: Duration) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let Some(rt) = self.rt.take() else { return };
        if let Some(task) = self.task.take() {
            match rt.block_on(async { tokio::time::timeout(grace, task).await }) {
                Ok(Ok(Ok(()))) | Err(_) => {}
                Ok(Ok(Err(e))) => eprintln!("bty-e2e: {} stopped with an error: {e:#}", self.name),
                Ok(Err(e)) => eprintln!("bty-e2e: {} panicked: {e}", self.name),
            }
        }
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    /// Drop the service and everything it spawned at once, like SIGKILL:
    /// the listener and every open connection are closed.
    fn kill(&mut self) {
        self.stop.take();
        self.task.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// What the stack runs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Run bty-tftp on udp/69 with second-stage rules for
    /// `undionly.kpxe` and `ipxe.efi`.
    pub tftp: bool,
    /// Run withcache on 192.0.2.1:3000 and point bty-web at it.
    pub withcache: bool,
    /// Extra TOML appended to bty-web's configuration; `{dir}` stands for
    /// the stack's temp dir.
    pub web_toml: String,
    /// Lines added to bty-web's `[boot]` section.
    pub boot_toml: String,
    /// Files written into the temp dir before the services start
    /// (relative path, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// A static catalog (TOML text) for bty-web besides withcache's:
    /// `[images] catalog` in-process, `BTY_IMAGES_CATALOG` for
    /// `bty-lab serve` (bty-web's environment override, as an operator
    /// would set it).
    pub static_catalog: Option<String>,
    /// Directory with the netboot kernel and initrd to put into the boot
    /// dir: `bty-lab serve --netboot DIR` when the binary has the option,
    /// else copied by the test.
    pub netboot: Option<PathBuf>,
    /// Run `bty-lab serve` (this binary) in the namespace instead of the
    /// in-process services: bty-web on :8080, withcache on :3000,
    /// bty-tftp on udp/69 (without second-stage rules, so dnsmasq needs
    /// the iPXE user-class rule). `tftp`, `withcache`, `web_toml` and
    /// `boot_toml` are ignored.
    pub lab: Option<PathBuf>,
    /// Deploy the stack in containers with `bty-lab deploy` instead
    /// (takes precedence over `lab`).
    pub deploy: Option<Deploy>,
    /// Run `lab` or `deploy` exactly as the README says, with none of the
    /// shortcuts: see [`readme_env`]. `bty-lab serve --bind HOST
    /// --tftp-port 69` in a fresh working directory (its default
    /// `./bty-data`); `bty-lab deploy DEST --engine ENGINE --host-addr
    /// HOST -y` (default images, registry, ports, bty-tftp and its loop
    /// breaker). `netboot` and `static_catalog` must be unset: the
    /// binary brings its own media, and images come from `bty-lab image
    /// add` ([`Stack::lab_image_add`]).
    pub readme: bool,
}

/// A container deploy on a LAN in the root namespace
/// ([`Netns::host_lan`]), since the engine publishes its ports there:
/// bty-web on 198.51.100.1:8080, withcache on 198.51.100.1:3000
/// (`--host-addr 198.51.100.1`). With [`StackOptions::readme`] the
/// README's `bty-lab deploy DEST --engine ENGINE` (images auto, bty-tftp
/// with its loop breaker on the host's udp/69); else the shortcuts
/// `--images local --registry bty-e2e.invalid/bty --no-tftp --netboot
/// MEDIA` (qemu's PXE ROM is iPXE and the user-class DHCP rule sends it
/// straight to bty-web). `bty-lab purge --all --images` runs on drop, also
/// when the test fails.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// A static `bty-lab` (the container images are built from it).
    pub bin: PathBuf,
    /// `docker` or `podman`.
    pub engine: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            tftp: true,
            withcache: false,
            web_toml: String::new(),
            boot_toml: String::new(),
            files: Vec::new(),
            static_catalog: None,
            netboot: None,
            lab: None,
            deploy: None,
            readme: false,
        }
    }
}

/// The running stack. Drop order matters: services stop, then the
/// namespace goes, then the temp dir.
pub struct Stack {
    web: Option<Service>,
    tftp: Option<Service>,
    withcache: Option<Service>,
    extra: Vec<Service>,
    rt: Option<tokio::runtime::Runtime>,
    lab: Option<LabServe>,
    deployed: Option<Deployed>,
    password: String,
    /// bty-web's request log (in-process bty-web only; empty with
    /// `bty-lab serve`).
    pub requests: RequestLog,
    web_config: bty_web::Config,
    /// The test LAN.
    pub ns: Netns,
    /// Temp dir: `state/`, `boot/`, logs, VM files.
    pub dir: tempfile::TempDir,
}

/// iPXE bootfiles copied from Debian's `ipxe` package into the boot dir.
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "ipxe.efi", "snponly.efi"];

impl Stack {
    /// A new namespace, a boot dir with the iPXE binaries, bty-web on
    /// 192.0.2.1:8080 and (if asked) bty-tftp on 192.0.2.1:69.
    pub fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("bty-e2e-")
            .tempdir()
            .context("creating a temp dir")?;
        log_to(&dir.path().join("services.log"))?;
        let ns = if opts.deploy.is_some() {
            Netns::host_lan()?
        } else {
            Netns::create()?
        };
        let rt = ns.runtime()?;
        let boot = dir.path().join("boot");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&boot)?;
        std::fs::create_dir_all(&state)?;
        for f in IPXE_FILES {
            let src = Path::new("/usr/lib/ipxe").join(f);
            std::fs::copy(&src, boot.join(f))
                .with_context(|| format!("copying {} (package ipxe)", src.display()))?;
        }
        for (rel, bytes) in &opts.files {
            let p = dir.path().join(rel);
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
        let catalog = dir.path().join("catalog.toml");
        if let Some(text) = &opts.static_catalog {
            std::fs::write(&catalog, text)
                .with_context(|| format!("writing {}", catalog.display()))?;
        }
        if let Some(d) = &opts.deploy {
            return Stack::start_deploy(opts.clone(), d.clone(), dir, ns, rt);
        }
        if let Some(bin) = &opts.lab {
            return Stack::start_lab(opts.clone(), bin, dir, ns, rt);
        }
        if let Some(media) = &opts.netboot {
            crate::media::install_from(media, &boot)?;
        }
        let web_toml = opts
            .web_toml
            .replace("{dir}", &dir.path().display().to_string());
        let withcache_toml = if opts.withcache {
            format!(
                "[withcache]\nurl = \"http://{}:{WITHCACHE_PORT}\"\nrefresh_secs = 2\n",
                ns.host_ip()
            )
        } else {
            String::new()
        };
        let toml = format!(
            "{withcache_toml}\
             [server]\n\
             listen = \"{HOST_IP}:{WEB_PORT}\"\n\
             state_dir = \"{}\"\n\
             [boot]\n\
             dir = \"{}\"\n\
             {}\n\
             [admin]\n\
             user = \"{ADMIN_USER}\"\n\
             password = \"{ADMIN_PASSWORD}\"\n\
             {}\n\
             {}\n",
            state.display(),
            boot.display(),
            opts.boot_toml,
            web_toml,
            if opts.static_catalog.is_some() {
                format!("[images]\ncatalog = \"{}\"\n", catalog.display())
            } else {
                String::new()
            }
        );
        let web_config = bty_web::Config::from_toml_str(&toml)
            .with_context(|| format!("bty-web configuration:\n{toml}"))?;
        let mut stack = Stack {
            web: None,
            tftp: None,
            withcache: None,
            extra: Vec::new(),
            rt: Some(rt),
            lab: None,
            deployed: None,
            password: ADMIN_PASSWORD.to_string(),
            requests: RequestLog::default(),
            web_config,
            ns,
            dir,
        };
        if opts.tftp {
            stack.start_tftp()?;
        }
        if opts.withcache {
            stack.start_withcache()?;
        }
        stack.start_web()?;
        Ok(stack)
    }

    /// Whether the services are `bty-lab serve`.
    pub fn is_lab(&self) -> bool {
        self.lab.is_some()
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime present until drop")
    }

    /// Run `fut` on the namespace's runtime (so sockets it opens are in
    /// the namespace) and wait for its result.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let rt = self.rt();
        let h = rt.spawn(fut);
        rt.block_on(h)
            .expect("task on the namespace runtime panicked")
    }

    /// The boot dir (bty-web's `/boot/` and bty-tftp's root).
    pub fn boot_dir(&self) -> PathBuf {
        if let Some(d) = &self.deployed {
            // DEST/data/bty is bty-web's bind-mounted state dir.
            d.dest.join("data/bty/boot")
        } else if let Some(l) = &self.lab {
            l.data.join("boot")
        } else {
            self.dir.path().join("boot")
        }
    }

    /// bty-web's base URL on the test LAN.
    pub fn web_url(&self) -> String {
        format!("http://{}:{WEB_PORT}", self.ns.host_ip())
    }

    /// The services' log file (`bty-lab serve`'s output when it runs them).
    pub fn services_log(&self) -> PathBuf {
        match (&self.lab, &self.deployed) {
            (Some(l), _) => l.log.clone(),
            (_, Some(d)) => d.log.clone(),
            _ => self.dir.path().join("services.log"),
        }
    }

    fn start_tftp(&mut self) -> anyhow::Result<()> {
        let mut o = bty_tftp::Options::new(self.boot_dir());
        o.second_stage = vec![
            "undionly.kpxe".parse()?,
            "snponly.efi".parse()?,
            "ipxe.efi".parse()?,
        ];
        let addr = SocketAddr::from((self.ns.host_ip(), 69));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let svc = Service::spawn(&self.ns, "bty-tftp", move |stop| async move {
            let sock = match bty_tftp::bind(addr) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("binding udp {addr}: {e}")));
                    return Ok(());
                }
            };
            bty_tftp::serve(o, sock, async move {
                let _ = stop.await;
            })
            .await
        })?;
        self.tftp = Some(svc);
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => bail!("bty-tftp: {e}"),
            Err(_) => bail!("bty-tftp did not bind within 10 s"),
        }
    }

    fn start_withcache(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("withcache");
        std::fs::create_dir_all(&data)?;
        let mut o = withcache::Options::from_env(data);
        o.admin_user = ADMIN_USER.to_string();
        o.admin_password = Some(ADMIN_PASSWORD.to_string());
        o.admin_password_hash = None;
        let addr = SocketAddr::from((self.ns.host_ip(), WITHCACHE_PORT));
        let svc = Service::spawn(&self.ns, "withcache", move |stop| async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            withcache::serve(o, listener, async move {
                let _ = stop.await;
            })
            .await
        })?;
        self.withcache = Some(svc);
        self.wait_healthy(
            &format!("{}/healthz", self.withcache_url()),
            Duration::from_secs(20),
        )
    }

    /// withcache's base URL on the test LAN.
    pub fn withcache_url(&self) -> String {
        format!("http://{}:{WITHCACHE_PORT}", self.ns.host_ip())
    }

    /// Start (or restart) bty-web on the same state dir, and wait for
    /// `/healthz`. With `bty-lab serve`: (re)start the whole process and
    /// wait for bty-web and withcache.
    pub fn start_web(&mut self) -> anyhow::Result<()> {
        if let Some(lab) = self.lab.as_mut() {
            lab.spawn(&self.ns)?;
            // Without --netboot, serve may build the netboot media before
            // it listens: minutes when apt must download the packages.
            let patience = if lab.readme { 900 } else { 60 };
            let until = Instant::now() + Duration::from_secs(patience);
            let web = format!("{}/healthz", self.web_url());
            while self.wait_healthy(&web, Duration::from_secs(2)).is_err() {
                let exited = self
                    .lab
                    .as_mut()
                    .and_then(|l| l.proc.as_mut())
                    .and_then(|p| p.exited());
                if let Some(status) = exited {
                    bail!(
                        "bty-lab serve exited ({status}) before bty-web answered; its log:\n{}",
                        crate::process::tail(&self.services_log(), 4000)
                    );
                }
                if Instant::now() >= until {
                    // One last try, whose error carries the log's tail.
                    self.wait_healthy(&web, Duration::from_secs(1))?;
                }
            }
            self.wait_healthy(
                &format!("{}/healthz", self.withcache_url()),
                Duration::from_secs(30),
            )?;
            return self.read_shown_password();
        }
        let cfg = self.web_config.clone();
        let log = self.requests.clone();
        let addr = SocketAddr::from((self.ns.host_ip(), WEB_PORT));
        let svc = Service::spawn(&self.ns, "bty-web", move |stop| async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let (stop_tx, stop_rx) = watch::channel(false);
            let st = bty_web::build_state(cfg, stop_rx).await?;
            let app = bty_web::router(st)
                .layer(axum::middleware::from_fn(move |req, next| {
                    record(log.clone(), req, next)
                }))
                .into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                    let _ = stop_tx.send(true);
                })
                .await
                .context("bty-web serving HTTP")
        })?;
        self.web = Some(svc);
        self.wait_healthy(
            &format!("{}/healthz", self.web_url()),
            Duration::from_secs(20),
        )
    }

    /// Stop bty-web gracefully (2 s grace; `bty-lab serve`: SIGTERM).
    pub fn stop_web(&mut self) {
        if let Some(p) = self.lab.as_mut().and_then(|l| l.proc.as_mut()) {
            p.stop();
        }
        if let Some(mut w) = self.web.take() {
            w.stop(Duration::from_secs(2));
        }
    }

    /// Abort bty-web at once (listener closed, no graceful shutdown). With
    /// `bty-lab serve` the process gets SIGKILL: bty-web, withcache and
    /// bty-tftp all die, as when an operator's host loses the process.
    pub fn kill_web(&mut self) {
        if let Some(p) = self.lab.as_mut().and_then(|l| l.proc.as_mut()) {
            p.kill();
        }
        if let Some(mut w) = self.web.take() {
            w.kill();
        }
    }

    /// Run an extra service on the namespace runtime (an origin server, a
    /// cache), stopped with the stack. `f` gets the stop signal.
    pub fn spawn_service<F, Fut>(&mut self, name: &'static str, f: F)
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let svc = Service::spawn(&self.ns, name, f).expect("runtime for an extra service");
        self.extra.push(svc);
    }

    /// Poll `url` until it answers 200.
    pub fn wait_healthy(&self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let u = url.to_string();
        let res = self.run(async move {
            let url = u;
            let client = reqwest::Client::new();
            let until = Instant::now() + timeout;
            let mut last = String::new();
            while Instant::now() < until {
                match client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => last = format!("status {}", r.status()),
                    Err(e) => last = format!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last)
        });
        res.map_err(|e| {
            anyhow::anyhow!(
                "{url} not healthy within {} s ({e}); services log:\n{}",
                timeout.as_secs(),
                crate::process::tail(&self.services_log(), 3000)
            )
        })
    }

    /// Wait up to `timeout` until bty-web's catalog offers the image
    /// `name` (with `sha256`, when given: withcache has measured it),
    /// asking bty-web to re-read its sources each time; its catalog entry.
    pub fn wait_offered(
        &self,
        name: &str,
        sha256: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let until = Instant::now() + timeout;
        loop {
            let v = self
                .api(reqwest::Method::POST, "/api/images/refresh", None)
                .context("refreshing bty-web's catalog")?;
            let found = v["images"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["name"] == name)
                .filter(|i| sha256.is_none_or(|h| i["sha256"] == h))
                .cloned();
            if let Some(img) = found {
                return Ok(img);
            }
            if Instant::now() >= until {
                bail!("bty-web's catalog never offered {name} (sha256 {sha256:?}): {v:#}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `GET` a bty-web API path as the admin; the JSON body, or an error
    /// with the status and body.
    pub fn api_get(&self, path: &str) -> anyhow::Result<Value> {
        self.api(reqwest::Method::GET, path, None)
    }

    /// `PUT` JSON to a bty-web API path as the admin.
    pub fn api_put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.api(reqwest::Method::PUT, path, Some(body))
    }

    /// Any method, as the admin.
    pub fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.http_json(method, format!("{}{path}", self.web_url()), body)
    }

    /// Any method on withcache, as the admin.
    pub fn withcache_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.http_json(method, format!("{}{path}", self.withcache_url()), body)
    }

    /// An admin request from inside the namespace; the JSON answer.
    pub fn http_json(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let password = self.password.clone();
        self.run(async move {
            let mut req = reqwest::Client::new()
                .request(method.clone(), &url)
                .basic_auth(ADMIN_USER, Some(password))
                .timeout(Duration::from_secs(10));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("{method} {url}: {status}: {text}");
            }
            serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))
        })
    }

    /// The status of an anonymous `HEAD` of a bty-web path (what firmware
    /// and iPXE see; no `?mac=`, so no cycle is touched).
    pub fn head_status(&self, path: &str) -> anyhow::Result<u16> {
        let url = format!("{}{path}", self.web_url());
        self.run(async move {
            let resp = reqwest::Client::new()
                .head(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .with_context(|| format!("HEAD {url}"))?;
            Ok(resp.status().as_u16())
        })
    }

    /// The admin password the stack's bty-web takes (for commands the test
    /// runs as the operator, e.g. `--password-stdin`).
    pub fn admin_password(&self) -> &str {
        &self.password
    }

    /// `GET` a bty-web path as the admin; the body as text.
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.web_url());
        let password = self.password.clone();
        self.run(async move {
            let resp = reqwest::Client::new()
                .get(&url)
                .basic_auth(ADMIN_USER, Some(password))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("GET {url}: {status}: {text}");
            }
            Ok(text)
        })
    }

    /// bty-web's event log (newest first), optionally for one MAC.
    pub fn events(&self, mac: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let q = match mac {
            Some(m) => format!("/api/events?limit=500&mac={m}"),
            None => "/api/events?limit=500".to_string(),
        };
        let v = self.api_get(&q)?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }

    /// A text block for failure messages: request log and services log tail.
    pub fn report(&self) -> String {
        if let Some(d) = &self.deployed {
            // The containers' logs, into the deploy log the tail shows.
            let dest = d.dest.display().to_string();
            if let Err(e) = d.lab(&["logs", &dest, "--engine", &d.engine, "--tail", "40"]) {
                eprintln!("bty-e2e: bty-lab logs: {e:#}");
            }
        }
        format!(
            "----- bty-web request log (in-process only) -----\n{}----- services log (tail) -----\n{}\n",
            self.requests.dump(),
            crate::process::tail(&self.services_log(), 4000)
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let Some(rt) = self.rt.take() else { return };
        if let Some(p) = self.lab.as_mut().and_then(|l| l.proc.as_mut()) {
            p.stop();
        }
        if let Some(d) = &self.deployed {
            d.purge();
        }
        for s in self.extra.iter_mut() {
            s.stop(Duration::from_secs(1));
        }
        for mut s in [self.web.take(), self.tftp.take(), self.withcache.take()]
            .into_iter()
            .flatten()
        {
            s.stop(Duration::from_secs(2));
        }
        rt.shutdown_timeout(Duration::from_secs(2));
        if let Some(slot) = LOG_FILE.get() {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if std::env::var_os("BTY_E2E_KEEP").is_some() {
            // Keep the temp dir (serial logs, dnsmasq log, services log,
            // disks) for a post-mortem.
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().expect("placeholder temp dir"),
            );
            eprintln!("bty-e2e: BTY_E2E_KEEP: kept {}", dir.keep().display());
        }
    }
}
