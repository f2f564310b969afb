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
use std::os::fd::{AsRawFd, RawFd};
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
use tokio::sync::watch;

use crate::app::App;
use crate::blob::plan_cached;
use crate::store::{settled, DlState, Download, Hit, Phase};

/// Longest request head we parse ourselves; longer ones go to hyper.
const MAX_HEAD: usize = 16 << 10;
/// The slowest a client may take a `sendfile` answer: its deadline is
/// [`SEND_SLACK`] plus its length at this rate.
const MIN_RATE: u64 = 1 << 20;
/// The fixed part of a `sendfile` answer's deadline.
const SEND_SLACK: Duration = Duration::from_secs(30);

/// Serve one accepted connection.
pub(crate) async fn connection(
    app: Arc<App>,
    router: axum::Router,
    mut stream: TcpStream,
    conn: bty_http::serve::Conn,
) {
    let peer = conn.peer;
    let wait = conn.limits().header_timeout;
    let mut buf = BytesMut::with_capacity(4096);
    if app.opts.sendfile {
        loop {
            match fast_one(&app, &mut stream, &mut buf, peer, wait).await {
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
    let io = Rewind {
        pre: buf,
        inner: stream,
    };
    conn.serve(io, router).await;
}

enum Step {
    Served { keep_alive: bool },
    HandOff,
    Closed,
}

/// A parsed request head this front end may answer.
struct Head {
    /// Its length in the buffer.
    len: usize,
    /// `HEAD` rather than `GET`.
    head_only: bool,
    path: String,
    headers: HeaderMap,
    keep_alive: bool,
}

async fn fast_one(
    app: &Arc<App>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    wait: Duration,
) -> io::Result<Step> {
    let head = match read_head(stream, buf, wait).await? {
        Ok(head) => head,
        Err(step) => return Ok(step),
    };
    let Some(src) = blob_src(&head.path) else {
        return Ok(Step::HandOff);
    };
    let id = RequestId::from_headers(&head.headers);
    match app.store.lookup(&src) {
        Some(hit) => serve_cached(app, stream, buf, &head, &hit, &id).await,
        None => follow(app, stream, buf, &head, &src, peer, &id).await,
    }
}

/// Read until a complete head is buffered, all of it within `wait` (a
/// client dripping a byte at a time does not extend it, as in hyper);
/// `Err` is what to do with the connection instead.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    wait: Duration,
) -> io::Result<Result<Head, Step>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(parsed) = parse_head(buf) {
            return Ok(parsed);
        }
        buf.reserve(4096);
        let n = match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(Err(Step::Closed)),
        };
        if n == 0 {
            return Ok(Err(if buf.is_empty() {
                Step::Closed
            } else {
                Step::HandOff
            }));
        }
    }
}

/// Parse the buffered bytes; `None` while the head is incomplete (and
/// short enough to keep waiting for).
fn parse_head(buf: &[u8]) -> Option<Result<Head, Step>> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some(head_of(&req, n).ok_or(Step::HandOff)),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
        _ => Some(Err(Step::HandOff)),
    }
}

/// The head of a GET or HEAD without a body; anything else (`None`) is
/// hyper's to answer.
fn head_of(req: &httparse::Request<'_, '_>, len: usize) -> Option<Head> {
    let head_only = match req.method.unwrap_or("") {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let headers = header_map(req.headers)?;
    let with_body = [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::EXPECT,
    ];
    if with_body.iter().any(|h| headers.contains_key(h)) {
        return None;
    }
    let keep_alive = req.version.unwrap_or(0) == 1 && !asks_close(&headers);
    Some(Head {
        len,
        head_only,
        path: req.path.unwrap_or("").to_string(),
        headers,
        keep_alive,
    })
}

/// httparse's headers as a `HeaderMap`; `None` if one is not valid HTTP.
fn header_map(raw: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for h in raw {
        let k = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let v = HeaderValue::from_bytes(h.value).ok()?;
        headers.append(k, v);
    }
    Some(headers)
}

/// Whether `Connection` lists `close`.
fn asks_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Answer from a cached, verified blob.
async fn serve_cached(
    app: &Arc<App>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &Head,
    hit: &Hit,
    id: &RequestId,
) -> io::Result<Step> {
    let Ok(file) = std::fs::File::open(&hit.path) else {
        return Ok(Step::HandOff);
    };
    buf.advance(head.len);
    let mut plan = plan_cached(&head.headers, hit);
    plan.headers.insert(X_REQUEST_ID, id.header_value());
    write_head(stream, plan.status, &plan.headers, head.keep_alive).await?;
    if let (false, Some((start, len))) = (head.head_only, plan.body) {
        if matches!(plan.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
            app.store.touch(&hit.digest);
        }
        send_file(app, stream, &file, start, len).await?;
    }
    Ok(Step::Served {
        keep_alive: head.keep_alive,
    })
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
async fn follow(
    app: &Arc<App>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &Head,
    src: &str,
    peer: SocketAddr,
    id: &RequestId,
) -> io::Result<Step> {
    let Some(dl) = download_of(app, src, peer) else {
        return Ok(Step::HandOff);
    };
    let mut rx = dl.state.subscribe();
    // Finished or failed: the generic path has the wording.
    let Some(st) = settled(&mut rx)
        .await
        .filter(|st| st.phase == Phase::Running)
    else {
        return Ok(Step::HandOff);
    };
    let (Some(total), Some(path)) = (st.total, st.path.clone()) else {
        return Ok(Step::HandOff);
    };
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(Step::HandOff);
    };
    buf.advance(head.len);
    let mut h = crate::blob::downloading_headers(&dl, Some(total));
    h.insert(X_REQUEST_ID, id.header_value());
    write_head(stream, StatusCode::OK, &h, head.keep_alive).await?;
    if !head.head_only {
        send_growing(app, stream, &file, &mut rx, st.generation).await?;
    }
    Ok(Step::Served {
        keep_alive: head.keep_alive,
    })
}

/// The download of `src` under way, or one started for this client as
/// the catalog allows.
fn download_of(app: &App, src: &str, peer: SocketAddr) -> Option<Arc<Download>> {
    match app.store.download(src) {
        Some(dl) => Some(dl),
        None => app
            .catalog
            .download_for_client(src, crate::blob::client(peer))
            .ok()
            .flatten(),
    }
}

/// Send the temp file as it grows, until the download is done.
async fn send_growing(
    app: &Arc<App>,
    stream: &TcpStream,
    file: &std::fs::File,
    rx: &mut watch::Receiver<DlState>,
    generation: u32,
) -> io::Result<()> {
    let mut pos = 0u64;
    loop {
        let st = rx.borrow_and_update().clone();
        if st.generation != generation {
            return Err(io::Error::other("download restarted"));
        }
        let (avail, done) = st.readable().map_err(io::Error::other)?;
        if pos < avail {
            send_file(app, stream, file, pos, avail - pos).await?;
            pos = avail;
            continue;
        }
        if done {
            return Ok(());
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

/// Send `len` bytes of `file` from `start`, within [`send_deadline`].
async fn send_file(
    app: &Arc<App>,
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    let deadline = send_deadline(len);
    match tokio::time::timeout(deadline, send_all(app, stream, file, start, len)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took more than {deadline:?} for {len} bytes"),
        )),
    }
}

/// How long sending `len` bytes may take: [`SEND_SLACK`] plus `len` at
/// [`MIN_RATE`].
fn send_deadline(len: u64) -> Duration {
    SEND_SLACK + Duration::from_secs(len / MIN_RATE)
}

async fn send_all(
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
        match stream.try_io(Interest::WRITABLE, || sendfile(sock, fd, &mut off, chunk)) {
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

/// One `sendfile(2)` of up to `chunk` bytes from `*off`, which it advances.
fn sendfile(sock: RawFd, fd: RawFd, off: &mut libc::off_t, chunk: usize) -> io::Result<u64> {
    // SAFETY: `off` is a valid pointer to an off_t; the descriptors are
    // the caller's, held open for the call (a closed one is EBADF, not UB).
    let n = unsafe { libc::sendfile(sock, fd, off, chunk) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as u64)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sendfile_answer_has_30_s_plus_1_s_per_mib() {
        assert_eq!(send_deadline(0), Duration::from_secs(30));
        assert_eq!(send_deadline(4 << 30), Duration::from_secs(30 + 4096));
    }
}
