//! A stand-in bty-web for the agent's tests: the plan endpoint and the
//! three report endpoints of one machine, beside an [`Origin`] that
//! serves the images.
//!
//! It exists for what the real bty-web cannot be made to do on demand
//! (answer `done` with a 503 three times, serve a plan with a wrong
//! digest or a mode from the future). It is held to the contract: the
//! plans it builds are `bty-proto` [`Plan`]s, and a report is taken only
//! if it parses as the `bty-proto` type the real server parses it as
//! (otherwise 400 with an [`ErrorBody`], and the body is kept in
//! [`Reports::rejected`]). Its answers have the real server's statuses
//! and bodies (progress 200 with a [`ReportAck`], inventory 204).
//!
//! Like the origin it runs on its own thread, for sync and async tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bty_proto::inventory::Inventory;
use bty_proto::plan::{
    DoneReport, Plan, PlanImage, PlanMode, PlanTarget, ProgressReport, ReportAck, ReportUrls,
};
use bty_proto::{ErrorBody, ImageFormat, Mac};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::data::sha256_hex;
use crate::origin::Origin;

/// The token of the plans [`FakeWeb::flash_plan`] builds.
pub const TOKEN: &str = "tok-123";

/// What the agent sent, each report as the `bty-proto` type it parsed as.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    /// Every inventory.
    pub inventory: Vec<Inventory>,
    /// Every progress report.
    pub progress: Vec<ProgressReport>,
    /// Every done report, with the status it was answered with.
    pub done: Vec<(u16, DoneReport)>,
    /// Bodies that did not parse: (endpoint, body, why).
    pub rejected: Vec<(String, String, String)>,
}

impl Reports {
    /// The done reports answered 2xx.
    pub fn accepted_done(&self) -> Vec<DoneReport> {
        self.done
            .iter()
            .filter(|(c, _)| *c < 300)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    plan: Value,
    /// Statuses to answer `done` with before accepting one.
    done_failures: Vec<u16>,
    reports: Reports,
}

/// A running stand-in bty-web for one machine; stops when dropped.
#[derive(Debug)]
pub struct FakeWeb {
    /// `http://127.0.0.1:port`: the agent's `--server`.
    pub base: String,
    /// The machine it answers for.
    pub mac: Mac,
    /// Where the images are; faults are set on it. Its faults hit
    /// streaming GETs only ([`crate::origin::Cfg::faults_hit_ranges`] is
    /// false), never the agent's HEAD and Range probes.
    pub origin: Origin,
    inner: St,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeWeb {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
struct Inner {
    mac: Mac,
    shared: Mutex<Shared>,
}

type St = Arc<Inner>;

impl FakeWeb {
    /// Start one for `mac`, its plan `{"version": 1, "mode": "exit"}`.
    pub fn start(mac: &str) -> FakeWeb {
        let mac: Mac = mac.parse().expect("a valid MAC");
        let origin = Origin::files(Vec::<(String, Bytes)>::new());
        origin.with(|c| c.faults_hit_ranges = false);
        let plan = serde_json::to_value(Plan::simple(PlanMode::Exit, None)).unwrap_or_default();
        let inner = Arc::new(Inner {
            mac,
            shared: Mutex::new(Shared {
                plan,
                ..Shared::default()
            }),
        });
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake bty-web");
        let addr: SocketAddr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("non-blocking");
        let app = axum::Router::new()
            .route("/pxe/{mac}/plan", get(plan_of))
            .route("/pxe/{mac}/{report}", post(report))
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("fake-web-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake bty-web's runtime");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    tokio::select! {
                        r = axum::serve(l, app) => r.expect("the fake bty-web"),
                        _ = rx => {}
                    }
                });
            })
            .expect("the fake bty-web's thread");
        FakeWeb {
            base: format!("http://{addr}"),
            mac,
            origin,
            inner,
            stop: Some(tx),
        }
    }

    /// Serve `bytes` at `img/{name}` on the origin and make the plan a
    /// flash of it (format `format`, e.g. `img.zst`) onto the disk with
    /// `serial`, token [`TOKEN`], the digest and size of `bytes`.
    pub fn flash_plan(&self, name: &str, bytes: Vec<u8>, format: &str, serial: &str) {
        let format: ImageFormat = format.parse().expect("a known image format");
        let path = format!("img/{name}");
        let report = format!("{}/pxe/{}", self.base, self.mac);
        let plan = Plan {
            version: bty_proto::PLAN_VERSION,
            mode: PlanMode::Flash,
            cycle: Some("c1".into()),
            token: Some(TOKEN.into()),
            image: Some(PlanImage {
                url: self.origin.url(&path),
                sha256: Some(sha256_hex(&bytes)),
                size: Some(bytes.len() as u64),
                format,
                name: name.to_string(),
            }),
            target: Some(PlanTarget {
                serial: serial.to_string(),
            }),
            report: Some(ReportUrls {
                progress: format!("{report}/progress"),
                done: format!("{report}/done"),
            }),
            reason: None,
        };
        self.origin.with(|c| c.files.insert(path, bytes.into()));
        self.set_plan(serde_json::to_value(plan).expect("a plan serialises"));
    }

    /// Serve `plan` as it is: JSON the agent must cope with, such as a
    /// mode newer than `bty-proto` knows.
    pub fn set_plan(&self, plan: Value) {
        self.lock().plan = plan;
    }

    /// Change the plan in place (e.g. a wrong `image.sha256`).
    pub fn edit_plan(&self, f: impl FnOnce(&mut Value)) {
        f(&mut self.lock().plan);
    }

    /// Answer the next `done` reports with these statuses, in order,
    /// before accepting one (e.g. `[503, 500, 502]`, or `[409]`).
    pub fn fail_done_with(&self, statuses: &[u16]) {
        self.lock().done_failures = statuses.to_vec();
    }

    /// What the agent sent so far.
    pub fn reports(&self) -> Reports {
        self.lock().reports.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.inner)
    }
}

fn lock(s: &Inner) -> MutexGuard<'_, Shared> {
    s.shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `raw` names this machine (in any spelling the agent may use).
fn mine(st: &St, raw: &str) -> bool {
    raw.parse::<Mac>().is_ok_and(|m| m == st.mac)
}

async fn plan_of(State(st): State<St>, Path(mac): Path<String>) -> Response {
    if !mine(&st, &mac) {
        return error(StatusCode::NOT_FOUND, format!("not this machine: {mac}"));
    }
    axum::Json(lock(&st).plan.clone()).into_response()
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(ErrorBody::new(msg))).into_response()
}

/// `body` as a `T`; otherwise the reason, and the body is kept as
/// rejected.
fn parse<T: DeserializeOwned>(st: &St, what: &str, body: &Bytes) -> Result<T, String> {
    serde_json::from_slice::<T>(body).map_err(|e| {
        lock(st).reports.rejected.push((
            what.to_string(),
            String::from_utf8_lossy(body).into_owned(),
            e.to_string(),
        ));
        format!("invalid JSON body: {e}")
    })
}

async fn report(
    State(st): State<St>,
    Path((mac, what)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if !mine(&st, &mac) {
        return error(StatusCode::NOT_FOUND, format!("not this machine: {mac}"));
    }
    match what.as_str() {
        "inventory" => match parse::<Inventory>(&st, &what, &body) {
            Ok(inv) => {
                lock(&st).reports.inventory.push(inv);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(msg) => error(StatusCode::BAD_REQUEST, msg),
        },
        "progress" => match parse::<ProgressReport>(&st, &what, &body) {
            Ok(p) => {
                lock(&st).reports.progress.push(p);
                ack("flashing", StatusCode::OK)
            }
            Err(msg) => error(StatusCode::BAD_REQUEST, msg),
        },
        "done" => match parse::<DoneReport>(&st, &what, &body) {
            Ok(d) => {
                let mut s = lock(&st);
                let code = if s.done_failures.is_empty() {
                    200
                } else {
                    s.done_failures.remove(0)
                };
                s.reports.done.push((code, d));
                drop(s);
                match StatusCode::from_u16(code) {
                    Ok(StatusCode::OK) => ack("done", StatusCode::OK),
                    Ok(c) => error(c, format!("injected {code}")),
                    Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "bad status".into()),
                }
            }
            Err(msg) => error(StatusCode::BAD_REQUEST, msg),
        },
        _ => error(StatusCode::NOT_FOUND, "no such endpoint".into()),
    }
}

fn ack(state: &str, status: StatusCode) -> Response {
    let a = ReportAck {
        recorded: true,
        state: state.to_string(),
    };
    (status, axum::Json(a)).into_response()
}
