//! The PXE surface: open by design (firmware cannot log in). Each handler
//! parses the path and body, calls [`crate::domain`] and renders the
//! answer.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bty_proto::plan::{DoneReport, LegacyStatus, ProgressReport, ReportAck};
use bty_proto::Mac;

use super::{from_browser, host, ipxe_response, parse_mac, refuse_browser, Client};
use crate::domain::cycle::Answer;
use crate::domain::decide::Contact;
use crate::error::{ApiResult, Json};
use crate::state::AppState;

/// `GET /pxe-bootstrap.ipxe`.
pub async fn bootstrap(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let host = host(&headers)?;
    st.metrics.bootstrap();
    Ok(ipxe_response(st.templates.bootstrap(&host)))
}

/// `GET /pxe/{mac}`: the per-MAC iPXE script.
pub async fn script(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mac = parse_mac(&raw)?;
    let host = host(&headers)?;
    let answer = boot_answer(&st, mac, &client, &headers).await?;
    let script = st.templates.answer(&host, &st.cfg.boot, &answer);
    Ok(ipxe_response(script))
}

/// What machine `mac` is answered at a PXE contact (the iPXE script's and
/// the GRUB config's decision). A browser gets the preview: what the
/// machine would be answered, applying nothing (no registration, no
/// cycle, no attempt).
pub async fn boot_answer(
    st: &AppState,
    mac: Mac,
    client: &Client,
    headers: &HeaderMap,
) -> ApiResult<Answer> {
    if from_browser(headers) {
        return Ok(st.domain.preview(mac).await?.answer);
    }
    let r = st.domain.contact(mac, client.ip(), Contact::Pxe);
    Ok(r.await?.answer()?)
}

/// `GET /pxe/{mac}/plan`: the agent's JSON plan.
pub async fn plan(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mac = parse_mac(&raw)?;
    refuse_browser(&headers)?;
    let host = host(&headers)?;
    let r = st.domain.contact(mac, client.ip(), Contact::Plan).await?;
    let plan = r.plan(&host)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(plan)).into_response())
}

/// `POST /pxe/{mac}/progress`.
pub async fn progress(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Json(p): Json<ProgressReport>,
) -> ApiResult<axum::Json<ReportAck>> {
    let mac = parse_mac(&raw)?;
    refuse_browser(&headers)?;
    let ack = st.domain.progress(mac, client.ip(), p).await?;
    Ok(axum::Json(ack))
}

/// `POST /pxe/{mac}/done`.
pub async fn done(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Json(d): Json<DoneReport>,
) -> ApiResult<axum::Json<ReportAck>> {
    let mac = parse_mac(&raw)?;
    refuse_browser(&headers)?;
    let ack = st.domain.done(mac, client.ip(), d).await?;
    Ok(axum::Json(ack))
}

/// `POST /pxe/{mac}/status`: the Python live env's terminal report, only
/// with `[pxe] legacy_status = true`. It has no token, so it can only fail
/// the open cycle, never complete it.
pub async fn status(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Json(s): Json<LegacyStatus>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&raw)?;
    refuse_browser(&headers)?;
    st.domain.legacy_status(mac, client.ip(), s).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /pxe/{mac}/inventory`.
pub async fn inventory(
    State(st): State<AppState>,
    client: Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&raw)?;
    refuse_browser(&headers)?;
    st.domain.inventory(mac, client.ip(), &body).await?;
    Ok(StatusCode::NO_CONTENT)
}
