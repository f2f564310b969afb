//! The three services as library calls, shared by `serve` (all in one
//! process) and `internal web|withcache|tftp` (one per container).
//!
//! Until the service crates expose their entry points (see
//! brief-contracts.md) these are stand-ins answering /healthz and TFTP
//! probes, so the engine driver can be proven end to end.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tokio::net::{TcpListener, UdpSocket};

/// bty-web from a bty.toml (+ BTY_* env when `apply_env`).
pub async fn web(
    config: &Path,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let _ = config;
    crate::internal::serve_dummy(listener, shutdown).await
}

/// withcache over `data`, settings from WITHCACHE_* env.
pub async fn withcache(
    data: PathBuf,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let _ = data;
    crate::internal::serve_dummy(listener, shutdown).await
}

/// bty-tftp serving `root`.
pub async fn tftp(
    root: PathBuf,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let _ = root;
    // Stand-in: answer every RRQ with TFTP ERROR 1 so health probes pass.
    tokio::pin!(shutdown);
    let mut buf = [0u8; 1500];
    loop {
        let (_, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let _ = socket.send_to(b"\x00\x05\x00\x01not yet\x00", from).await;
    }
}
