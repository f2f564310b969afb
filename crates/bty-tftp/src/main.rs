//! `bty-tftp`: command-line wrapper around the `bty_tftp` library.

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
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Read-only TFTP server for the iPXE boot files.
///
/// Serves regular files inside --root to firmware that boots over TFTP
/// (undionly.kpxe, ipxe.efi). Write requests are refused. A leading `/` in
/// a requested name is ignored, as with `in.tftpd -s`.
#[derive(Debug, Parser)]
#[command(name = "bty-tftp", version)]
struct Cli {
    /// Address to listen on; give it twice for IPv4 and IPv6, e.g.
    /// `--listen 0.0.0.0:69 --listen [::]:69`.
    #[arg(
        long,
        default_value = "0.0.0.0:69",
        env = "BTY_TFTP_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<SocketAddr>,

    /// Directory to serve (bty-web's boot dir, mounted read-only).
    #[arg(long, default_value = "/var/lib/bty/boot", env = "BTY_TFTP_ROOT")]
    root: PathBuf,

    /// Largest block size granted to IPv4 clients (RFC 2348). 1468 fits a
    /// 1500-byte Ethernet MTU; raise it only on jumbo-frame networks.
    #[arg(long, default_value_t = bty_tftp::DEFAULT_MAX_BLKSIZE,
          value_parser = clap::value_parser!(u16).range(512..=65464))]
    max_blksize: u16,

    /// Largest block size granted to IPv6 clients (1448 fits a 1500 MTU).
    #[arg(long, default_value_t = bty_tftp::DEFAULT_MAX_BLKSIZE_V6,
          value_parser = clap::value_parser!(u16).range(512..=65464))]
    max_blksize_v6: u16,

    /// Largest window size granted (RFC 7440).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_windowsize: u16,

    /// Retransmit timeout in milliseconds when the client asks for none.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=255_000))]
    timeout_ms: u64,

    /// Retransmits of one window before a transfer is abandoned.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,

    /// Concurrent transfers; more get a "server busy" error.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_sessions: u64,

    /// Concurrent transfers per client IP; more get "server busy". Keeps
    /// one host from taking every session.
    #[arg(long, default_value_t = bty_tftp::DEFAULT_MAX_SESSIONS_PER_CLIENT as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_sessions_per_client: u64,

    /// Largest `timeout` option (seconds) granted to a client; a larger
    /// one is left out of the OACK and --timeout-ms applies.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=255))]
    max_client_timeout: u64,

    /// Seconds one transfer may take (longer for files bigger than this
    /// times --min-rate).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    transfer_deadline: u64,

    /// Bytes per second a transfer must average; sets the deadline of
    /// large files (size / rate when over --transfer-deadline).
    #[arg(long, default_value_t = bty_tftp::DEFAULT_MIN_RATE,
          value_parser = clap::value_parser!(u64).range(1..))]
    min_rate: u64,

    /// Break the stock-iPXE reload loop for boot file NAME: a client that
    /// completed a transfer of NAME within --second-stage-window gets an
    /// iPXE script chaining to URL instead (default URL:
    /// http://${next-server}:8080/pxe-bootstrap.ipxe). Repeatable.
    #[arg(long, value_name = "NAME[=URL]")]
    second_stage: Vec<bty_tftp::SecondStageRule>,

    /// Seconds after a complete binary transfer during which the next
    /// request from that client gets the script.
    #[arg(long, default_value_t = 60)]
    second_stage_window: u64,

    /// Relay names under `grub/` (the Secure Boot chain's GRUB) to bty-web
    /// at this URL, e.g. http://127.0.0.1:8080. Needs the key bty-web has
    /// as `[pxe] relay_key`, from BTY_TFTP_RELAY_KEY or --relay-key-file.
    #[arg(long, value_name = "URL", env = bty_tftp::relay::RELAY_ENV)]
    relay: Option<String>,

    /// File holding the relay key (read at start; surrounding whitespace
    /// is ignored). Overrides BTY_TFTP_RELAY_KEY. The key is never taken
    /// on the command line, where `ps` would show it.
    #[arg(long, value_name = "PATH")]
    relay_key_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bty-tftp: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One thread: a TFTP transfer is a chain of tiny request/response
    // steps, and keeping the socket driver and the transfer task on one
    // thread avoids a cross-thread wake-up per block. File reads still go
    // to the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let relay = bty_tftp::Relay::from_env(cli.relay.as_deref(), cli.relay_key_file.as_deref())?;
    runtime.block_on(async {
        let mut sockets = Vec::new();
        for addr in &cli.listen {
            let socket = bty_tftp::bind(*addr).with_context(|| {
                format!("binding UDP {addr} (port 69 needs root or CAP_NET_BIND_SERVICE)")
            })?;
            sockets.push(socket);
        }
        let opts = bty_tftp::Options {
            max_blksize: cli.max_blksize,
            max_blksize_v6: cli.max_blksize_v6,
            max_windowsize: cli.max_windowsize,
            timeout: Duration::from_millis(cli.timeout_ms),
            retries: cli.retries,
            max_sessions: cli.max_sessions as usize,
            max_sessions_per_client: cli.max_sessions_per_client as usize,
            max_client_timeout: Duration::from_secs(cli.max_client_timeout),
            transfer_deadline: Duration::from_secs(cli.transfer_deadline),
            min_rate: cli.min_rate,
            second_stage: cli.second_stage,
            second_stage_window: Duration::from_secs(cli.second_stage_window),
            relay,
            ..bty_tftp::Options::new(cli.root)
        };
        bty_tftp::serve_many(opts, sockets, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("bty-tftp shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "bty-tftp",
            "--listen",
            "0.0.0.0:69",
            "--listen",
            "[::]:69",
            "--root",
            "/srv",
            "--second-stage",
            "undionly.kpxe",
        ])
        .unwrap();
        assert_eq!(cli.listen.len(), 2);
        assert_eq!(cli.second_stage[0].file, "undionly.kpxe");
        assert!(Cli::try_parse_from(["bty-tftp", "--max-blksize", "70000"]).is_err());
        assert!(Cli::try_parse_from(["bty-tftp", "--second-stage", "../x"]).is_err());
        let cli = Cli::try_parse_from([
            "bty-tftp",
            "--relay",
            "http://127.0.0.1:8080",
            "--relay-key-file",
            "/run/key",
        ])
        .unwrap();
        assert_eq!(cli.relay.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(cli.relay_key_file, Some(PathBuf::from("/run/key")));
        // The key itself is not a flag.
        assert!(Cli::try_parse_from(["bty-tftp", "--relay-key", "k"]).is_err());
    }
}
