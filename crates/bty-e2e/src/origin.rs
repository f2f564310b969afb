//! A small origin HTTP server for test images, with fault injection.
//!
//! It plays the image host a catalog entry points at (withcache downloads
//! from it, or the agent directly when no withcache is configured). GET and
//! HEAD, one `Range` per request, a strong ETag, and optional faults: cut
//! the connection after N body bytes on the first N full-body responses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

/// What the origin serves and how it misbehaves.
#[derive(Clone, Default)]
pub struct Origin {
    files: Arc<Mutex<HashMap<String, Bytes>>>,
    /// Cut responses after this many body bytes...
    pub cut_after: Option<usize>,
    /// ...for this many responses (then behave).
    cuts_left: Arc<AtomicUsize>,
    /// Pace full-body responses at about this many bytes per second.
    pub rate: Option<usize>,
    /// Every request: (method, path, range header).
    log: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Origin {
    /// An origin with no faults.
    pub fn new() -> Origin {
        Origin::default()
    }

    /// Cut the first `times` body responses after `bytes` bytes.
    pub fn with_cuts(mut self, bytes: usize, times: usize) -> Origin {
        self.cut_after = Some(bytes);
        self.cuts_left.store(times, Ordering::SeqCst);
        self
    }

    /// Send bodies at about `bytes_per_s` (a slow link), so a test can act
    /// while a transfer is under way.
    pub fn with_rate(mut self, bytes_per_s: usize) -> Origin {
        self.rate = Some(bytes_per_s);
        self
    }

    /// Serve `bytes` at `/<name>`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Bytes::from(bytes));
    }

    /// Requests so far: (method, path, range).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serve on `listener` until `stop` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = axum::Router::new()
            .route("/{*name}", axum::routing::get(file))
            .with_state(self)
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    }
}

async fn file(
    State(o): State<Origin>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    o.log.lock().unwrap_or_else(|e| e.into_inner()).push((
        method.to_string(),
        name.clone(),
        range.clone(),
    ));
    let Some(bytes) = o
        .files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned()
    else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let len = bytes.len();
    let etag = format!("\"{}\"", &crate::disk::sha256_hex(&bytes)[..16]);
    // bytes=A- or bytes=A-B; anything else is the whole file.
    let (status, start, end) = match range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let a: usize = a.parse().ok()?;
            let b: usize = if b.is_empty() {
                len.checked_sub(1)?
            } else {
                b.parse().ok()?
            };
            (a <= b && a < len).then_some((a, b.min(len - 1)))
        }) {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        None => (StatusCode::OK, 0, len),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap_or_default();
    }
    let body = bytes.slice(start..end);
    let cut = o.cut_after.filter(|_| {
        o.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    });
    match cut {
        Some(n) if n < body.len() => {
            // Send n bytes, then fail the body: hyper drops the connection
            // mid-response, as a crashed origin or a broken link would.
            let head = body.slice(..n);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(head),
                Err(std::io::Error::other(
                    "bty-e2e origin: injected connection drop",
                )),
            ];
            resp.body(Body::from_stream(cut_stream(chunks)))
                .unwrap_or_default()
        }
        _ => match o.rate {
            Some(rate) => resp
                .body(Body::from_stream(paced(body, rate)))
                .unwrap_or_default(),
            None => resp.body(Body::from(body)).unwrap_or_default(),
        },
    }
}

/// `body` in 64 KiB chunks at about `rate` bytes per second.
fn paced(body: Bytes, rate: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    const CHUNK: usize = 64 << 10;
    let pause = std::time::Duration::from_secs_f64(CHUNK as f64 / rate.max(1) as f64);
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(CHUNK)
        .map(|i| body.slice(i..(i + CHUNK).min(body.len())))
        .collect();
    futures::stream::iter(chunks).then(move |c| async move {
        tokio::time::sleep(pause).await;
        Ok(c)
    })
}

/// A stream over a vector, with a pause before the error so the first
/// chunk is flushed to the client first.
fn cut_stream(
    items: Vec<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::iter(items).then(|item| async move {
        if item.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        item
    })
}
