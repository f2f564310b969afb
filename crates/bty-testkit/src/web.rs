//! A real bty-web on 127.0.0.1 (port 0) with a temp state dir, a static
//! catalog and boot artifacts, and a client typed on `bty-proto`.
//!
//! What the agent's side of the client sends is built from `bty-proto`'s
//! types ([`ProgressReport`], [`DoneReport`], [`Inventory`]), and what
//! bty-web answers is checked against them: a plan must parse as a
//! [`Plan`] and serialise back to the very JSON bty-web sent (no field
//! the contract does not know), an acknowledgement as a [`ReportAck`], an
//! error as an [`ErrorBody`]. The helpers still hand the JSON back, so a
//! test can assert on the wire form.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bty_proto::inventory::Inventory;
use bty_proto::plan::{DoneReport, Phase, Plan, PlanMode, ProgressReport, ReportAck};
use bty_proto::{BootMode, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, Fetch};

/// The machine most tests use.
pub const MAC: &str = "52:54:00:12:34:56";
/// [`MAC`] as bty-web spells it in URLs it makes.
pub const MAC_HYP: &str = "52-54-00-12-34-56";
/// The sha256 the default catalog gives `debian-12`, and what a
/// [`WebClient::done`] reports as read back.
pub const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The fake kernel in the boot dir.
pub const KERNEL_BYTES: &[u8] = b"KERNEL-0123456789";

/// The default catalog: `debian-12` (with [`SHA`] and a size) and
/// `alpine` (neither), both on an origin nobody fetches.
pub fn catalog_toml() -> String {
    format!(
        "version = 1\n\
         [[images]]\nname = \"debian-12\"\nsrc = \"https://images.example/debian-12.img.zst\"\nsha256 = \"{SHA}\"\nsize = 1234\n\
         [[images]]\nname = \"alpine\"\nsrc = \"https://images.example/alpine.img.gz\"\n"
    )
}

/// A running bty-web. It derefs to its anonymous [`WebClient`], so
/// `web.get_json("/api/machines")` is a request to it.
#[derive(Debug)]
pub struct Web {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state dir (database, catalog, boot dir); kept until drop.
    pub dir: tempfile::TempDir,
    client: WebClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Deref for Web {
    type Target = WebClient;
    fn deref(&self) -> &WebClient {
        &self.client
    }
}

impl Web {
    /// Start with `extra` TOML appended to a config that sets the state
    /// dir and the catalog (open mode unless `extra` has an `[admin]`
    /// section).
    pub async fn start(extra: &str) -> Web {
        let dir = tempfile::tempdir().expect("a temp dir");
        Self::start_in(dir, extra).await
    }

    /// Start on an existing state dir (to restart on the same database, or
    /// with a `catalog.toml` of the test's own there; without one, the
    /// [`catalog_toml`]).
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Web {
        match Self::try_start_in(dir, extra).await {
            Ok(w) => w,
            Err(e) => panic!("bty-web did not start: {e:#}"),
        }
    }

    /// [`Web::start_in`], with the failure as an error.
    pub async fn try_start_in(dir: tempfile::TempDir, extra: &str) -> anyhow::Result<Web> {
        let state = dir.path().to_path_buf();
        let cat = state.join("catalog.toml");
        if !cat.exists() {
            std::fs::write(&cat, catalog_toml())?;
        }
        let boot = state.join("boot");
        std::fs::create_dir_all(&boot)?;
        std::fs::write(boot.join("bty-netboot-x86_64.vmlinuz"), KERNEL_BYTES)?;
        std::fs::write(boot.join("bty-netboot-x86_64.initrd"), b"INITRD")?;
        std::fs::write(boot.join("ipxe.efi"), b"MZ-fake-ipxe-efi")?;
        // The kit's agents reboot in milliseconds: each PXE contact is a
        // new one unless the test sets its own `[pxe]`.
        let pxe = if extra.contains("[pxe]") {
            ""
        } else {
            "[pxe]\nrepeat_window_secs = 0\n"
        };
        let toml = format!(
            "[server]\nstate_dir = {:?}\n{}[images]\ncatalog = {:?}\n{pxe}{extra}",
            state.display().to_string(),
            database(&state)?,
            cat.display().to_string()
        );
        let config = bty_web::Config::from_toml_str(&toml)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bty_web::serve(config, listener, async {
            let _ = rx.await;
        }));
        let client = WebClient(Client::new(&format!("http://{addr}"), true));
        let mut web = Web {
            addr,
            dir,
            client,
            stop: Some(tx),
            task: Some(task),
        };
        for _ in 0..300 {
            if let Ok(r) = web.http.get(web.url("/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(web);
                }
            }
            if web.task.as_ref().is_some_and(|t| t.is_finished()) {
                let t = web.task.take().context("the server task")?;
                t.await??;
                bail!("bty-web stopped at start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("bty-web did not become healthy")
    }

    /// Stop the server, wait for it, and hand back the state dir (to start
    /// again on the same database).
    pub async fn stop(mut self) -> tempfile::TempDir {
        crate::stop_server("bty-web", self.stop.take(), self.task.take()).await;
        let empty = tempfile::tempdir().expect("a temp dir");
        std::mem::replace(&mut self.dir, empty)
    }

    /// The state dir.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The PostgreSQL URL of this server's store under
    /// `BTY_TEST_DB=postgres`; `None` on SQLite (`state.db` in [`Web::path`]).
    pub fn database_url(&self) -> Option<String> {
        database_url_in(self.dir.path())
    }

    /// This server's client with the admin login (HTTP Basic).
    pub fn admin(&self, user: &str, password: &str) -> WebClient {
        WebClient(self.client.0.with_login(user, password))
    }

    /// A raw HTTP/1.1 request (for headers reqwest will not send); the
    /// whole answer as text.
    pub async fn raw(&self, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connecting to bty-web");
        s.write_all(request.as_bytes())
            .await
            .expect("sending a raw request");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The PostgreSQL URL of the store of the bty-web that ran on state dir
/// `dir` under `BTY_TEST_DB=postgres`; `None` on SQLite (`dir/state.db`).
pub fn database_url_in(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(DATABASE_URL_FILE)).ok()
}

/// Where [`Web`] keeps its PostgreSQL database's URL in the state dir.
const DATABASE_URL_FILE: &str = "test-database-url";

/// The `[server]` keys of a PostgreSQL store: the one whose URL the state
/// dir keeps (a restart, or a second replica on the same database: write
/// the URL with [`use_database`]), else under `BTY_TEST_DB=postgres` a
/// fresh database (its URL then kept in the dir), with the session secret
/// bty-web then requires. Empty on SQLite (`state.db` in the dir).
fn database(state: &std::path::Path) -> anyhow::Result<String> {
    let url = match database_url_in(state) {
        Some(url) => url,
        None if crate::pg::selected() => {
            let url = crate::pg::fresh_database();
            use_database(state, &url)?;
            url
        }
        None => return Ok(String::new()),
    };
    Ok(format!(
        "database = {url:?}\nsession_secret = \"bty-testkit-session-secret-0123456789\"\n"
    ))
}

/// Make a bty-web started on state dir `dir` keep its store in the
/// PostgreSQL database at `url` (several replicas on one database).
pub fn use_database(dir: &std::path::Path, url: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(DATABASE_URL_FILE), url)
}

/// A client of bty-web's API and PXE endpoints, typed on `bty-proto`. It
/// derefs to the generic [`Client`].
#[derive(Debug, Clone)]
pub struct WebClient(pub Client);

impl Deref for WebClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

/// Check that `v` is a `T` and that `T` says all of it (serialising it
/// again gives `v` back): the wire contract holds both ways.
pub fn contract<T: DeserializeOwned + Serialize>(what: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what} is not a bty-proto type ({e}): {v}"));
    let again = serde_json::to_value(&t).expect("serialising a bty-proto type");
    assert_eq!(
        &again, v,
        "{what}: bty-web sent fields bty-proto does not have"
    );
    t
}

impl WebClient {
    /// `GET /pxe/{mac}`: the iPXE script (asserts 200).
    pub async fn pxe(&self, mac: &str) -> String {
        let (s, t) = self.get_text(&format!("/pxe/{mac}")).await;
        assert_eq!(s, 200, "{t}");
        t
    }

    /// `GET /pxe/{mac}/plan` (asserts 200, and that it is a [`Plan`]).
    pub async fn plan(&self, mac: &str) -> Value {
        let (s, v) = self.get_json(&format!("/pxe/{mac}/plan")).await;
        assert_eq!(s, 200, "{v}");
        contract::<Plan>("the plan", &v);
        v
    }

    /// `GET /pxe/{mac}/plan`, typed.
    pub async fn plan_typed(&self, mac: &str) -> Plan {
        let v = self.plan(mac).await;
        contract("the plan", &v)
    }

    /// `POST /pxe/{mac}/progress` with `report`: status and answer (a
    /// [`ReportAck`] on 200, an [`ErrorBody`] otherwise).
    pub async fn report_progress(&self, mac: &str, report: &ProgressReport) -> (u16, Value) {
        let body = serde_json::to_value(report).expect("a report serialises");
        self.answer(&format!("/pxe/{mac}/progress"), &body).await
    }

    /// `POST /pxe/{mac}/done` with `report`, checked like
    /// [`WebClient::report_progress`].
    pub async fn report_done(&self, mac: &str, report: &DoneReport) -> (u16, Value) {
        let body = serde_json::to_value(report).expect("a report serialises");
        self.answer(&format!("/pxe/{mac}/done"), &body).await
    }

    /// `POST /pxe/{mac}/inventory` with `inv`: the status.
    pub async fn report_inventory(&self, mac: &str, inv: &Inventory) -> u16 {
        let body = serde_json::to_value(inv).expect("an inventory serialises");
        let (st, v) = self
            .post_json(&format!("/pxe/{mac}/inventory"), &body)
            .await;
        if st >= 400 {
            contract::<ErrorBody>("an error", &v);
        }
        st
    }

    async fn answer(&self, path: &str, body: &Value) -> (u16, Value) {
        let (st, v) = self.post_json(path, body).await;
        if st == 200 {
            contract::<ReportAck>("a report's answer", &v);
        } else {
            contract::<ErrorBody>("an error", &v);
        }
        (st, v)
    }

    /// Progress of a flash: `done` of 1000 bytes written, 1 MB/s.
    pub async fn progress(&self, mac: &str, token: &str, done: u64) -> (u16, Value) {
        let p = ProgressReport {
            token: token.to_string(),
            bytes_done: done,
            bytes_total: Some(1000),
            phase: Phase::Writing,
            rate: Some(1e6),
        };
        self.report_progress(mac, &p).await
    }

    /// The end of a flash: ok with [`SHA`] read back, or failed ("disk
    /// vanished"); 1.5 s.
    pub async fn done(&self, mac: &str, token: &str, ok: bool) -> (u16, Value) {
        let d = DoneReport {
            token: token.to_string(),
            ok,
            reason: (!ok).then(|| "disk vanished".to_string()),
            sha256: ok.then(|| SHA.to_string()),
            duration_s: Some(1.5),
        };
        self.report_done(mac, &d).await
    }

    /// `GET /boot/bty-netboot-x86_64.vmlinuz?mac=` as iPXE fetches the
    /// kernel (asserts the bytes).
    pub async fn boot_kernel(&self, mac: &str) {
        let r = self
            .get(&format!("/boot/bty-netboot-x86_64.vmlinuz?mac={mac}"))
            .fetch()
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("the kernel").as_ref(), KERNEL_BYTES);
    }

    /// `PUT /api/machines/{mac}`: status and answer.
    pub async fn put_machine(&self, mac: &str, body: &Value) -> (u16, Value) {
        let path = format!("/api/machines/{mac}");
        self.send_json(reqwest::Method::PUT, &path, Some(body))
            .await
    }

    /// `PUT /api/machines/{mac}`, which must succeed (200 or 201): the
    /// machine as saved.
    pub async fn put_machine_ok(&self, mac: &str, body: &Value) -> Value {
        let (s, v) = self.put_machine(mac, body).await;
        assert!(s == 200 || s == 201, "PUT {mac}: {s} {v}");
        v
    }

    /// Set `mac` to flash `debian-12` onto disk `BTYTEST` in `mode`
    /// (asserts 200 or 201).
    pub async fn flash(&self, mac: &str, mode: BootMode) {
        let body =
            json!({"boot_mode": mode, "image": "debian-12", "target_disk_serial": "BTYTEST"});
        let (s, v) = self.put_machine(mac, &body).await;
        assert!(s == 200 || s == 201, "{s} {v}");
    }

    /// `GET /api/machines/{mac}` (asserts 200).
    pub async fn machine(&self, mac: &str) -> Value {
        let (s, v) = self.get_json(&format!("/api/machines/{mac}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// `GET /api/machines` (asserts 200).
    pub async fn machines(&self) -> Vec<Value> {
        let (st, v) = self.get_json("/api/machines").await;
        assert_eq!(st, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/machines/{mac}/cycles`: the flash history, newest first.
    pub async fn cycles(&self, mac: &str) -> Vec<Value> {
        let (st, v) = self.get_json(&format!("/api/machines/{mac}/cycles")).await;
        assert_eq!(st, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The last 500 events of `mac`.
    pub async fn events(&self, mac: &str) -> Vec<Value> {
        let (_, v) = self
            .get_json(&format!("/api/events?mac={mac}&limit=500"))
            .await;
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /api/images`, its `images` (asserts 200).
    pub async fn images(&self) -> Vec<Value> {
        let (st, v) = self.get_json("/api/images").await;
        assert_eq!(st, 200, "{v}");
        v["images"].as_array().cloned().unwrap_or_default()
    }
}

/// A local-disk script.
pub fn is_local(script: &str) -> bool {
    script.contains("sanboot --no-describe") && !script.contains("kernel ")
}

/// A flash script.
pub fn is_flash(script: &str) -> bool {
    script.contains("kernel http://") && script.contains("flashing")
}

/// A parked script.
pub fn is_parked(script: &str) -> bool {
    script.contains("is parked") && script.contains("sleep 60")
}

/// A simulated `bty` agent for one machine: PXE contact, plan, progress,
/// done, over the open endpoints the real agent uses, with `bty-proto`'s
/// types. Errors are values (for tests that return `anyhow::Result`).
#[derive(Debug, Clone)]
pub struct SimAgent {
    client: WebClient,
    /// The machine.
    pub mac: String,
    /// The plan taken last.
    pub plan: Option<Plan>,
}

impl SimAgent {
    /// An agent for `mac` talking to `web` (anonymously, as agents do).
    pub fn new(web: &WebClient, mac: &str) -> SimAgent {
        SimAgent {
            client: WebClient(web.0.anonymous()),
            mac: mac.to_string(),
            plan: None,
        }
    }

    /// PXE contact, the netboot kernel (as iPXE fetches it), then the
    /// plan; fails unless the plan is a flash.
    pub async fn start_flash(&mut self) -> anyhow::Result<()> {
        self.client.pxe(&self.mac).await;
        self.client.boot_kernel(&self.mac).await;
        let p = self.client.plan_typed(&self.mac).await;
        if p.mode != PlanMode::Flash {
            bail!("{}: plan is not a flash: {p:?}", self.mac);
        }
        self.plan = Some(p);
        Ok(())
    }

    /// The token of the flash plan taken.
    pub fn token(&self) -> anyhow::Result<String> {
        self.plan
            .as_ref()
            .and_then(|p| p.token.clone())
            .context("no flash plan taken")
    }

    /// A progress report: `done` of `total` bytes written at `rate` B/s.
    pub async fn progress(&self, done: u64, total: u64, rate: f64) -> anyhow::Result<()> {
        let p = ProgressReport {
            token: self.token()?,
            bytes_done: done,
            bytes_total: Some(total),
            phase: Phase::Writing,
            rate: Some(rate),
        };
        let (st, v) = self.client.report_progress(&self.mac, &p).await;
        if st != 200 {
            bail!("{}: progress answered {st}: {v}", self.mac);
        }
        Ok(())
    }

    /// The done report: ok with the plan's digest read back, or failed.
    pub async fn done(&self, ok: bool) -> anyhow::Result<()> {
        let sha = self
            .plan
            .as_ref()
            .and_then(|p| p.image.as_ref())
            .and_then(|i| i.sha256.clone());
        let d = DoneReport {
            token: self.token()?,
            ok,
            reason: (!ok).then(|| "simulated failure".to_string()),
            sha256: if ok { sha } else { None },
            duration_s: Some(42.0),
        };
        let (st, v) = self.client.report_done(&self.mac, &d).await;
        if st != 200 {
            bail!("{}: done answered {st}: {v}", self.mac);
        }
        Ok(())
    }
}
