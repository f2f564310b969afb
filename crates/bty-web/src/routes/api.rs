//! The REST API under `/api/` (admin only, except login, logout and the
//! OpenAPI document) and the small open endpoints.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{canonical_ip, parse_mac};
use crate::catalog::{Image, SourceStatus};
use crate::db::cycles::Cycle;
use crate::db::events::{self, Event};
use crate::db::sticks::Stick;
use crate::domain::images::NewImage;
use crate::domain::registry::{MachinePut, MachineView};
use crate::domain::DomainError;
use crate::error::{ApiError, ApiResult, Json};
use crate::state::AppState;

/// `GET /api/machines`.
pub async fn list_machines(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<MachineView>>> {
    Ok(axum::Json(st.domain.machines().await?))
}

/// `GET /api/machines/{mac}`.
pub async fn get_machine(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<MachineView>> {
    let mac = parse_mac(&raw)?;
    Ok(axum::Json(st.domain.machine(mac).await?))
}

/// `GET /api/machines/{mac}/cycles`: flash history, newest first.
pub async fn machine_cycles(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<Vec<Cycle>>> {
    let mac = parse_mac(&raw)?;
    Ok(axum::Json(st.domain.cycles(mac, 200).await?))
}

/// `PUT /api/machines/{mac}`: 201 when it created the machine.
pub async fn put_machine(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<MachinePut>,
) -> ApiResult<Response> {
    let mac = parse_mac(&raw)?;
    let settings = st.domain.validate(body)?;
    let (v, created) = st.domain.put_machine(mac, settings).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(v)).into_response())
}

/// `DELETE /api/machines/{mac}`.
pub async fn delete_machine(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&raw)?;
    st.domain.delete_machine(mac).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/sticks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickPost {
    /// What to call the key (1 to 80 printable characters).
    #[serde(default)]
    pub label: String,
}

/// `POST /api/sticks`: mint a stick key; 201 with the key, shown only
/// here.
pub async fn mint_stick(
    State(st): State<AppState>,
    Json(body): Json<StickPost>,
) -> ApiResult<Response> {
    let m = st.domain.mint_stick(body.label).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(m),
    )
        .into_response())
}

/// `GET /api/sticks`: every key, without the keys.
pub async fn list_sticks(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<Stick>>> {
    Ok(axum::Json(st.domain.sticks().await?))
}

/// `DELETE /api/sticks/{id}`: revoke a key.
pub async fn revoke_stick(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let id: i64 = raw
        .parse()
        .map_err(|_| ApiError::not_found(format!("no stick key {raw:?}")))?;
    st.domain.revoke_stick(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/images`.
#[derive(Debug, Serialize)]
pub struct ImagesView {
    /// Usable entries.
    pub images: Vec<Image>,
    /// The static file's state.
    pub static_file: SourceStatus,
    /// withcache's state ("unreachable" with the error when it is).
    pub withcache: SourceStatus,
    /// Catalog problems to fix (a refused token, a static entry withcache
    /// cannot take).
    pub problems: Vec<String>,
}

fn images_view(st: &AppState) -> ImagesView {
    let s = st.catalog.snapshot();
    ImagesView {
        images: s.images.values().cloned().collect(),
        static_file: s.static_file.clone(),
        withcache: s.withcache.clone(),
        problems: s.problems.clone(),
    }
}

/// `GET /api/images`.
pub async fn images(State(st): State<AppState>) -> axum::Json<ImagesView> {
    axum::Json(images_view(&st))
}

/// `POST /api/images/refresh`: re-read the file and poll withcache now.
pub async fn refresh_images(State(st): State<AppState>) -> axum::Json<ImagesView> {
    st.catalog.refresh(true, true).await;
    axum::Json(images_view(&st))
}

/// `POST /api/images` body. `src` is accepted for `url` (the catalog's
/// word); `size` may be a number or a string of digits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePost {
    /// Catalog name.
    #[serde(default)]
    pub name: String,
    /// Origin URL.
    #[serde(default, alias = "src")]
    pub url: String,
    /// sha256 of the bytes at `url`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Length in bytes.
    #[serde(default)]
    pub size: Option<serde_json::Value>,
    /// Format (`img`, `img.gz`, `img.xz`, `img.zst`, `img.bz2`, `qcow2`).
    #[serde(default)]
    pub format: Option<String>,
}

/// `size` as given: null, a positive integer or digits in a string.
fn size_field(v: Option<serde_json::Value>) -> ApiResult<Option<u64>> {
    let bad = || {
        ApiError::bad_request(
            "size: must be a whole number of bytes greater than 0; nothing was saved",
        )
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// `POST /api/images`: add an image to withcache's catalog, start its
/// download, and answer the entry as bty-web now offers it (201).
pub async fn add_image(
    State(st): State<AppState>,
    Json(b): Json<ImagePost>,
) -> ApiResult<Response> {
    let new = NewImage {
        name: b.name,
        url: b.url,
        sha256: b.sha256,
        size: size_field(b.size)?,
        format: b.format,
    };
    let img = st.domain.add_image(&new).await.map_err(DomainError::from)?;
    Ok((StatusCode::CREATED, axum::Json(img)).into_response())
}

/// `DELETE /api/images/{name}`: remove a withcache-sourced image.
pub async fn delete_image(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.domain
        .remove_image(&name)
        .await
        .map_err(DomainError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/images/refresh`: the image named `refresh` (the path is
/// also the refresh endpoint's).
pub async fn delete_image_named_refresh(st: State<AppState>) -> ApiResult<StatusCode> {
    delete_image(st, Path("refresh".to_string())).await
}

/// `GET /api/events` query.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    mac: Option<String>,
    kind: Option<String>,
    before_id: Option<i64>,
    limit: Option<u32>,
}

/// A page of events.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// Pass as `before_id` for the next page; absent on the last page.
    pub next_before_id: Option<i64>,
}

/// `GET /api/events`.
pub async fn list_events(
    State(st): State<AppState>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<EventsPage>> {
    let Query(q) = q?;
    let mac = q
        .mac
        .as_deref()
        .map(parse_mac)
        .transpose()?
        .map(|m| m.to_string());
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let query = events::Query {
        mac,
        kind: q.kind,
        before_id: q.before_id,
        limit,
    };
    let evs = st.domain.events(query).await?;
    let next = if evs.len() as u32 == limit {
        evs.last().map(|e| e.id)
    } else {
        None
    };
    Ok(axum::Json(EventsPage {
        events: evs,
        next_before_id: next,
    }))
}

/// `POST /api/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    /// User name (defaults to the admin's).
    #[serde(default)]
    pub user: Option<String>,
    /// Password.
    pub password: String,
}

/// `POST /api/login`: sets the session cookie.
pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(b): Json<LoginBody>,
) -> ApiResult<Response> {
    if !bty_auth::origin_allowed(&axum::http::Method::POST, &headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: the Origin does not match this server",
        ));
    }
    let user = b
        .user
        .unwrap_or_else(|| st.auth.credentials().user().to_string());
    match st
        .auth
        .login(canonical_ip(addr.ip()), &user, &b.password)
        .await
    {
        Ok(cookie) => Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()),
        Err(e @ bty_auth::LoginError::Invalid) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
        }
        Err(e @ bty_auth::LoginError::RateLimited(d)) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: e.to_string(),
            retry_after: Some(d.as_secs().max(1)),
        }),
    }
}

/// `POST /api/logout`: clears the session cookie.
pub async fn logout(State(st): State<AppState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, st.auth.logout_cookie())],
    )
        .into_response()
}

/// `GET /healthz`.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /version`.
pub async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "schema": crate::db::schema::LATEST,
        "plan": bty_proto::PLAN_VERSION,
    }))
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let n = st
        .db
        .call(|c| c.query_row("SELECT count(*) FROM machines", (), |r| r.get::<_, i64>(0)))
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(n),
    )
        .into_response()
}

/// `GET /catalog.toml`, with the URLs the requester's site gets.
pub async fn catalog_toml(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
) -> Response {
    let ip = canonical_ip(addr.ip()).to_string();
    (
        [(header::CONTENT_TYPE, "application/toml")],
        crate::catalog::to_toml(&st.catalog.snapshot(), &ip),
    )
        .into_response()
}

/// `GET /`: a pointer for humans and the netboot env's clock (any response
/// carries `Date:`).
pub async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "bty-web: see /api/openapi.json\n",
    )
        .into_response()
}

/// Split a validated Host header into host and port (default `default_port`).
pub fn split_host_port(host: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (format!("[{h}]"), port);
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (host.to_string(), default_port),
    }
}

/// `GET /api/settings/dhcp`: DHCP options for the operator's DHCP server,
/// filled in with the address the operator reached bty-web at.
pub async fn dhcp_settings(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<crate::dhcp::DhcpGuidance>> {
    let host = super::host(&headers)?;
    let default_port = st.cfg.listen_addr().map(|a| a.port()).unwrap_or(8080);
    let (h, port) = split_host_port(&host, default_port);
    Ok(axum::Json(crate::dhcp::guidance(&h, port)))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("10.0.0.1:9000", 80),
            ("10.0.0.1".into(), 9000)
        );
        assert_eq!(split_host_port("bty.lab", 8080), ("bty.lab".into(), 8080));
        assert_eq!(split_host_port("[::1]:81", 80), ("[::1]".into(), 81));
        assert_eq!(split_host_port("[::1]", 80), ("[::1]".into(), 80));
    }
}
