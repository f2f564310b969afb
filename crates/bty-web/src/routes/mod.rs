//! HTTP routes: thin handlers that parse a request, call [`crate::domain`]
//! and map its answer (or its error, through [`crate::error::ApiError`]).

pub mod api;
pub mod boot;
pub mod pxe;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bty_proto::Mac;

use crate::error::ApiError;
use crate::state::AppState;

/// Parse a MAC from a path segment (400 with the reason).
pub fn parse_mac(raw: &str) -> Result<Mac, ApiError> {
    raw.parse::<Mac>().map_err(ApiError::from)
}

/// The validated `Host` header: the only client-supplied text that goes
/// into every iPXE script and plan URL.
pub fn host(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(header::HOST)
        .ok_or_else(|| ApiError::bad_request("the request has no Host header"))?
        .to_str()
        .map_err(|_| {
            ApiError::bad_request("Host: must be a host name or address with an optional port")
        })?;
    bty_proto::text::validate_host(raw)?;
    Ok(raw.to_string())
}

/// The client's address as text (`::ffff:a.b.c.d` shown as `a.b.c.d`).
pub fn client_ip(addr: &SocketAddr) -> String {
    canonical_ip(addr.ip()).to_string()
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A `text/plain` iPXE script.
pub fn ipxe_response(script: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
        .into_response()
}

/// Count every answered request by status class.
pub async fn count_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    st.metrics.request(r.status().as_u16());
    r
}

/// `/api/*` except login and the OpenAPI document: refuse foreign Origins
/// on state changes, then require the admin (or open mode).
pub async fn require_admin(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: the Origin does not match this server",
        )
        .into_response();
    }
    match st
        .auth
        .authorize(canonical_ip(addr.ip()), req.headers())
        .await
    {
        Ok(_) => next.run(req).await,
        Err(bty_auth::Denied::Unauthenticated) => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                bty_auth::Denied::Unauthenticated.to_string(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"bty-web\", charset=\"UTF-8\""),
            );
            r
        }
        Err(e @ bty_auth::Denied::RateLimited(d)) => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: e.to_string(),
            retry_after: Some(d.as_secs().max(1)),
        }
        .into_response(),
    }
}

/// Unknown paths: JSON 404.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/openapi.json")
}
