//! The accept loop and per-connection HTTP both servers run, with the
//! limits a hostile LAN calls for (issue 12):
//!
//! - at most [`Limits::max_connections`] connections in all and
//!   [`Limits::max_connections_per_ip`] per client (an IPv4 address or an
//!   IPv6 /64, [`bty_auth::client_key`]); one over is closed at once;
//! - a request head must arrive within [`Limits::header_timeout`] of the
//!   connection waiting for it, which also ends idle keep-alive
//!   connections (hyper starts the timer when it starts waiting);
//! - a response write that makes no progress for
//!   [`Limits::idle_timeout`] (a client that stopped reading) ends the
//!   connection;
//! - no request body is longer than [`Limits::max_body`], whatever the
//!   handler (routes set tighter limits with `DefaultBodyLimit`).
//!
//! [`serve`] is the whole thing for a router; withcache, which answers
//! some requests itself before handing a connection to hyper, runs
//! [`accept_until`] with its own per-connection function and calls
//! [`Conn::serve`] for the rest.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;

/// Connection and request limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a request head may take from when the connection starts
    /// waiting for it (a new connection or an idle keep-alive one).
    pub header_timeout: Duration,
    /// How long a response write may make no progress.
    pub idle_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one client (IPv4 address, IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Longest request body any route accepts.
    pub max_body: usize,
    /// At shutdown, how long open connections may finish what they are
    /// doing before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_body: 8 << 20,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// `router` with the [`Limits::max_body`] backstop, for
    /// [`Conn::serve`] (which [`serve`] applies itself).
    pub fn limit_bodies(&self, router: Router) -> Router {
        router.layer(tower_http::limit::RequestBodyLimitLayer::new(self.max_body))
    }
}

/// Serve `router` on `listener` with `limits` until `shutdown` resolves.
pub async fn serve(
    listener: &TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let router = limits.limit_bodies(router);
    accept_until(listener, limits, shutdown, move |stream, conn| {
        let router = router.clone();
        async move { conn.serve(stream, router).await }
    })
    .await;
}

/// One admitted connection: its peer, the limits, the shutdown signal.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client.
    pub peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Conn {
    /// The server's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// HTTP/1 on `io` with `router` (with [`Limits::limit_bodies`]
    /// applied), the peer as `ConnectInfo<SocketAddr>`, until the client
    /// leaves, a limit ends it, or the server stops.
    pub async fn serve<I>(mut self, io: I, router: Router)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let io = TokioIo::new(Stalls::new(io, self.limits.idle_timeout));
        let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), req)
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stopped(&mut self.stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, %peer, "connection ended");
        }
    }
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Accept connections until `shutdown` resolves and run `handle` on each
/// one the caps admit; then let them finish for
/// [`Limits::shutdown_grace`] and drop the rest.
pub async fn accept_until<F, Fut>(
    listener: &TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    mut handle: F,
) where
    F: FnMut(TcpStream, Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let (stop_tx, stop) = watch::channel(false);
    let caps = Caps::new(limits);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over a cap: closed at once, nothing read.
                let Some(permit) = caps.admit(peer.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                let conn = Conn { peer, limits, stop: stop.clone() };
                let fut = handle(stream, conn);
                conns.spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let grace = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => break,
            next = conns.join_next() => if next.is_none() { break },
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Open connections, in all and per client key.
#[derive(Debug)]
struct Caps {
    limits: Limits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A counted connection; dropping it uncounts it.
struct Permit {
    caps: Arc<Caps>,
    key: IpAddr,
}

impl Caps {
    fn new(limits: Limits) -> Arc<Caps> {
        Arc::new(Caps {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let key = bty_auth::client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.get(&key).copied().unwrap_or(0);
        if *total >= self.limits.max_connections || mine >= self.limits.max_connections_per_ip {
            tracing::debug!(%ip, total = *total, mine, "connection over the cap closed");
            return None;
        }
        *total += 1;
        per_ip.insert(key, mine + 1);
        Some(Permit {
            caps: self.clone(),
            key,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.key);
            }
        }
    }
}

/// A stream whose writes fail once one has made no progress for `limit`.
struct Stalls<I> {
    inner: I,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> Stalls<I> {
    fn new(inner: I, limit: Duration) -> Self {
        Stalls {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write answered `poll`: arm, check or disarm the
    /// stall timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Stalls<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Stalls<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, data);
        self.watch(cx, p)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, p)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, p)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_key_and_in_all() {
        let caps = Caps::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let a2: IpAddr = "2001:db8::2".parse().unwrap();
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        let p1 = caps.admit(a).unwrap();
        let _p2 = caps.admit(a2).unwrap();
        assert!(caps.admit(a).is_none(), "same /64");
        let _p3 = caps.admit(b).unwrap();
        assert!(caps.admit("192.0.2.2".parse().unwrap()).is_none(), "total");
        drop(p1);
        assert!(caps.admit(a).is_some());
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_times_out() {
        use tokio::io::AsyncWriteExt;
        let (near, _far) = tokio::io::duplex(64);
        let mut s = Stalls::new(near, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = s.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
