//! A real HTTP origin on 127.0.0.1 with fault injection: with or without
//! Range support, dropping the connection after N bytes, stalling, lying
//! about Content-Length, changing its content (and ETag) between requests,
//! and counting requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

/// What goes wrong on one request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Nothing.
    None,
    /// Send this many body bytes, then break the connection.
    Drop(usize),
    /// Send this many body bytes, then send nothing more (but keep the
    /// connection open).
    Stall(usize),
    /// Declare the full length but send only this many bytes, then close.
    Lie(usize),
}

pub struct Cfg {
    pub body: Bytes,
    pub ranges: bool,
    pub etag: bool,
    /// Faults for requests 1, 2, …; then `Fault::None`.
    pub faults: VecDeque<Fault>,
    /// After the first request, serve this instead (new ETag).
    pub swap_after_first: Option<Bytes>,
    pub chunk: usize,
    pub delay: Duration,
    /// Every request gets this fault (after `faults` is empty).
    pub always: Fault,
    /// Send no Content-Length (chunked).
    pub no_length: bool,
}

pub struct OState {
    pub cfg: Mutex<Cfg>,
    pub requests: AtomicUsize,
    pub range_requests: AtomicUsize,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OState>,
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl Origin {
    pub async fn start(body: Bytes) -> Origin {
        let state = Arc::new(OState {
            cfg: Mutex::new(Cfg {
                body,
                ranges: true,
                etag: true,
                faults: VecDeque::new(),
                swap_after_first: None,
                chunk: 64 << 10,
                delay: Duration::ZERO,
                always: Fault::None,
                no_length: false,
            }),
            requests: AtomicUsize::new(0),
            range_requests: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Origin { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Cfg) -> R) -> R {
        f(&mut self.state.cfg.lock().unwrap())
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn range_requests(&self) -> usize {
        self.state.range_requests.load(Ordering::SeqCst)
    }
}

async fn handle(State(st): State<Arc<OState>>, headers: HeaderMap) -> Response {
    let n = st.requests.fetch_add(1, Ordering::SeqCst);
    let (body, ranges, etag_on, fault, chunk, delay, no_length) = {
        let mut cfg = st.cfg.lock().unwrap();
        let body = cfg.body.clone();
        if n == 0 {
            if let Some(next) = cfg.swap_after_first.take() {
                cfg.body = next;
            }
        }
        let always = cfg.always;
        let fault = cfg.faults.pop_front().unwrap_or(always);
        (
            body,
            cfg.ranges,
            cfg.etag,
            fault,
            cfg.chunk,
            cfg.delay,
            cfg.no_length,
        )
    };
    let etag = format!("\"{}\"", &sha(&body)[..16]);
    let mut start = 0usize;
    let mut status = StatusCode::OK;
    if let Some(r) = headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        st.range_requests.fetch_add(1, Ordering::SeqCst);
        let if_range_ok = headers
            .get(http::header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v == etag);
        if ranges && if_range_ok {
            if let Some(a) = r
                .strip_prefix("bytes=")
                .and_then(|s| s.strip_suffix('-'))
                .and_then(|s| s.parse::<usize>().ok())
            {
                if a >= body.len() {
                    return Response::builder().status(416).body(Body::empty()).unwrap();
                }
                start = a;
                status = StatusCode::PARTIAL_CONTENT;
            }
        }
    }
    let total = body.len();
    let part = body.slice(start..);
    let declared = part.len();
    let (limit, then) = match fault {
        Fault::None => (declared, None),
        Fault::Drop(k) => (k.min(declared), Some("drop")),
        Fault::Stall(k) => (k.min(declared), Some("stall")),
        Fault::Lie(k) => (k.min(declared), Some("drop")),
    };
    let stream = async_stream(part.slice(..limit), chunk, delay, then);
    let mut b = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/html");
    if !no_length {
        b = b.header(http::header::CONTENT_LENGTH, declared);
    }
    if ranges {
        b = b.header(http::header::ACCEPT_RANGES, "bytes");
    }
    if etag_on {
        b = b.header(http::header::ETAG, &etag);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            http::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", total - 1),
        );
    }
    b.body(Body::from_stream(stream)).unwrap()
}

fn async_stream(
    data: Bytes,
    chunk: usize,
    delay: Duration,
    then: Option<&'static str>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut off = 0;
        while off < data.len() {
            let n = chunk.min(data.len() - off);
            if tx.send(Ok(data.slice(off..off + n))).await.is_err() {
                return;
            }
            off += n;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        match then {
            Some("drop") => {
                let _ = tx.send(Err(std::io::Error::other("injected drop"))).await;
            }
            Some("stall") => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            }
            _ => {}
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
