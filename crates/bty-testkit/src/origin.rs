//! An image origin on 127.0.0.1 (or another address of this host) with
//! fault injection: what withcache downloads from and what the agent
//! streams from.
//!
//! It serves one body at every path ([`Origin::start`]) or named files
//! only ([`Origin::files`]), with `Range` (`a-b`, `a-`, `-n`), `If-Range`
//! and an `ETag`, and can, per request: break the connection after N body
//! bytes, stall after N bytes with the connection open, end the body
//! short of its `Content-Length`, change its content after the first
//! request, ignore `Range`, send no `ETag` or no length (chunked). Every
//! request is recorded.
//!
//! The origin runs on a thread of its own with its own runtime, so sync
//! tests (the agent's, which run the agent binary) and async tests use it
//! alike; it stops when dropped.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode, Uri};

use crate::data::sha256_hex;

/// What goes wrong with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// Send this many body bytes, then break the connection.
    Drop(usize),
    /// Send this many body bytes, then nothing more, with the connection
    /// kept open (the client's stall timeout has to notice).
    Stall(usize),
    /// Declare the whole length, send this many bytes and end the body
    /// (the wrong-length origin; over HTTP/1.1 the connection then
    /// closes, as it must).
    Lie(usize),
}

/// How the origin behaves; change it with [`Origin::with`].
#[derive(Debug, Clone)]
pub struct Cfg {
    /// The bytes served at every path not in `files`.
    pub body: Bytes,
    /// Bytes served at a path (without the leading `/`), ahead of `body`.
    pub files: BTreeMap<String, Bytes>,
    /// Whether `body` is served at paths not in `files`.
    pub fallback: bool,
    /// Honour `Range` (otherwise every answer is the whole body, 200).
    pub ranges: bool,
    /// Send an `ETag` (the first 16 hex digits of the body's sha256).
    pub etag: bool,
    /// Faults for the 1st, 2nd, ... request that takes one; then `always`.
    pub faults: VecDeque<Fault>,
    /// The fault for every request once `faults` is empty.
    pub always: Fault,
    /// Whether a `Range` GET takes a fault (and can trigger
    /// `swap_after_first`). False leaves an agent's probes (HEAD, small
    /// Range reads) alone, so faults hit its streaming GETs only. A HEAD
    /// never takes one.
    pub faults_hit_ranges: bool,
    /// After the first request that takes a fault slot, serve these bytes
    /// instead (with a new ETag) at the path that request asked for.
    pub swap_after_first: Option<Bytes>,
    /// Bytes per write.
    pub chunk: usize,
    /// Pause after every write.
    pub delay: Duration,
    /// Send no `Content-Length` (a chunked body).
    pub no_length: bool,
    /// The `Content-Type` of every answer.
    pub content_type: &'static str,
}

/// One request the origin answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path without the leading `/` (and without the query).
    pub path: String,
    /// The `Range` header, as sent.
    pub range: Option<String>,
}

#[derive(Debug)]
struct Shared {
    cfg: Cfg,
    log: Vec<Request>,
    slots_taken: usize,
}

/// A running origin; stops when dropped.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Origin {
    /// Serve `body` at every path.
    pub fn start(body: impl Into<Bytes>) -> Origin {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST.into(), body)
    }

    /// [`Origin::start`] listening on `ip` (one of this host's addresses)
    /// instead of 127.0.0.1: an origin withcache accepts by default.
    pub fn start_at(ip: std::net::IpAddr, body: impl Into<Bytes>) -> Origin {
        Self::with_cfg(
            ip,
            Cfg {
                body: body.into(),
                files: BTreeMap::new(),
                fallback: true,
                ranges: true,
                etag: true,
                faults: VecDeque::new(),
                always: Fault::None,
                faults_hit_ranges: true,
                swap_after_first: None,
                chunk: 64 << 10,
                delay: Duration::ZERO,
                no_length: false,
                content_type: "application/octet-stream",
            },
        )
    }

    /// Serve each `(path, bytes)` (path without the leading `/`); any
    /// other path is a 404.
    pub fn files<P: Into<String>, B: Into<Bytes>>(
        files: impl IntoIterator<Item = (P, B)>,
    ) -> Origin {
        let o = Self::start(Bytes::new());
        o.with(|c| {
            c.fallback = false;
            c.files = files
                .into_iter()
                .map(|(p, b)| (p.into(), b.into()))
                .collect();
        });
        o
    }

    fn with_cfg(ip: std::net::IpAddr, cfg: Cfg) -> Origin {
        let shared = Arc::new(Mutex::new(Shared {
            cfg,
            log: Vec::new(),
            slots_taken: 0,
        }));
        let listener = std::net::TcpListener::bind((ip, 0)).expect("binding the origin");
        let addr = listener.local_addr().expect("the origin's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        std::thread::Builder::new()
            .name(format!("origin-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the origin's runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    // Not a graceful shutdown: a stalled answer never ends.
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("the origin"),
                        _ = rx => {}
                    }
                });
            })
            .expect("the origin's thread");
        Origin {
            addr,
            shared,
            stop: Some(tx),
        }
    }

    /// `http://127.0.0.1:port` (its address).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:port/{path}` (its address).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Change the configuration (takes effect for the next request).
    pub fn with<R>(&self, f: impl FnOnce(&mut Cfg) -> R) -> R {
        f(&mut self.lock().cfg)
    }

    /// Every request answered so far, in order.
    pub fn log(&self) -> Vec<Request> {
        self.lock().log.clone()
    }

    /// How many requests were answered.
    pub fn requests(&self) -> usize {
        self.lock().log.len()
    }

    /// How many requests carried a `Range` header.
    pub fn range_requests(&self) -> usize {
        self.lock().log.iter().filter(|r| r.range.is_some()).count()
    }

    /// How many GETs (not HEADs) were answered.
    pub fn gets(&self) -> usize {
        self.lock().log.iter().filter(|r| r.method == "GET").count()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one request gets, decided under the lock.
struct Plan {
    body: Bytes,
    fault: Fault,
    ranges: bool,
    etag: bool,
    chunk: usize,
    delay: Duration,
    no_length: bool,
    content_type: &'static str,
}

fn plan(sh: &mut Shared, method: &Method, path: &str, range: Option<&str>) -> Option<Plan> {
    let c = &mut sh.cfg;
    let body = match c.files.get(path) {
        Some(b) => b.clone(),
        None if c.fallback => c.body.clone(),
        None => return None,
    };
    let takes_slot = *method == Method::GET && (range.is_none() || c.faults_hit_ranges);
    let mut fault = Fault::None;
    if takes_slot {
        fault = c.faults.pop_front().unwrap_or(c.always);
        if sh.slots_taken == 0 {
            if let Some(next) = c.swap_after_first.take() {
                match c.files.get_mut(path) {
                    Some(f) => *f = next,
                    None => c.body = next,
                }
            }
        }
        sh.slots_taken += 1;
    }
    Some(Plan {
        body,
        fault,
        ranges: c.ranges,
        etag: c.etag,
        chunk: c.chunk.max(1),
        delay: c.delay,
        no_length: c.no_length,
        content_type: c.content_type,
    })
}

/// The byte range `spec` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) asks of a
/// `total`-byte body: `Some(Ok((start, end)))` (end exclusive),
/// `Some(Err(()))` when it cannot be satisfied, `None` when it is not a
/// single range this origin understands (then the whole body is sent).
fn byte_range(spec: &str, total: usize) -> Option<Result<(usize, usize), ()>> {
    let (a, b) = spec.strip_prefix("bytes=")?.split_once('-')?;
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        return Some(if n == 0 || total == 0 {
            Err(())
        } else {
            Ok((total - n.min(total), total))
        });
    }
    let start: usize = a.parse().ok()?;
    let end = if b.is_empty() {
        total
    } else {
        b.parse::<usize>().ok()?.saturating_add(1).min(total)
    };
    Some(if start >= total || end <= start {
        Err(())
    } else {
        Ok((start, end))
    })
}

fn text_header(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

async fn answer(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_string();
    let range = text_header(&headers, header::RANGE);
    let planned = {
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        sh.log.push(Request {
            method: method.to_string(),
            path: path.clone(),
            range: range.clone(),
        });
        plan(&mut sh, &method, &path, range.as_deref())
    };
    let Some(p) = planned else {
        return status_only(StatusCode::NOT_FOUND, "no such file");
    };
    let total = p.body.len();
    let etag = format!("\"{}\"", &sha256_hex(&p.body)[..16]);
    let if_range_ok = text_header(&headers, header::IF_RANGE).is_none_or(|v| v == etag);
    let mut status = StatusCode::OK;
    let (mut start, mut end) = (0, total);
    if let (Some(spec), true, true) = (range.as_deref(), p.ranges, if_range_ok) {
        match byte_range(spec, total) {
            Some(Ok((a, b))) => {
                (start, end) = (a, b);
                status = StatusCode::PARTIAL_CONTENT;
            }
            Some(Err(())) => {
                let mut r = status_only(StatusCode::RANGE_NOT_SATISFIABLE, "");
                if let Ok(v) = format!("bytes */{total}").parse() {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            None => {}
        }
    }
    let part = p.body.slice(start..end);
    let declared = part.len();
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, p.content_type);
    if !p.no_length {
        b = b.header(header::CONTENT_LENGTH, declared);
    }
    if p.ranges {
        b = b.header(header::ACCEPT_RANGES, "bytes");
    }
    if p.etag {
        b = b.header(header::ETAG, &etag);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", end - 1),
        );
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(send(part, p.fault, p.chunk, p.delay))
    };
    b.body(body)
        .unwrap_or_else(|_| status_only(StatusCode::INTERNAL_SERVER_ERROR, "bad response"))
}

fn status_only(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

/// The body as a stream: `chunk` bytes at a time with `delay` between
/// them, cut as `fault` says.
fn send(
    data: Bytes,
    fault: Fault,
    chunk: usize,
    delay: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let limit = match fault {
        Fault::None => data.len(),
        Fault::Drop(k) | Fault::Stall(k) | Fault::Lie(k) => k.min(data.len()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut off = 0;
        while off < limit {
            let n = chunk.min(limit - off);
            if tx.send(Ok(data.slice(off..off + n))).await.is_err() {
                return;
            }
            off += n;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        // Let the server flush what was sent before the cut, so "after N
        // bytes" means N bytes reached the client.
        let settle = Duration::from_millis(50);
        match fault {
            Fault::None => {}
            Fault::Drop(_) => {
                tokio::time::sleep(settle).await;
                let _ = tx.send(Err(std::io::Error::other("injected drop"))).await;
            }
            Fault::Lie(_) => tokio::time::sleep(settle).await,
            Fault::Stall(_) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_of_every_shape() {
        assert_eq!(byte_range("bytes=0-0", 10), Some(Ok((0, 1))));
        assert_eq!(byte_range("bytes=2-", 10), Some(Ok((2, 10))));
        assert_eq!(byte_range("bytes=5-100", 10), Some(Ok((5, 10))));
        assert_eq!(byte_range("bytes=-4", 10), Some(Ok((6, 10))));
        assert_eq!(byte_range("bytes=-40", 10), Some(Ok((0, 10))));
        assert_eq!(byte_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(byte_range("bytes=0-1,5-6", 10), None);
        assert_eq!(byte_range("pages=1-2", 10), None);
    }
}
