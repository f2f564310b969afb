//! bty-tftp: a read-only TFTP server for the iPXE boot files.
//!
//! Firmware that boots over TFTP loads only `undionly.kpxe` or `ipxe.efi`
//! from here; everything after that goes over HTTP from bty-web. See
//! `docs/tftp.md` for the operator's view.
//!
//! # Why the protocol is written here and not taken from async-tftp
//!
//! async-tftp 0.4.2 (the well-kept Rust TFTP server crate; read at its
//! HEAD) implements RFC 1350/2347/2348/2349/7440 but was not usable as is:
//! - it binds each transfer socket to the *listening* address, so a server
//!   on `0.0.0.0:69` replies from whatever address the routing table picks;
//!   on a multi-homed host the client then drops the reply. We read the
//!   request's destination with `IP_PKTINFO`/`IPV6_RECVPKTINFO` and bind
//!   the reply socket to it, as tftpd-hpa does;
//! - it spawns one task per request with no limit on concurrent sessions;
//! - it has no hook for a per-transfer result (bytes, duration, outcome), so
//!   the log line per transfer and the "already served the binary" rule for
//!   iPXE's second request ([`second_stage`]) could not be built on it;
//! - it runs its own smol executor next to tokio, and cannot take the
//!   `tokio::net::UdpSocket` and shutdown future of the workspace contract.
//!
//! The core is therefore small and pure: [`packet`] parses and builds
//! datagrams over byte buffers (fuzzed), [`options`] negotiates, [`window`]
//! does the block arithmetic including rollover, [`path`] confines names to
//! the root. `server` and `transfer` are the thin socket loop around them.

// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod options;
pub mod packet;
pub mod path;
pub mod relay;
pub mod second_stage;
mod server;
pub mod sessions;
pub mod transfer;
pub mod window;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use relay::Relay;
pub use second_stage::Rule as SecondStageRule;

/// Default cap on blksize for IPv4 clients: a 1500-byte Ethernet MTU minus
/// the IPv4 (20), UDP (8) and TFTP (4) headers, so no block is fragmented.
/// iPXE asks for 1432, which fits.
pub const DEFAULT_MAX_BLKSIZE: u16 = 1468;

/// Default cap on blksize for IPv6 clients: the IPv6 header is 40 bytes.
pub const DEFAULT_MAX_BLKSIZE_V6: u16 = 1448;

/// Default concurrent transfers per client IP. A machine booting needs
/// one (two with a `tsize` probe); a few more cover NAT and retries.
pub const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 4;

/// Default wall time for one transfer. A bootfile (< 2 MiB) takes well
/// under 10 s even lock-step at 512 bytes with 1 ms each way.
pub const DEFAULT_TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// Default minimum average rate (64 KiB/s), which sets the deadline of
/// files too large for [`DEFAULT_TRANSFER_DEADLINE`].
pub const DEFAULT_MIN_RATE: u64 = 64 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory served; only regular files inside it are readable.
    pub root: PathBuf,
    /// Largest blksize granted to IPv4 clients (RFC 2348); larger requests
    /// get this value.
    pub max_blksize: u16,
    /// Largest blksize granted to IPv6 clients.
    pub max_blksize_v6: u16,
    /// Largest windowsize granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmit timeout when the client sends no `timeout` option.
    pub timeout: Duration,
    /// Retransmits of one window before a transfer is abandoned.
    pub retries: u32,
    /// Concurrent transfers; requests beyond get a "server busy" error.
    pub max_sessions: usize,
    /// Concurrent transfers per client IP (of `max_sessions`), so one host
    /// cannot take the whole pool; requests beyond get "server busy".
    pub max_sessions_per_client: usize,
    /// Largest `timeout` option (RFC 2349) granted; a larger one is left
    /// out of the OACK and `timeout` applies.
    pub max_client_timeout: Duration,
    /// Wall time one transfer may take, at least; see `min_rate`.
    pub transfer_deadline: Duration,
    /// Bytes per second a transfer must average: a file larger than
    /// `transfer_deadline × min_rate` gets `size / min_rate` instead.
    pub min_rate: u64,
    /// Boot files that trigger the second-stage rule.
    pub second_stage: Vec<SecondStageRule>,
    /// How long after a complete transfer of such a file a new request for
    /// it from the same client gets the chain script.
    pub second_stage_window: Duration,
    /// Where names under `grub/` are fetched from (bty-web, for the Secure
    /// Boot chain); `None` serves them from the root like any name.
    pub relay: Option<Relay>,
}

impl Options {
    /// Defaults for `root`: blksize ≤ 1468 (IPv6: 1448), windowsize ≤ 64, 1 s timeout,
    /// 5 retransmits, 64 sessions (4 per client IP), client timeout ≤ 5 s,
    /// 60 s per transfer (more for files over 3.75 MiB: 64 KiB/s), no
    /// second-stage rule, 60 s window, no relay.
    pub fn new(root: impl Into<PathBuf>) -> Options {
        Options {
            root: root.into(),
            max_blksize: DEFAULT_MAX_BLKSIZE,
            max_blksize_v6: DEFAULT_MAX_BLKSIZE_V6,
            max_windowsize: 64,
            timeout: transfer::DEFAULT_TIMEOUT,
            retries: 5,
            max_sessions: 64,
            max_sessions_per_client: DEFAULT_MAX_SESSIONS_PER_CLIENT,
            max_client_timeout: options::DEFAULT_MAX_TIMEOUT,
            transfer_deadline: DEFAULT_TRANSFER_DEADLINE,
            min_rate: DEFAULT_MIN_RATE,
            second_stage: Vec::new(),
            second_stage_window: Duration::from_secs(60),
            relay: None,
        }
    }
}

/// Serve read requests on `socket` until `shutdown` resolves; running
/// transfers then get a few seconds to finish.
pub async fn serve(
    opts: Options,
    socket: tokio::net::UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    server::serve_sockets(opts, vec![socket], shutdown).await
}

/// Like [`serve`], on several sockets (e.g. `0.0.0.0:69` and `[::]:69`)
/// sharing one session limit and second-stage record.
pub async fn serve_many(
    opts: Options,
    sockets: Vec<tokio::net::UdpSocket>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    server::serve_sockets(opts, sockets, shutdown).await
}

/// Bind a UDP socket for [`serve`]. An IPv6 address gets `IPV6_V6ONLY`, so
/// `[::]:69` and `0.0.0.0:69` can be bound side by side. Packet info is
/// switched on before binding, so even a request that arrives before
/// serving starts is answered from the address it was sent to.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    server::enable_pktinfo(&socket, addr.is_ipv6());
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}
