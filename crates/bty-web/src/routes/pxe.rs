//! The PXE surface: open by design (firmware cannot log in).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bty_proto::plan::{
    DoneReport, LegacyStatus, Plan, PlanImage, PlanMode, PlanTarget, ProgressReport, ReportAck,
    ReportUrls,
};
use bty_proto::{ImageFormat, Mac};

use super::{client_ip, host, ipxe_response, parse_mac};
use crate::cycle::{self, ContactResult};
use crate::error::{ApiError, ApiResult, Json};
use crate::ipxe::ScriptCycle;
use crate::pxe::{Contact, LocalWhy, Offer};
use crate::state::AppState;

/// Longest `reason` accepted in a report.
const MAX_REASON: usize = 2000;

/// `GET /pxe-bootstrap.ipxe`.
pub async fn bootstrap(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let host = host(&headers)?;
    st.metrics.bootstraps.fetch_add(1, Relaxed);
    Ok(ipxe_response(st.templates.bootstrap(&host)))
}

async fn run_contact(
    st: &AppState,
    addr: SocketAddr,
    mac: Mac,
    contact: Contact,
) -> ApiResult<ContactResult> {
    let ip = client_ip(&addr);
    let snap = st.catalog.snapshot();
    let max = st.cfg.flash.max_attempts;
    let mut r = st
        .db
        .call(move |c| cycle::contact(c, mac, &ip, contact, max, &snap))
        .await??;
    st.metrics
        .offer(r.decision.offer.kind(), contact == Contact::Plan);
    if r.flash_started {
        st.metrics.flashes_started.fetch_add(1, Relaxed);
    }
    if r.flash_abandoned {
        st.metrics.flashes_failed.fetch_add(1, Relaxed);
    }
    st.publish(std::mem::take(&mut r.bus));
    Ok(r)
}

/// `GET /pxe/{mac}`: the per-MAC iPXE script.
pub async fn script(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mac = parse_mac(&raw)?;
    let host = host(&headers)?;
    let r = run_contact(&st, addr, mac, Contact::Pxe).await?;
    let m = &r.machine;
    let mac_s = mac.to_string();
    let mode = m.boot_mode.as_str();
    let boot = &st.cfg.boot;
    let script = match r.decision.offer {
        Offer::Local(why) => st.templates.local(
            &mac_s,
            mode,
            m.sanboot_drive.as_deref().unwrap_or("0x80"),
            why.text(),
        ),
        Offer::Flash(_) => {
            let c = r
                .cycle
                .as_ref()
                .ok_or_else(|| ApiError::internal("flash offer without a cycle"))?;
            let sc = ScriptCycle {
                id: c.id,
                attempt: c.attempt,
                image_name: c.image_name.clone(),
                target_serial: c.target_serial.clone(),
            };
            st.templates.netboot(
                &host,
                &mac_s,
                mode,
                &boot.kernel,
                &boot.initrd,
                &boot.console,
                Some(&sc),
            )
        }
        Offer::Inventory => st.templates.netboot(
            &host,
            &mac_s,
            mode,
            &boot.kernel,
            &boot.initrd,
            &boot.console,
            None,
        ),
        Offer::Park(_) => st.templates.parked(
            &host,
            &mac_s,
            &mac.hyphenated(),
            r.park_reason.as_deref().unwrap_or("parked"),
        ),
    };
    Ok(ipxe_response(script))
}

/// `GET /pxe/{mac}/plan`: the agent's JSON plan.
pub async fn plan(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mac = parse_mac(&raw)?;
    let host = host(&headers)?;
    let r = run_contact(&st, addr, mac, Contact::Plan).await?;
    let plan = match r.decision.offer {
        Offer::Local(why) => Plan::simple(
            PlanMode::Exit,
            Some(match why {
                LocalWhy::ModeExit => "boot_mode is ipxe-exit".to_string(),
                w => w.text().to_string(),
            }),
        ),
        Offer::Inventory => Plan::simple(PlanMode::Inventory, None),
        Offer::Park(_) => Plan::simple(
            PlanMode::Interactive,
            Some(format!(
                "parked: {}",
                r.park_reason.as_deref().unwrap_or("see the event log")
            )),
        ),
        Offer::Flash(_) => {
            let c = r
                .cycle
                .as_ref()
                .ok_or_else(|| ApiError::internal("flash plan without a cycle"))?;
            let base = format!("http://{host}/pxe/{}", mac.hyphenated());
            Plan {
                version: bty_proto::PLAN_VERSION,
                mode: PlanMode::Flash,
                cycle: Some(c.id.to_string()),
                token: Some(c.token.clone()),
                image: Some(PlanImage {
                    url: c.image_url.clone(),
                    sha256: c.image_sha256.clone(),
                    size: c.image_size,
                    format: c
                        .image_format
                        .parse::<ImageFormat>()
                        .map_err(|e| ApiError::internal(format!("cycle {}: {e}", c.id)))?,
                    name: c.image_name.clone(),
                }),
                target: Some(PlanTarget {
                    serial: c.target_serial.clone(),
                }),
                report: Some(ReportUrls {
                    progress: format!("{base}/progress"),
                    done: format!("{base}/done"),
                }),
                reason: None,
            }
        }
    };
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(plan),
    )
        .into_response())
}

fn refused(st: &AppState, e: ApiError) -> ApiError {
    if e.status == StatusCode::CONFLICT {
        st.metrics.reports_refused.fetch_add(1, Relaxed);
    }
    e
}

/// `POST /pxe/{mac}/progress`.
pub async fn progress(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    Json(p): Json<ProgressReport>,
) -> ApiResult<axum::Json<ReportAck>> {
    let mac = parse_mac(&raw)?;
    let ip = client_ip(&addr);
    let r = st
        .db
        .call(move |c| cycle::progress(c, mac, &ip, &p))
        .await?
        .map_err(|e| refused(&st, e))?;
    st.metrics.bytes_reported.fetch_add(r.delta, Relaxed);
    if r.started {
        st.metrics.flashes_started.fetch_add(1, Relaxed);
    }
    st.publish(r.bus);
    Ok(axum::Json(ReportAck {
        recorded: true,
        state: "flashing".into(),
    }))
}

fn check_reason(reason: Option<&str>) -> ApiResult<()> {
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::bad_request(format!(
            "reason is longer than {MAX_REASON} characters"
        )));
    }
    Ok(())
}

/// `POST /pxe/{mac}/done`.
pub async fn done(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    Json(d): Json<DoneReport>,
) -> ApiResult<axum::Json<ReportAck>> {
    let mac = parse_mac(&raw)?;
    check_reason(d.reason.as_deref())?;
    if let Some(sha) = &d.sha256 {
        bty_proto::text::validate_sha256("sha256", sha)?;
    }
    let ip = client_ip(&addr);
    let r = st
        .db
        .call(move |c| cycle::done(c, mac, &ip, &d))
        .await?
        .map_err(|e| refused(&st, e))?;
    count_close(&st, r.closed);
    st.publish(r.bus);
    Ok(axum::Json(r.ack))
}

fn count_close(st: &AppState, closed: Option<bool>) {
    match closed {
        Some(true) => st.metrics.flashes_done.fetch_add(1, Relaxed),
        Some(false) => st.metrics.flashes_failed.fetch_add(1, Relaxed),
        None => 0,
    };
}

/// `POST /pxe/{mac}/status`: the Python live env's terminal report. It has
/// no token, so it is the weaker path: it closes whatever cycle is open.
pub async fn status(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    Json(s): Json<LegacyStatus>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&raw)?;
    check_reason(s.reason.as_deref())?;
    let ip = client_ip(&addr);
    let r = st
        .db
        .call(move |c| cycle::legacy_status(c, mac, &ip, s.status, s.reason.as_deref()))
        .await??;
    count_close(&st, r.closed);
    st.publish(r.bus);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /pxe/{mac}/inventory`.
pub async fn inventory(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&raw)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("inventory must be a JSON object"));
    }
    let inv: bty_proto::inventory::Inventory = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("bad inventory: {e}")))?;
    if inv.disks.len() > 256 || inv.nics.len() > 256 {
        return Err(ApiError::bad_request(
            "inventory lists more than 256 disks or NICs",
        ));
    }
    let summary = format!("{} disk(s), {} NIC(s)", inv.disks.len(), inv.nics.len());
    let text = body.to_string();
    let ip = client_ip(&addr);
    let bus = st
        .db
        .call(move |c| cycle::inventory(c, mac, &ip, &text, &summary))
        .await??;
    st.publish(bus);
    Ok(StatusCode::NO_CONTENT)
}
