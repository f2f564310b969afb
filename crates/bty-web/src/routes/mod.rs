//! HTTP routes: thin handlers that parse a request, call [`crate::domain`]
//! and map its answer (or its error, through [`crate::error::ApiError`]).

pub mod api;
pub mod backups;
pub mod boot;
pub mod bulk;
pub mod grub;
pub mod pxe;
pub mod stick;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bty_proto::Mac;

use crate::error::ApiError;
use crate::state::AppState;

/// A request a browser made: it carries `Origin` or a `Sec-Fetch-*` header,
/// which firmware, iPXE and the agent never send. A page on any site can
/// make a browser on the LAN send GETs (and simple POSTs) here, so such a
/// request changes nothing on the PXE and `/boot/` surface.
pub fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"))
}

/// Refuse a browser's request to an endpoint that changes state.
pub fn refuse_browser(headers: &HeaderMap) -> Result<(), ApiError> {
    if from_browser(headers) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "the PXE and agent endpoints take no requests from a browser (Origin or \
             Sec-Fetch-* header present)",
        ));
    }
    Ok(())
}

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

/// The machine a request on the open surface is for: the HTTP peer, or
/// the TFTP client bty-tftp relays a GRUB read for (`bty_proto::relay`).
///
/// The relay names its client in `x-bty-relay-client`; that header is
/// believed only with `x-bty-relay-key` equal to `[pxe] relay_key`.
/// Without the key any LAN host could claim another's address and take
/// its offered cycle or its plan, so a request that names a client
/// without the right key (or with no key configured) is refused, 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub IpAddr);

impl Client {
    /// The address as the domain stores it (`a.b.c.d`, canonical).
    pub fn ip(&self) -> String {
        self.0.to_string()
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Client, ApiError> {
        use bty_proto::relay::{CLIENT_HEADER, KEY_HEADER};
        let Some(claimed) = parts.headers.get(CLIENT_HEADER) else {
            let ConnectInfo(peer) = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .ok_or_else(|| ApiError::internal("the server gave no peer address"))?;
            return Ok(Client(canonical_ip(peer.ip())));
        };
        let refuse = |why: &str| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("relayed request refused ({CLIENT_HEADER} present): {why}"),
            )
        };
        let Some(expected) = st.cfg.pxe.relay_key() else {
            return Err(refuse(
                "this bty-web has no [pxe] relay_key (BTY_PXE_RELAY_KEY); set it to \
                 bty-tftp's BTY_TFTP_RELAY_KEY",
            ));
        };
        let key_ok = parts
            .headers
            .get(KEY_HEADER)
            .is_some_and(|k| bty_auth::ct_eq(k.as_bytes(), expected.as_bytes()));
        if !key_ok {
            return Err(refuse(&format!(
                "{KEY_HEADER} is missing or is not this bty-web's [pxe] relay_key; \
                 give bty-tftp the same key (BTY_TFTP_RELAY_KEY)"
            )));
        }
        let ip = claimed
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| refuse(&format!("{CLIENT_HEADER} is not an IP address")))?;
        Ok(Client(canonical_ip(ip)))
    }
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

/// Unknown paths: JSON 404.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/openapi.json")
}
