//! `withcache --listen 0.0.0.0:3000 --data-dir /data [--max-bytes SIZE]
//! [--allow-private-origins]`

// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// withcache: the URL-keyed image cache that lets a fleet pull each image
/// once.
///
/// Admin account from the environment: WITHCACHE_ADMIN_USER (default
/// bty-lab), WITHCACHE_ADMIN_PASSWORD_HASH (argon2id PHC) or
/// WITHCACHE_ADMIN_PASSWORD; neither = open. WITHCACHE_SESSION_SECRET signs
/// UI sessions (default: <data-dir>/session-secret).
/// WITHCACHE_ALLOW_PRIVATE_ORIGINS=1 is --allow-private-origins.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:3000")]
    listen: SocketAddr,
    /// Directory for the database, blobs and temp files.
    #[arg(long, default_value = "/data")]
    data_dir: PathBuf,
    /// Disk quota for blobs, e.g. 500G or 1.5T (1024-based). Unset = no quota.
    #[arg(long, value_parser = withcache::parse_size)]
    max_bytes: Option<u64>,
    /// Downloads to run at once.
    #[arg(long, default_value_t = 4)]
    max_downloads: usize,
    /// Also fetch from origins on loopback, link-local (incl. the cloud
    /// metadata address 169.254.169.254), unspecified, multicast and
    /// broadcast addresses, as a catalog URL or a redirect names them.
    /// Without it they are refused; private networks (10/8, 172.16/12,
    /// 192.168/16, 100.64/10, fc00::/7) and public origins work either way.
    #[arg(long)]
    allow_private_origins: bool,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WITHCACHE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("withcache: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut opts = withcache::Options::from_env(cli.data_dir);
    opts.max_bytes = cli.max_bytes;
    opts.fetch.max_downloads = cli.max_downloads;
    opts.allow_private_origins |= cli.allow_private_origins;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    withcache::serve(opts, listener, shutdown).await
}
