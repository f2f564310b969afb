//! `/catalog/entries…` and `/catalog/import`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bty_http::Caller;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{added_by, parse_body, who, yes};
use crate::app::App;
use crate::catalog::{EntryInput, EntryState, ImportReport, Started};
use crate::error::Error;

pub(super) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<EntryState>>, Error> {
    Ok(Json(app.catalog.list()?))
}

pub(super) async fn get(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<EntryState>, Error> {
    Ok(Json(app.catalog.get(&name)?))
}

#[derive(Deserialize)]
pub(super) struct CreateQuery {
    download: Option<String>,
}

/// `POST /catalog/entries[?download=1]`: add an entry; with `download`,
/// also start its download in the same request (so a caller never leaves
/// an entry behind because a second request failed).
pub(super) async fn create(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Query(q): Query<CreateQuery>,
    body: Bytes,
) -> Result<Response, Error> {
    let input: EntryInput = parse_body(&body)?;
    let name = input
        .name
        .clone()
        .ok_or_else(|| Error::invalid("name", "name: missing"))?;
    let row = input.into_row(name, added_by(&caller))?;
    app.catalog.add(&row, who(&caller, peer))?;
    if yes(q.download.as_deref()) {
        app.catalog
            .download(&row.entry.name, false, who(&caller, peer))?;
    }
    Ok((StatusCode::CREATED, Json(app.catalog.state(row))).into_response())
}

/// `PUT /catalog/entries/{name}`: create (201) or replace (200).
pub(super) async fn put(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let input: EntryInput = parse_body(&body)?;
    if let Some(n) = input.name.as_ref().filter(|n| **n != name) {
        return Err(Error::invalid(
            "name",
            format!(
                "name: the body says {n:?} but the URL says {name:?}; renaming is not supported"
            ),
        ));
    }
    let row = input.into_row(name, added_by(&caller))?;
    let status = if app.catalog.put(&row, who(&caller, peer))? {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)).into_response())
}

pub(super) async fn delete(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let summary = "deleted (cached bytes stay until evicted or DELETE /blobs/{digest})";
    app.catalog.delete(&name, who(&caller, peer), summary)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct NameQuery {
    name: Option<String>,
}

/// `DELETE /catalog/entries?name=`: the Python withcache's shape, kept so
/// existing clients work.
pub(super) async fn delete_by_query(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Query(q): Query<NameQuery>,
) -> Result<StatusCode, Error> {
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::invalid("name", "name: missing (?name=)"))?;
    delete(State(app), ConnectInfo(peer), caller, Path(name)).await
}

#[derive(Deserialize)]
pub(super) struct ForceQuery {
    force: Option<String>,
}

/// `POST /catalog/entries/{name}/download[?force=1]`.
pub(super) async fn download(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Result<Response, Error> {
    let force = yes(q.force.as_deref());
    let src = app.catalog.get(&name)?.row.entry.src;
    let (status, body) = match app.catalog.download(&name, force, who(&caller, peer))? {
        Started::Cached { digest, size } => (
            StatusCode::OK,
            serde_json::json!({"name": name, "src": src, "status": "cached", "sha256": digest, "size": size}),
        ),
        Started::CachedJustNow => (
            StatusCode::OK,
            serde_json::json!({"name": name, "src": src, "status": "cached"}),
        ),
        Started::Downloading { started } => (
            StatusCode::ACCEPTED,
            serde_json::json!({"name": name, "src": src, "status": "downloading", "started": started}),
        ),
    };
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportUrl {
    url: String,
}

/// `POST /catalog/import`: the catalog file as the body, or
/// `{"url": …}` (JSON) to fetch it from.
pub(super) async fn import(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>, Error> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text, from) = if is_json {
        let req: ImportUrl = parse_body(&body)?;
        (app.catalog.fetch_file(&req.url).await?, req.url)
    } else {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| Error::BadRequest("the catalog body is not UTF-8".into()))?;
        (text, "request body".to_string())
    };
    Ok(Json(app.catalog.import(
        &text,
        &from,
        who(&caller, peer),
    )?))
}
