//! Serving bytes: `GET|HEAD /b/{key}/{name}` and `GET|HEAD /blob?url=`.
//!
//! A cached blob gets the full HTTP treatment (ETag = digest, single-range
//! 206/416, If-None-Match, If-Range). A URL being downloaded is streamed as
//! it lands; the last byte is held back until the sha256 is verified, so a
//! client can always tell a failed download (connection aborted short of
//! Content-Length, or no final chunk) from a good one. A URL that is neither
//! cached nor in the catalog is a miss.
//!
//! The generic path here reads files on a blocking thread in large chunks;
//! plain cached GETs on a fresh connection usually take `fastpath` instead.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE,
    RANGE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use bty_http::range::{parse_range, ByteRange};

use crate::app::App;
use crate::catalog::Who;
use crate::error::Error;
use crate::store::{settled, DlState, Download, Hit, Phase, Store};

/// Body chunk size for the generic path. Large reads amortise the blocking
/// hop; 1 MiB measured best on loopback (bench/withcache.sh).
pub(crate) const READ_CHUNK: usize = 1 << 20;

pub(crate) use crate::store::X_SHA256;
pub(crate) const X_STATE: HeaderName = HeaderName::from_static("x-withcache-state");
const NOSNIFF: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-content-type-options"),
    HeaderValue::from_static("nosniff"),
);

pub(crate) const MISS_TEXT: &str =
    "cache miss: this URL is not cached and is not a catalog entry. \
An operator can fetch it from the Misses page (/ui/misses) or add a catalog entry for it.\n";

pub(crate) fn routes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/b/{key}", get(by_key_bare))
        .route("/b/{key}/", get(by_key_bare))
        .route("/b/{key}/{*name}", get(by_key))
        .route("/blob", get(by_query))
}

#[derive(serde::Deserialize)]
struct UrlQuery {
    url: Option<String>,
}

async fn by_key(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((key, _name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(src) = bty_proto::catalog::decode_blob_key(&key) else {
        return plain(Error::BadRequest(
            "missing url: the key is not URL-safe base64 of a UTF-8 URL".into(),
        ));
    };
    serve(&app, &method, &headers, &src, peer).await
}

async fn by_key_bare(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    by_key(
        State(app),
        ConnectInfo(peer),
        Path((key, String::new())),
        method,
        headers,
    )
    .await
}

async fn by_query(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<UrlQuery>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match q.url.filter(|u| !u.is_empty()) {
        Some(src) => serve(&app, &method, &headers, &src, peer).await,
        None => plain(Error::BadRequest(
            "missing url: pass ?url=<origin URL>".into(),
        )),
    }
}

/// What to send for a cached blob, decided from the request headers alone
/// (shared by this module and `fastpath`).
pub(crate) struct Plan {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Byte range of the file to send (start, length), if any body.
    pub body: Option<(u64, u64)>,
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)
    })
}

pub(crate) fn base_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(NOSNIFF.0, NOSNIFF.1);
    h
}

/// Status, headers and byte range for a cached blob.
pub(crate) fn plan_cached(req: &HeaderMap, hit: &Hit) -> Plan {
    let etag = format!("\"{}\"", hit.digest);
    let h = cached_headers(hit, &etag);
    let header = |name| req.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if header(IF_NONE_MATCH).is_some_and(|inm| etag_matches(inm, &etag)) {
        return Plan {
            status: StatusCode::NOT_MODIFIED,
            headers: h,
            body: None,
        };
    }
    let mut range = parse_range(header(RANGE), hit.size);
    // If-Range with anything but our current strong ETag (a stale tag
    // or a date) means "send it all".
    if range != ByteRange::Full && header(IF_RANGE).is_some_and(|ir| ir.trim() != etag) {
        range = ByteRange::Full;
    }
    plan_range(h, range, hit.size)
}

/// The headers every answer about a cached blob carries.
fn cached_headers(hit: &Hit, etag: &str) -> HeaderMap {
    let mut h = base_headers();
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The digest is hex, which is always a valid header value.
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&hit.digest) {
        h.insert(X_SHA256, v);
    }
    h
}

/// The answer for `range` of a blob of `size` bytes.
fn plan_range(mut h: HeaderMap, range: ByteRange, size: u64) -> Plan {
    let (status, body) = match range {
        ByteRange::Full => {
            h.insert(CONTENT_LENGTH, HeaderValue::from(size));
            (StatusCode::OK, Some((0, size)))
        }
        ByteRange::Part(a, b) => {
            h.insert(CONTENT_LENGTH, HeaderValue::from(b - a + 1));
            insert_content_range(&mut h, range, size);
            (StatusCode::PARTIAL_CONTENT, Some((a, b - a + 1)))
        }
        ByteRange::Unsatisfiable => {
            insert_content_range(&mut h, range, size);
            h.insert(CONTENT_LENGTH, HeaderValue::from(0));
            (StatusCode::RANGE_NOT_SATISFIABLE, None)
        }
    };
    Plan {
        status,
        headers: h,
        body,
    }
}

fn insert_content_range(h: &mut HeaderMap, range: ByteRange, size: u64) {
    if let Some(v) = range
        .content_range(size)
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(CONTENT_RANGE, v);
    }
}

/// An error for a client of the byte surface: the status and the message
/// as text (what curl prints), withcache's own failures only as a pointer
/// to its log.
pub(crate) fn plain(e: Error) -> Response {
    let text = if e.is_internal() {
        tracing::error!(error = %e, "internal error");
        "internal error; see the withcache log\n".to_string()
    } else {
        format!("{e}\n")
    };
    let ct = HeaderValue::from_static("text/plain; charset=utf-8");
    (e.status(), [(CONTENT_TYPE, ct), NOSNIFF], text).into_response()
}

/// The one entry point for blob requests on the generic path.
pub(crate) async fn serve(
    app: &Arc<App>,
    method: &Method,
    req: &HeaderMap,
    src: &str,
    peer: SocketAddr,
) -> Response {
    if let Err(e) = bty_proto::text::validate_http_url("url", src) {
        return plain(Error::BadRequest(format!(
            "{e}; only http and https origins are cached"
        )));
    }
    let head = method == Method::HEAD;
    // Retry once: a blob evicted between lookup and open is a cold entry.
    for _ in 0..2 {
        if let Some(resp) = serve_once(app, req, src, peer, head).await {
            return resp;
        }
    }
    plain(Error::Origin(
        "the blob vanished while it was being opened; retry".into(),
    ))
}

/// Answer from the store, a download in progress, or with a miss; `None`
/// when the blob moved underneath and a second look may find it.
async fn serve_once(
    app: &Arc<App>,
    req: &HeaderMap,
    src: &str,
    peer: SocketAddr,
    head: bool,
) -> Option<Response> {
    if let Some(hit) = app.store.lookup(src) {
        let file = std::fs::File::open(&hit.path).ok()?;
        return Some(respond_cached(&app.store, req, &hit, file, head));
    }
    let dl = match app.store.download(src) {
        Some(dl) => dl,
        None => match app.catalog.download_for_client(src, client(peer)) {
            Ok(Some(dl)) => dl,
            Ok(None) if app.store.lookup(src).is_some() => return None,
            // Not in this catalog: the upstream (which has its own catalog
            // and miss rule) decides, never an origin on a client's say-so.
            Ok(None) if app.store.upstream.is_some() => {
                crate::fetch::start(&app.store, src, None, None)?.0
            }
            Ok(None) => return Some(miss(app, src, peer)),
            Err(e) => return Some(plain(e)),
        },
    };
    follow(app.store.clone(), dl, head).await
}

pub(crate) fn respond_cached(
    store: &Arc<Store>,
    req: &HeaderMap,
    hit: &Hit,
    file: std::fs::File,
    head: bool,
) -> Response {
    let plan = plan_cached(req, hit);
    if !head && matches!(plan.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        store.touch(&hit.digest);
    }
    let body = match (head, plan.body) {
        (false, Some((start, len))) => file_body(store.clone(), file, start, len),
        _ => Body::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = plan.status;
    *resp.headers_mut() = plan.headers;
    resp
}

/// Stream `len` bytes of `file` from `start` on a blocking thread.
fn file_body(store: Arc<Store>, file: std::fs::File, start: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut off = start;
        let end = start + len;
        while off < end {
            let n = (end - off).min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            if let Err(e) = file.read_exact_at(&mut buf, off) {
                // Truncated underneath us: abort, never end short "successfully".
                let _ = tx.blocking_send(Err(e));
                return;
            }
            off += n as u64;
            store
                .metrics
                .bytes_served
                .fetch_add(n as u64, Ordering::Relaxed);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    Body::from_stream(ReceiverStream(rx))
}

struct ReceiverStream(mpsc::Receiver<std::io::Result<Bytes>>);

impl futures::Stream for ReceiverStream {
    type Item = std::io::Result<Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn miss(app: &Arc<App>, src: &str, peer: SocketAddr) -> Response {
    app.store.metrics.misses.fetch_add(1, Ordering::Relaxed);
    match app.db().record_miss(src) {
        Ok(true) => app.catalog.event(
            "blob.miss.recorded",
            src,
            client(peer),
            "first request for a URL that is not cached",
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not record a miss"),
    }
    (
        StatusCode::NOT_FOUND,
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            NOSNIFF,
        ],
        MISS_TEXT,
    )
        .into_response()
}

/// A client asking for bytes, for the event log.
pub(crate) fn client(peer: SocketAddr) -> Who<'static> {
    Who {
        actor: "client",
        ip: Some(peer.ip()),
    }
}

/// Serve a download in progress. `None` = it finished and the caller should
/// look the blob up again.
async fn follow(store: Arc<Store>, dl: Arc<Download>, head: bool) -> Option<Response> {
    let mut rx = dl.state.subscribe();
    let st = settled(&mut rx).await?;
    match &st.phase {
        Phase::Running => {}
        Phase::Failed(msg) => return Some(plain(download_failed(&dl.src, msg))),
        _ => return None,
    }
    let h = downloading_headers(&dl, st.total);
    let body = if head {
        Body::empty()
    } else {
        tail_body(store, dl, rx, &st).await?
    };
    let mut resp = Response::new(body);
    *resp.headers_mut() = h;
    Some(resp)
}

/// A failed download as the client of a blob sees it.
fn download_failed(src: &str, msg: &str) -> Error {
    if let Some(why) = msg.strip_prefix(crate::fetch::UPSTREAM_MISS) {
        return Error::NotFound(format!("cache miss: {why}"));
    }
    let text = format!("downloading {src} failed: {msg}");
    if msg.starts_with("cache full") || msg.contains("--max-bytes") {
        Error::Full(text)
    } else {
        Error::Origin(text)
    }
}

/// The headers of an answer from a download in progress.
pub(crate) fn downloading_headers(dl: &Download, total: Option<u64>) -> HeaderMap {
    let mut h = base_headers();
    h.insert(X_STATE, HeaderValue::from_static("downloading"));
    let sha = dl
        .expected_sha
        .clone()
        .or_else(|| dl.state.borrow().upstream_sha.clone());
    if let Some(v) = sha.and_then(|s| HeaderValue::from_str(&s).ok()) {
        h.insert(X_SHA256, v);
    }
    if let Some(total) = total {
        h.insert(CONTENT_LENGTH, HeaderValue::from(total));
    }
    h
}

/// A body that follows the temp file of `st`; `None` when the file is
/// gone (renamed into the store or replaced by a restart: start over).
async fn tail_body(
    store: Arc<Store>,
    dl: Arc<Download>,
    rx: watch::Receiver<DlState>,
    st: &DlState,
) -> Option<Body> {
    let path = st.path.clone()?;
    let file = tokio::fs::File::open(&path).await.ok()?;
    let (tx, rx_body) = mpsc::channel(4);
    tokio::spawn(tail(store, dl, rx, st.generation, file, tx));
    Some(Body::from_stream(ReceiverStream(rx_body)))
}

fn aborted(why: &str) -> std::io::Result<Bytes> {
    Err(std::io::Error::other(why.to_string()))
}

/// Copy the temp file to a client as it grows, holding the final byte back
/// until the download is verified.
async fn tail(
    store: Arc<Store>,
    // Held so the watch sender outlives this reader.
    _dl: Arc<Download>,
    mut rx: watch::Receiver<DlState>,
    generation: u32,
    mut file: tokio::fs::File,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut pos = 0u64;
    loop {
        let st = rx.borrow_and_update().clone();
        if st.generation != generation {
            let _ = tx.send(aborted("origin changed; download restarted")).await;
            return;
        }
        let (avail, done) = match st.readable() {
            Ok(readable) => readable,
            Err(msg) => {
                let _ = tx.send(aborted(msg)).await;
                return;
            }
        };
        if pos < avail {
            let Some(n) = send_chunk(&store, &mut file, &tx, avail - pos).await else {
                return;
            };
            pos += n;
            continue;
        }
        if done {
            return;
        }
        if rx.changed().await.is_err() {
            let _ = tx.send(aborted("download ended unexpectedly")).await;
            return;
        }
    }
}

/// Read up to `left` bytes (one chunk) and send them; `None` when the
/// client is gone or the read failed (the client is told).
async fn send_chunk(
    store: &Store,
    file: &mut tokio::fs::File,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    left: u64,
) -> Option<u64> {
    let n = left.min(READ_CHUNK as u64) as usize;
    let mut buf = vec![0u8; n];
    if let Err(e) = file.read_exact(&mut buf).await {
        let _ = tx.send(Err(e)).await;
        return None;
    }
    store
        .metrics
        .bytes_served
        .fetch_add(n as u64, Ordering::Relaxed);
    tx.send(Ok(Bytes::from(buf))).await.ok()?;
    Some(n as u64)
}
