//! The JSON API: catalog, downloads, blobs, misses, events, metrics and
//! health. Reads a fleet needs (`/catalog`, `/metrics`, `/healthz`) are
//! open; everything else needs the admin (HTTP Basic or a UI session).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use bty_proto::catalog::{CatalogEntry, CatalogFile, CatalogResponse, ImageFormat};
use bty_proto::text;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::db::EntryRow;
use crate::store::Phase;
use crate::{App, Error};

/// Largest catalog file accepted by import.
const MAX_CATALOG: usize = 4 << 20;

pub(crate) fn routes(app: Arc<App>) -> axum::Router<Arc<App>> {
    let admin = axum::Router::new()
        .route(
            "/catalog/entries",
            get(list_entries)
                .post(create_entry)
                .delete(delete_entry_by_query),
        )
        .route(
            "/catalog/entries/{name}",
            get(get_entry).put(put_entry).delete(delete_entry),
        )
        .route("/catalog/entries/{name}/download", post(download_entry))
        .route("/catalog/import", post(import))
        .route("/blobs", get(list_blobs))
        .route("/blobs/{digest}", delete(delete_blob))
        .route("/misses", get(list_misses).delete(dismiss_miss))
        .route("/misses/fetch", post(fetch_miss))
        .route("/events", get(list_events))
        .route("/downloads", get(list_downloads))
        .route_layer(axum::middleware::from_fn_with_state(app, require_admin));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/catalog", get(catalog))
        .route("/metrics", get(metrics))
        .merge(admin)
}

/// API auth: the service token (`Authorization: Bearer`, when
/// `WITHCACHE_API_TOKEN` is set), Basic or a session cookie; 401 with a
/// Basic challenge otherwise. State-changing requests from a foreign
/// Origin are refused.
async fn require_admin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "cross-origin request refused: the Origin header does not match this host\n",
        )
            .into_response();
    }
    if let Some(token) = &app.opts.api_token {
        if token.matches(req.headers()) {
            let mut req = req;
            req.extensions_mut().insert(ServiceCaller);
            return next.run(req).await;
        }
        if bty_auth::bearer(req.headers()).is_some() {
            // Never the token itself: only that a wrong one came.
            tracing::warn!(
                peer = %peer.ip(),
                "refused a wrong service token (bty-web's [withcache] token must equal WITHCACHE_API_TOKEN)"
            );
        }
    }
    match app.auth.authorize(peer.ip(), req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(denied) => {
            let status = match denied {
                bty_auth::Denied::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                bty_auth::Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            };
            (
                status,
                [
                    (
                        WWW_AUTHENTICATE,
                        "Basic realm=\"withcache\", charset=\"UTF-8\"",
                    ),
                    (CONTENT_TYPE, "text/plain; charset=utf-8"),
                ],
                format!("{denied}\n"),
            )
                .into_response()
        }
    }
}

/// Marks a request let in by the service token: entries it creates or
/// replaces are `added_by = "bty-web"`, so bty-web can tell the entries it
/// owns (and may update) from an operator's (which it never overwrites).
#[derive(Clone, Copy)]
pub(crate) struct ServiceCaller;

/// Who an entry written by this request is recorded as added by.
fn added_by(caller: &Option<axum::Extension<ServiceCaller>>) -> &'static str {
    if caller.is_some() {
        "bty-web"
    } else {
        "operator"
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "service": "withcache",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /catalog`: only entries whose bytes are cached and verified, each
/// with the measured sha256 and size.
async fn catalog(State(app): State<Arc<App>>) -> Result<Json<CatalogResponse>, Error> {
    let mut entries = Vec::new();
    for row in app.db().entries()? {
        if let Some(hit) = app.store.lookup(&row.entry.src) {
            let mut e = row.entry;
            e.sha256 = Some(hit.digest);
            e.size = Some(hit.size);
            entries.push(e);
        }
    }
    Ok(Json(CatalogResponse { entries }))
}

/// A catalog entry as the API accepts it. Unknown keys are refused so typos
/// do not silently drop data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryBody {
    pub name: Option<String>,
    pub src: String,
    pub sha256: Option<String>,
    #[serde(alias = "size_bytes")]
    pub size: Option<u64>,
    pub format: Option<String>,
    pub arch: Option<String>,
    pub description: Option<String>,
    pub pinned: Option<bool>,
}

fn bad(e: text::TextError) -> Error {
    Error::BadRequest(e.to_string())
}

/// Check every field of an entry; the error names the field and the rule.
pub(crate) fn validate_entry(e: &CatalogEntry) -> Result<(), Error> {
    text::validate_image_name(&e.name).map_err(bad)?;
    text::validate_http_url("src", &e.src).map_err(bad)?;
    if let Some(s) = &e.sha256 {
        text::validate_sha256("sha256", s).map_err(bad)?;
    }
    if let Some(a) = &e.arch {
        text::validate_name("arch", a).map_err(bad)?;
    }
    if let Some(d) = &e.description {
        if d.chars().count() > 500 || d.chars().any(|c| c.is_control()) {
            return Err(Error::BadRequest(
                "description: at most 500 characters, no control characters".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn entry_from_body_pub(name: String, b: EntryBody) -> Result<EntryRow, Error> {
    let format = match b.format.as_deref() {
        None | Some("") => None,
        Some(f) => Some(
            f.parse::<ImageFormat>()
                .map_err(|e| Error::BadRequest(format!("format: {e}")))?,
        ),
    };
    let guessed = ImageFormat::from_file_name(b.src.split(['?', '#']).next().unwrap_or(""));
    let entry = CatalogEntry {
        name,
        src: b.src,
        sha256: b
            .sha256
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase()),
        size: b.size,
        format: format.or(guessed),
        arch: b.arch.filter(|s| !s.is_empty()),
        description: b.description.filter(|s| !s.is_empty()),
    };
    validate_entry(&entry)?;
    Ok(EntryRow {
        entry,
        pinned: b.pinned.unwrap_or(false),
        added_by: "operator".into(),
    })
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// One entry with its cache state, for the admin list and the UI.
#[derive(Debug, Serialize)]
pub(crate) struct EntryState {
    #[serde(flatten)]
    pub row: EntryRow,
    /// `cached`, `downloading`, `queued` or `absent`.
    pub state: &'static str,
    /// Digest of the cached bytes.
    pub digest: Option<String>,
    /// Bytes downloaded so far.
    pub written: Option<u64>,
    /// Expected length.
    pub total: Option<u64>,
}

pub(crate) fn entry_state(app: &App, row: EntryRow) -> EntryState {
    if let Some(hit) = app.store.lookup(&row.entry.src) {
        return EntryState {
            row,
            state: "cached",
            digest: Some(hit.digest),
            written: Some(hit.size),
            total: Some(hit.size),
        };
    }
    if let Some(dl) = app.store.download(&row.entry.src) {
        let st = dl.snapshot();
        let state = match st.phase {
            Phase::Queued | Phase::Connecting => "queued",
            _ => "downloading",
        };
        return EntryState {
            row,
            state,
            digest: None,
            written: Some(st.written),
            total: st.total,
        };
    }
    EntryState {
        row,
        state: "absent",
        digest: None,
        written: None,
        total: None,
    }
}

async fn list_entries(State(app): State<Arc<App>>) -> Result<Json<Vec<EntryState>>, Error> {
    Ok(Json(
        app.db()
            .entries()?
            .into_iter()
            .map(|r| entry_state(&app, r))
            .collect(),
    ))
}

async fn get_entry(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<EntryState>, Error> {
    let row = app
        .db()
        .entry(&name)?
        .ok_or_else(|| Error::NotFound(format!("no catalog entry named {name:?}")))?;
    Ok(Json(entry_state(&app, row)))
}

pub(crate) fn add_entry(app: &App, row: &EntryRow, peer: SocketAddr) -> Result<(), Error> {
    if !app.db().insert_entry(row)? {
        return Err(Error::Conflict(format!(
            "a catalog entry named {:?} exists; PUT /catalog/entries/{} to change it",
            row.entry.name, row.entry.name
        )));
    }
    app.event(
        "catalog.entry.added",
        &row.entry.name,
        &row.added_by,
        Some(peer),
        &format!("added {}", row.entry.src),
    );
    Ok(())
}

#[derive(Deserialize)]
struct CreateQuery {
    download: Option<String>,
}

/// `POST /catalog/entries[?download=1]`: add an entry; with `download`,
/// also start its download in the same request (so a caller never leaves
/// an entry behind because a second request failed).
async fn create_entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Option<axum::Extension<ServiceCaller>>,
    Query(q): Query<CreateQuery>,
    body: Bytes,
) -> Result<Response, Error> {
    let b: EntryBody = parse_body(&body)?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| Error::BadRequest("name: missing".into()))?;
    let mut row = entry_from_body_pub(name, b)?;
    row.added_by = added_by(&caller).into();
    add_entry(&app, &row, peer)?;
    if matches!(q.download.as_deref(), Some("1" | "true" | "yes")) {
        download_by_name(&app, &row.entry.name, false, peer)?;
    }
    Ok((StatusCode::CREATED, Json(entry_state(&app, row))).into_response())
}

async fn put_entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Option<axum::Extension<ServiceCaller>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let b: EntryBody = parse_body(&body)?;
    if let Some(n) = &b.name {
        if *n != name {
            return Err(Error::BadRequest(format!(
                "name: the body says {n:?} but the URL says {name:?}; renaming is not supported"
            )));
        }
    }
    let mut row = entry_from_body_pub(name.clone(), b)?;
    row.added_by = added_by(&caller).into();
    let created = match app.db().entry(&name)? {
        Some(old) => {
            if old.entry.src != row.entry.src {
                // The old URL's bytes stay cached for other entries/clients.
                tracing::info!(name, "entry now points at a new origin");
            }
            app.db().update_entry(&row)?;
            false
        }
        None => app.db().insert_entry(&row)?,
    };
    app.event(
        if created {
            "catalog.entry.added"
        } else {
            "catalog.entry.updated"
        },
        &name,
        &row.added_by,
        Some(peer),
        &format!("src {}", row.entry.src),
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)).into_response())
}

async fn delete_entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    if !app.db().delete_entry(&name)? {
        return Err(Error::NotFound(format!("no catalog entry named {name:?}")));
    }
    app.event(
        "catalog.entry.deleted",
        &name,
        "operator",
        Some(peer),
        "deleted (cached bytes stay until evicted or DELETE /blobs/{digest})",
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
}

/// `DELETE /catalog/entries?name=`: the Python withcache's shape, kept so
/// existing clients work.
async fn delete_entry_by_query(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<NameQuery>,
) -> Result<StatusCode, Error> {
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadRequest("name: missing (?name=)".into()))?;
    delete_entry(State(app), ConnectInfo(peer), Path(name)).await
}

#[derive(Deserialize)]
struct ForceQuery {
    force: Option<String>,
}

/// Start (or join) the download of a catalog entry.
pub(crate) fn download_by_name(
    app: &App,
    name: &str,
    force: bool,
    peer: SocketAddr,
) -> Result<(StatusCode, serde_json::Value), Error> {
    let row = app
        .db()
        .entry(name)?
        .ok_or_else(|| Error::NotFound(format!("no catalog entry named {name:?}")))?;
    let src = row.entry.src.clone();
    if force {
        app.store.forget_source(&src)?;
    } else if let Some(hit) = app.store.lookup(&src) {
        return Ok((
            StatusCode::OK,
            serde_json::json!({"name": name, "src": src, "status": "cached", "sha256": hit.digest, "size": hit.size}),
        ));
    }
    let Some((_, started)) =
        app.store
            .start_download(&src, row.entry.sha256.clone(), row.entry.size)
    else {
        return Ok((
            StatusCode::OK,
            serde_json::json!({"name": name, "src": src, "status": "cached"}),
        ));
    };
    if started {
        app.event(
            "download.requested",
            name,
            "operator",
            Some(peer),
            &format!("download of {src} requested"),
        );
    }
    Ok((
        StatusCode::ACCEPTED,
        serde_json::json!({"name": name, "src": src, "status": "downloading", "started": started}),
    ))
}

async fn download_entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Result<Response, Error> {
    let force = matches!(q.force.as_deref(), Some("1" | "true" | "yes"));
    let (status, body) = download_by_name(&app, &name, force, peer)?;
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportUrl {
    url: String,
}

/// Result of merging a catalog file.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ImportReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    /// Names an operator added by hand; the file's version was ignored.
    pub kept_operator: Vec<String>,
    pub rejected: Vec<serde_json::Value>,
}

/// Merge a `version = 1` catalog: new names are added, names that came
/// from an earlier import are updated, names the operator added are left
/// alone, and nothing is ever deleted.
pub(crate) fn merge_catalog(app: &App, text_body: &str) -> Result<ImportReport, Error> {
    let file: CatalogFile = toml::from_str(text_body)
        .or_else(|_| serde_json::from_str(text_body))
        .map_err(|e| Error::BadRequest(format!("not a catalog file: {e}")))?;
    if file.version != 1 {
        return Err(Error::BadRequest(format!(
            "catalog version {} is not supported; expected version = 1",
            file.version
        )));
    }
    let mut report = ImportReport::default();
    for mut e in file.images {
        if let Some(s) = &mut e.sha256 {
            *s = s.to_ascii_lowercase();
        }
        if e.format.is_none() {
            e.format = ImageFormat::from_file_name(e.src.split(['?', '#']).next().unwrap_or(""));
        }
        if let Err(err) = validate_entry(&e) {
            report
                .rejected
                .push(serde_json::json!({"name": e.name, "reason": err.to_string()}));
            continue;
        }
        let name = e.name.clone();
        match app.db().entry(&name)? {
            Some(old) if old.added_by != "import" => report.kept_operator.push(name),
            Some(old) => {
                if old.entry != e {
                    app.db().update_entry(&EntryRow {
                        entry: e,
                        pinned: old.pinned,
                        added_by: "import".into(),
                    })?;
                    report.updated.push(name);
                }
            }
            None => {
                app.db().insert_entry(&EntryRow {
                    entry: e,
                    pinned: false,
                    added_by: "import".into(),
                })?;
                report.added.push(name);
            }
        }
    }
    Ok(report)
}

/// Fetch a catalog file from an http(s) URL, at most 4 MiB.
pub(crate) async fn fetch_catalog(app: &App, url: &str) -> Result<String, Error> {
    text::validate_http_url("url", url).map_err(bad)?;
    let mut resp = app
        .store
        .client
        .get(url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Error::Origin(format!("fetching the catalog from {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Error::Origin(format!(
            "fetching the catalog from {url}: the server answered {}",
            resp.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Origin(format!("reading the catalog from {url}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CATALOG {
            return Err(Error::BadRequest(format!(
                "the catalog at {url} is larger than {MAX_CATALOG} bytes"
            )));
        }
    }
    String::from_utf8(body)
        .map_err(|_| Error::BadRequest(format!("the catalog at {url} is not UTF-8")))
}

async fn import(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>, Error> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text_body, from) = if is_json {
        let req: ImportUrl = parse_body(&body)?;
        (fetch_catalog(&app, &req.url).await?, req.url)
    } else {
        (
            String::from_utf8(body.to_vec())
                .map_err(|_| Error::BadRequest("the catalog body is not UTF-8".into()))?,
            "request body".to_string(),
        )
    };
    let report = merge_catalog(&app, &text_body)?;
    app.event(
        "catalog.imported",
        &from,
        "operator",
        Some(peer),
        &format!(
            "{} added, {} updated, {} operator entries kept, {} rejected",
            report.added.len(),
            report.updated.len(),
            report.kept_operator.len(),
            report.rejected.len()
        ),
    );
    Ok(Json(report))
}

async fn list_blobs(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let (used, reserved, max) = app.store.usage();
    let blobs: Vec<_> = app
        .store
        .blobs()
        .into_iter()
        .map(|(digest, size, hits, last_access, sources)| {
            serde_json::json!({"digest": digest, "size": size, "hits": hits,
                "last_access": last_access, "sources": sources})
        })
        .collect();
    Json(
        serde_json::json!({"used_bytes": used, "reserved_bytes": reserved,
        "max_bytes": max, "blobs": blobs}),
    )
}

async fn delete_blob(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(digest): Path<String>,
) -> Result<StatusCode, Error> {
    text::validate_sha256("digest", &digest).map_err(bad)?;
    if !app.store.delete_blob(&digest)? {
        return Err(Error::NotFound(format!("no blob with sha256 {digest}")));
    }
    app.event(
        "blob.deleted",
        &digest,
        "operator",
        Some(peer),
        "deleted by the operator",
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn list_misses(State(app): State<Arc<App>>) -> Result<Json<Vec<crate::db::MissRow>>, Error> {
    Ok(Json(app.db().misses()?))
}

#[derive(Deserialize)]
struct UrlParam {
    url: String,
}

async fn dismiss_miss(
    State(app): State<Arc<App>>,
    Query(q): Query<UrlParam>,
) -> Result<StatusCode, Error> {
    if app.db().dismiss_miss(&q.url)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("no such miss".into()))
    }
}

/// A catalog name for a URL: its file name with anything outside the name
/// rules replaced, made unique with `-2`, `-3`, …
pub(crate) fn name_for_url(app: &App, url: &str) -> Result<String, Error> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let mut base: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    base = base
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(100)
        .collect();
    if base.is_empty() {
        base = "download".into();
    }
    let mut name = base.clone();
    let mut n = 2;
    while app.db().entry(&name)?.is_some() {
        name = format!("{base}-{n}");
        n += 1;
    }
    Ok(name)
}

/// Turn a missed URL into a catalog entry and start its download.
pub(crate) fn promote_miss(app: &App, url: &str, peer: SocketAddr) -> Result<String, Error> {
    text::validate_http_url("url", url).map_err(bad)?;
    let existing = app.db().entries_by_src(url)?;
    let name = match existing.first() {
        Some(e) => e.entry.name.clone(),
        None => {
            let name = name_for_url(app, url)?;
            let row = EntryRow {
                entry: CatalogEntry {
                    name: name.clone(),
                    src: url.to_string(),
                    sha256: None,
                    size: None,
                    format: ImageFormat::from_file_name(url.split(['?', '#']).next().unwrap_or("")),
                    arch: None,
                    description: None,
                },
                pinned: false,
                added_by: "operator".into(),
            };
            add_entry(app, &row, peer)?;
            name
        }
    };
    download_by_name(app, &name, false, peer)?;
    Ok(name)
}

async fn fetch_miss(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, Error> {
    let q: UrlParam = parse_body(&body)?;
    let name = promote_miss(&app, &q.url, peer)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"name": name, "src": q.url})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<u32>,
    after: Option<i64>,
}

async fn list_events(
    State(app): State<Arc<App>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<crate::db::EventRow>>, Error> {
    Ok(Json(
        app.db().events(q.limit.unwrap_or(100).min(1000), q.after)?,
    ))
}

pub(crate) fn downloads_json(app: &App) -> serde_json::Value {
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
    serde_json::json!({ "downloads": list })
}

async fn list_downloads(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(downloads_json(&app))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.store.metrics;
    let (used, reserved, max) = app.store.usage();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP withcache_{name} {help}\n# TYPE withcache_{name} {kind}\nwithcache_{name} {v}\n"
        ));
    };
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    put(
        "hits_total",
        "counter",
        "GET requests served from a cached blob.",
        c(&m.hits),
    );
    put(
        "misses_total",
        "counter",
        "Requests for URLs neither cached nor in the catalog.",
        c(&m.misses),
    );
    put(
        "bytes_served_total",
        "counter",
        "Body bytes sent to clients.",
        c(&m.bytes_served),
    );
    put(
        "downloads_started_total",
        "counter",
        "Origin downloads started.",
        c(&m.downloads_started),
    );
    put(
        "downloads_completed_total",
        "counter",
        "Origin downloads verified and stored.",
        c(&m.downloads_completed),
    );
    put(
        "downloads_failed_total",
        "counter",
        "Origin downloads that failed.",
        c(&m.downloads_failed),
    );
    put(
        "origin_bytes_total",
        "counter",
        "Bytes received from origins.",
        c(&m.origin_bytes),
    );
    put(
        "evictions_total",
        "counter",
        "Blobs evicted to make room.",
        c(&m.evictions),
    );
    put("stored_bytes", "gauge", "Bytes of cached blobs.", used);
    put(
        "reserved_bytes",
        "gauge",
        "Quota reserved by running downloads.",
        reserved,
    );
    put(
        "max_bytes",
        "gauge",
        "Quota (0 = unlimited).",
        max.unwrap_or(0),
    );
    put(
        "downloads_active",
        "gauge",
        "Downloads in progress.",
        app.store.downloads().len() as u64,
    );
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}
