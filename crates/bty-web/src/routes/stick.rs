//! The USB stick's surface: `GET /stick/catalog` and `POST /stick/flash`
//! (bty_proto::stick). Open to the LAN like the PXE routes, but every
//! request must carry a stick key (`Authorization: Bearer btystick_...`):
//! without a valid one it gets 401 and changes nothing. A browser gets 403
//! like the rest of the agent surface.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bty_proto::stick::{FlashStart, ServerCatalog};

use super::{client_ip, host, refuse_browser};
use crate::db::sticks::Stick;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The bearer token of `Authorization`, if any (any other scheme is no
/// key).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

/// The checks every stick request passes first: no browser, a valid
/// `Host`, a valid key (its use recorded).
async fn admit(
    st: &AppState,
    addr: &SocketAddr,
    headers: &HeaderMap,
) -> ApiResult<(Stick, String)> {
    refuse_browser(headers)?;
    let host = host(headers)?;
    let key = st
        .domain
        .stick_key(bearer(headers), client_ip(addr))
        .await?;
    Ok((key, host))
}

/// `GET /stick/catalog`: the measured images, with the URLs a plan gives.
pub async fn catalog(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    admit(&st, &addr, &headers).await?;
    let c: ServerCatalog = st.domain.stick_catalog(&client_ip(&addr));
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(c)).into_response())
}

/// `POST /stick/flash`: a stick cycle on the first registered MAC. The
/// body is read only once the key is checked, so a caller without one
/// learns nothing from the body's rules.
pub async fn flash(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (key, host) = admit(&st, &addr, &headers).await?;
    let f: FlashStart = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let started = st
        .domain
        .stick_flash(&key, client_ip(&addr), &host, f)
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(started)).into_response())
}
