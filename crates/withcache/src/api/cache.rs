//! `/blobs`, `/misses`, `/downloads` and `/events`: what the cache holds,
//! what clients missed, what runs, what happened.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bty_http::Caller;
use http::StatusCode;
use serde::Deserialize;

use super::{parse_body, who};
use crate::app::App;
use crate::db::{EventRow, MissRow};
use crate::error::Error;
use crate::store::Phase;

/// `GET /blobs`: every blob with its size, hits, misses before it was
/// cached and source URLs, and the quota's numbers.
pub(super) async fn blobs(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let (used, reserved, max) = app.store.usage();
    Json(
        serde_json::json!({"used_bytes": used, "reserved_bytes": reserved,
        "max_bytes": max, "blobs": app.store.blobs()}),
    )
}

pub(super) async fn delete_blob(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<StatusCode, Error> {
    bty_proto::text::validate_sha256("digest", &digest)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    if !app.store.delete_blob(&digest)? {
        return Err(Error::NotFound(format!("no blob with sha256 {digest}")));
    }
    let who = who(&caller, peer);
    app.catalog
        .event("blob.deleted", &digest, who, "deleted by the operator");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn misses(State(app): State<Arc<App>>) -> Result<Json<Vec<MissRow>>, Error> {
    Ok(Json(app.catalog.misses()?))
}

#[derive(Deserialize)]
pub(super) struct UrlParam {
    url: String,
}

pub(super) async fn dismiss_miss(
    State(app): State<Arc<App>>,
    Query(q): Query<UrlParam>,
) -> Result<StatusCode, Error> {
    match app.catalog.dismiss_miss(&q.url) {
        Err(Error::NotFound(_)) => Err(Error::NotFound("no such miss".into())),
        r => r.map(|()| StatusCode::NO_CONTENT),
    }
}

/// `POST /misses/fetch {"url"}`: the miss becomes an entry and downloads.
pub(super) async fn fetch_miss(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, Error> {
    let q: UrlParam = parse_body(&body)?;
    let name = app.catalog.promote_miss(&q.url, who(&caller, peer))?;
    let body = serde_json::json!({"name": name, "src": q.url});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    limit: Option<u32>,
    after: Option<i64>,
}

pub(super) async fn events(
    State(app): State<Arc<App>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<EventRow>>, Error> {
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(app.db().events(limit, q.after)?))
}

/// `GET /downloads`: the downloads in progress.
pub(super) async fn downloads(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let list: Vec<_> = app
        .store
        .downloads()
        .into_iter()
        .map(|dl| {
            let st = dl.snapshot();
            let phase = match st.phase {
                Phase::Queued => "queued",
                Phase::Connecting => "connecting",
                Phase::Running => "running",
                Phase::Done { .. } => "done",
                Phase::Failed(_) => "failed",
            };
            serde_json::json!({"src": dl.src, "phase": phase, "written": st.written,
                "total": st.total, "generation": st.generation})
        })
        .collect();
    Json(serde_json::json!({ "downloads": list }))
}
