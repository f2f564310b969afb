//! Per-connection front end: cached-blob GET/HEAD requests are answered
//! here with `sendfile(2)`; everything else is handed to hyper + axum.
//!
//! Why hand-written: hyper owns the socket and only writes bodies it is
//! given as bytes, so a file body costs a read into user space and a copy
//! back into the socket. `sendfile` moves page-cache pages to the socket
//! directly, which is what lets withcache keep up with nginx (see
//! bench/withcache.sh). The scope is deliberately tiny: only requests that
//! (1) parse as HTTP/1.x GET/HEAD without a body, (2) target `/b/{key}/…`
//! and (3) name a blob that is already cached and verified are answered
//! here, using the same header logic as the generic path
//! (`blob::plan_cached`). Anything else, including malformed input, goes to
//! hyper with the bytes read so far replayed, and the connection stays
//! with hyper from then on. Answers here carry an `X-Request-Id` like the
//! router's (the client's, or a new one); they get no tracing span, which
//! would cost more per request than it tells about a sendfile.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bty_http::request_id::{RequestId, X_REQUEST_ID};
use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::app::App;
use crate::blob::plan_cached;
use crate::store::Phase;

/// Longest request head we parse ourselves; longer ones go to hyper.
const MAX_HEAD: usize = 16 << 10;
/// How long an idle keep-alive connection may wait for its next request.
const IDLE: Duration = Duration::from_secs(75);

/// Serve one accepted connection.
pub(crate) async fn connection(
    app: Arc<App>,
    router: axum::Router,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let mut buf = BytesMut::with_capacity(4096);
    if app.opts.sendfile {
        loop {
            match fast_one(&app, &mut stream, &mut buf, peer).await {
                Ok(Step::Served { keep_alive: true }) => continue,
                Ok(Step::Served { keep_alive: false }) | Ok(Step::Closed) => return,
                Ok(Step::HandOff) => break,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "connection ended");
                    return;
                }
            }
        }
    }
    let io = hyper_util::rt::TokioIo::new(Rewind {
        pre: buf,
        inner: stream,
    });
    let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(error = %e, %peer, "connection ended");
    }
}

enum Step {
    Served { keep_alive: bool },
    HandOff,
    Closed,
}

async fn fast_one(
    app: &Arc<App>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
) -> io::Result<Step> {
    // Read until a complete head is buffered.
    let (head_len, method_head, path, req_headers, keep_alive) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let method = req.method.unwrap_or("");
                let head = match method {
                    "GET" => false,
                    "HEAD" => true,
                    _ => return Ok(Step::HandOff),
                };
                let path = req.path.unwrap_or("").to_string();
                let version = req.version.unwrap_or(0);
                let mut headers = HeaderMap::new();
                for h in req.headers.iter() {
                    let (Ok(k), Ok(v)) = (
                        HeaderName::from_bytes(h.name.as_bytes()),
                        HeaderValue::from_bytes(h.value),
                    ) else {
                        return Ok(Step::HandOff);
                    };
                    headers.append(k, v);
                }
                if headers.contains_key(http::header::CONTENT_LENGTH)
                    || headers.contains_key(http::header::TRANSFER_ENCODING)
                    || headers.contains_key(http::header::UPGRADE)
                    || headers.contains_key(http::header::EXPECT)
                {
                    return Ok(Step::HandOff);
                }
                let conn = headers
                    .get_all(http::header::CONNECTION)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>();
                let keep = version == 1 && !conn.iter().any(|t| t == "close");
                break (n, head, path, headers, keep);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Ok(Step::HandOff),
        }
        buf.reserve(4096);
        let n = match tokio::time::timeout(IDLE, stream.read_buf(buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(Step::Closed),
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(Step::Closed)
            } else {
                Ok(Step::HandOff)
            };
        }
    };
    let Some(src) = blob_src(&path) else {
        return Ok(Step::HandOff);
    };
    let id = RequestId::from_headers(&req_headers);
    let Some(hit) = app.store.lookup(&src) else {
        return follow(
            app,
            stream,
            buf,
            head_len,
            method_head,
            keep_alive,
            &src,
            peer,
            &id,
        )
        .await;
    };
    let Ok(file) = std::fs::File::open(&hit.path) else {
        return Ok(Step::HandOff);
    };
    buf.advance(head_len);
    let mut plan = plan_cached(&req_headers, &hit);
    plan.headers.insert(X_REQUEST_ID, id.header_value());
    write_head(stream, plan.status, &plan.headers, keep_alive).await?;
    if let (false, Some((start, len))) = (method_head, plan.body) {
        if matches!(plan.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
            app.store.touch(&hit.digest);
        }
        send_file(app, stream, &file, start, len).await?;
    }
    Ok(Step::Served { keep_alive })
}

async fn write_head(
    stream: &mut TcpStream,
    status: StatusCode,
    headers: &HeaderMap,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in headers.iter() {
        out.push_str(k.as_str());
        out.push_str(": ");
        out.push_str(v.to_str().unwrap_or(""));
        out.push_str("\r\n");
    }
    if !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await
}

/// Stream a download in progress with `sendfile` from its temp file, the
/// same contract as `blob::tail`: the last byte waits for verification, and
/// a failed or restarted download cuts the connection short of
/// Content-Length. Cases this does not cover (unknown length, anything
/// surprising before the head is written) go to the generic path.
#[allow(clippy::too_many_arguments)]
async fn follow(
    app: &Arc<App>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head_len: usize,
    method_head: bool,
    keep_alive: bool,
    src: &str,
    peer: SocketAddr,
    id: &RequestId,
) -> io::Result<Step> {
    let dl = match app.store.download(src) {
        Some(dl) => dl,
        None => match app
            .catalog
            .download_for_client(src, crate::blob::client(peer))
        {
            Ok(Some(dl)) => dl,
            _ => return Ok(Step::HandOff),
        },
    };
    let mut rx = dl.state.subscribe();
    let st = loop {
        let st = rx.borrow_and_update().clone();
        match st.phase {
            Phase::Queued | Phase::Connecting => {
                if rx.changed().await.is_err() {
                    return Ok(Step::HandOff);
                }
            }
            Phase::Running => break st,
            // Finished or failed: the generic path has the wording.
            _ => return Ok(Step::HandOff),
        }
    };
    let (Some(total), Some(path)) = (st.total, st.path.clone()) else {
        return Ok(Step::HandOff);
    };
    let generation = st.generation;
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(Step::HandOff);
    };
    buf.advance(head_len);
    let mut h = crate::blob::base_headers();
    h.insert(
        crate::blob::X_STATE,
        HeaderValue::from_static("downloading"),
    );
    if let Some(v) = dl
        .expected_sha
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        h.insert(crate::blob::X_SHA256, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(X_REQUEST_ID, id.header_value());
    write_head(stream, StatusCode::OK, &h, keep_alive).await?;
    if method_head {
        return Ok(Step::Served { keep_alive });
    }
    let mut pos = 0u64;
    loop {
        let st = rx.borrow_and_update().clone();
        if st.generation != generation {
            return Err(io::Error::other("download restarted"));
        }
        let (avail, done) = match &st.phase {
            Phase::Failed(msg) => return Err(io::Error::other(msg.clone())),
            Phase::Done { size, .. } => (*size, true),
            _ if st.verified => (st.written, true),
            _ => (st.written.min(total.saturating_sub(1)), false),
        };
        if pos < avail {
            send_file(app, stream, &file, pos, avail - pos).await?;
            pos = avail;
            continue;
        }
        if done {
            return Ok(Step::Served { keep_alive });
        }
        if rx.changed().await.is_err() {
            return Err(io::Error::other("download ended unexpectedly"));
        }
    }
}

/// The origin URL named by `/b/{key}/…`, if the path has that shape.
fn blob_src(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/b/")?;
    let rest = rest.split(['?', '#']).next()?;
    let (key, _name) = rest.split_once('/')?;
    let src = bty_proto::catalog::decode_blob_key(key)?;
    bty_proto::text::validate_http_url("url", &src).ok()?;
    Some(src)
}

async fn send_file(
    app: &Arc<App>,
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    let mut off = start as libc::off_t;
    let mut left = len;
    let (sock, fd) = (stream.as_raw_fd(), file.as_raw_fd());
    while left > 0 {
        stream.writable().await?;
        let chunk = left.min(1 << 30) as usize;
        let r = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the
            // call (we hold `stream` and `file`), and `off` is a valid
            // pointer to a local.
            let n = unsafe { libc::sendfile(sock, fd, &mut off, chunk) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        match r {
            Ok(0) => {
                // The file is shorter than its index entry says: abort the
                // connection rather than end the body short.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob file shorter than recorded",
                ));
            }
            Ok(n) => {
                left -= n;
                app.store
                    .metrics
                    .bytes_served
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A stream that first replays bytes already read from it.
struct Rewind {
    pre: BytesMut,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
