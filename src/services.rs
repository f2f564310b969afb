//! The three services as library calls, shared by `serve` (all in one
//! process) and `internal web|withcache|tftp` (one per container). The
//! service crates own their behaviour; this only wires config to them.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};

/// bty-web's configuration: the file plus `BTY_<SECTION>_<KEY>` env.
pub fn web_config(path: &Path) -> Result<bty_web::Config> {
    bty_web::Config::load(Some(path))
        .with_context(|| format!("loading bty-web config {}", path.display()))
}

/// bty-web on `listener`.
pub async fn web(
    config: bty_web::Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bty_web::serve(config, listener, shutdown).await
}

/// withcache with `opts` on `listener`.
pub async fn withcache(
    opts: withcache::Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    withcache::serve(opts, listener, shutdown).await
}

/// bty-tftp serving `root` on `socket`.
pub async fn tftp(
    root: PathBuf,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bty_tftp::serve(bty_tftp::Options::new(root), socket, shutdown).await
}

/// Log to stderr (what engines collect), `RUST_LOG` or info by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Engines store stderr as the container log: no colour codes there.
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
