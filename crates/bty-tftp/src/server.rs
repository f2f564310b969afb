//! The socket loop: receive requests (with the local address they were sent
//! to), refuse what is not a read of a file in the root, and run each read
//! on its own socket bound to that local address.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::options::{negotiate, Limits, Negotiated, RFC_MAX_BLKSIZE, RFC_MIN_BLKSIZE};
use crate::packet::{self, ErrorCode, Mode, Packet, Request};
use crate::path::{self, PathError};
use crate::relay::{self, Fetcher, Refusal};
use crate::second_stage::SecondStage;
use crate::sessions::{canonical_ip, Admit, Sessions};
use crate::transfer::{self, Retransmit, Source, TransferError};
use crate::Options;

/// Largest request datagram read. Real requests are well under 600 bytes.
const RECV_BUF: usize = 2048;

/// How long shutdown waits for running transfers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the listeners and the transfers.
struct Shared {
    opts: Options,
    root: PathBuf,
    sessions: Arc<Semaphore>,
    /// Transfers by peer and client IP (the per-client cap).
    clients: Mutex<Sessions>,
    second_stage: SecondStage,
    /// The HTTP client of the Secure Boot relay, if one is configured.
    relay: Option<Fetcher>,
}

/// Where a request came from and which local address it was sent to.
#[derive(Debug, Clone, Copy)]
struct Origin {
    peer: SocketAddr,
    local: Option<IpAddr>,
    ifindex: u32,
}

/// Serve on every socket until `shutdown` resolves. See [`crate::serve`].
pub async fn serve_sockets(
    opts: Options,
    sockets: Vec<UdpSocket>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!sockets.is_empty(), "no socket to serve TFTP on");
    let shared = Arc::new(Shared::new(opts)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = tokio::task::JoinSet::new();
    for socket in sockets {
        listeners.spawn(listen(shared.clone(), socket, stop_rx.clone())?);
    }
    tokio::select! {
        _ = shutdown => {}
        res = listeners.join_next() => {
            let _ = stop_tx.send(true);
            if let Some(Ok(Err(e))) = res {
                return Err(e);
            }
        }
    }
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    drain(&shared).await;
    Ok(())
}

impl Shared {
    fn new(opts: Options) -> anyhow::Result<Shared> {
        let root = open_root(&opts)?;
        let second_stage = SecondStage::new(opts.second_stage.clone(), opts.second_stage_window)?;
        let relay = opts.relay.clone().map(Fetcher::new).transpose()?;
        Ok(Shared {
            relay,
            sessions: Arc::new(Semaphore::new(opts.max_sessions.max(1))),
            clients: Mutex::new(Sessions::new(opts.max_sessions_per_client)),
            root,
            second_stage,
            opts,
        })
    }
}

/// The root, canonical, so that `path::open` can tell what is inside it.
fn open_root(opts: &Options) -> anyhow::Result<PathBuf> {
    let root = opts.root.canonicalize().with_context(|| {
        format!(
            "opening the TFTP root {}: create it (it holds ipxe.efi and undionly.kpxe) or pass --root",
            opts.root.display()
        )
    })?;
    anyhow::ensure!(
        root.is_dir(),
        "TFTP root {} is not a directory",
        root.display()
    );
    Ok(root)
}

/// Let running transfers finish; a boot in progress should not fail
/// because the container is being restarted.
async fn drain(shared: &Shared) {
    let max = shared.opts.max_sessions.max(1) as u32;
    if tokio::time::timeout(SHUTDOWN_GRACE, shared.sessions.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!("shutting down with TFTP transfers still running");
    }
}

/// Ask the kernel for the destination address of each datagram. Failing
/// is not fatal: replies then leave from the socket's own address.
///
/// The kernel records the destination only for datagrams queued *after*
/// this is set, so [`crate::bind`] calls it before binding; serving calls
/// it again for sockets made elsewhere.
pub(crate) fn enable_pktinfo(socket: &impl std::os::fd::AsFd, v6: bool) {
    let res = if v6 {
        // A dual-stack socket also gets IPv4 datagrams; ask for both.
        let _ = setsockopt(socket, sockopt::Ipv4PacketInfo, &true);
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot enable IP_PKTINFO; replies on a multi-homed host may leave from the wrong address");
    }
}

/// Get `socket` ready to listen and log it; the future serves it.
fn listen(
    shared: Arc<Shared>,
    socket: UdpSocket,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let addr = socket
        .local_addr()
        .context("reading the TFTP socket address")?;
    enable_pktinfo(&socket, addr.is_ipv6());
    let relay = shared.opts.relay.as_ref().map(|r| r.url.as_str());
    tracing::info!(listen = %addr, root = %shared.root.display(), relay, "bty-tftp listening");
    Ok(receive(shared, socket, addr.ip(), stop))
}

/// Receive requests on `socket` until told to stop; `fallback` is the
/// reply address when the kernel does not say where a datagram went.
async fn receive(
    shared: Arc<Shared>,
    socket: UdpSocket,
    fallback: IpAddr,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let received = tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = recv_with_origin(&socket, &mut buf) => r,
        };
        let (len, truncated, mut origin) = match received {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on Linux; they
            // concern one peer, not the listener.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e).context("receiving on the TFTP socket"),
        };
        if origin.local.is_none() && !fallback.is_unspecified() {
            origin.local = Some(fallback);
        }
        if truncated {
            reply_error(origin, ErrorCode::IllegalOperation, "request too large").await;
        } else if let Some(datagram) = buf.get(..len) {
            // (recvmsg never reports more than the buffer holds.)
            handle_datagram(&shared, origin, datagram).await;
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(nix::libc::EHOSTUNREACH)
        || e.raw_os_error() == Some(nix::libc::ENETUNREACH)
}

async fn handle_datagram(shared: &Arc<Shared>, origin: Origin, data: &[u8]) {
    let peer = origin.peer;
    match packet::parse(data) {
        Ok(Packet::Rrq(req)) => start_read(shared, origin, req),
        Ok(Packet::Wrq(req)) => {
            tracing::info!(client = %peer, file = req.filename, outcome = "refused", "tftp write request refused");
            reply_error(
                origin,
                ErrorCode::AccessViolation,
                "write requests are refused: this TFTP server is read-only",
            )
            .await;
        }
        // DATA, ACK, ERROR, OACK belong to a transfer port, not here; a
        // late one from a finished transfer is harmless. Drop them.
        Ok(_) => {}
        Err(packet::ParseError::Truncated) if data.len() < 2 => {}
        Err(e) => {
            tracing::debug!(client = %peer, error = %e, "malformed TFTP packet");
            let code = match e {
                packet::ParseError::FilenameTooLong => ErrorCode::AccessViolation,
                _ => ErrorCode::IllegalOperation,
            };
            reply_error(origin, code, &format!("malformed request: {e}")).await;
        }
    }
}

fn start_read(shared: &Arc<Shared>, origin: Origin, req: Request<'_>) {
    let peer = origin.peer;
    let permit = match admit(shared, peer) {
        Ok(permit) => permit,
        // A client that retransmits its RRQ while the first one is being
        // answered must not start a second transfer.
        Err(None) => return,
        Err(Some(busy)) => return refuse_busy(origin, req.filename, busy),
    };
    let filename = req.filename.to_string();
    let mode = req.mode;
    let options: Vec<(String, String)> = req
        .options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let started = Instant::now();
        let result = run_read(&shared, origin, &filename, mode, &options).await;
        log_read(peer, &filename, started, &result);
        shared.clients(|c| c.end(peer));
    });
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy)]
enum Busy {
    /// `max_sessions_per_client` transfers run for this client IP.
    Client,
    /// `max_sessions` transfers run.
    Server,
}

/// Record a transfer for `peer` and take a session permit. `Err(None)`:
/// `peer` already has a transfer; `Err(Some)`: a limit is reached.
fn admit(shared: &Shared, peer: SocketAddr) -> Result<OwnedSemaphorePermit, Option<Busy>> {
    match shared.clients(|c| c.begin(peer)) {
        Admit::Started => {}
        Admit::Duplicate => return Err(None),
        Admit::OverCap => return Err(Some(Busy::Client)),
    }
    shared.sessions.clone().try_acquire_owned().map_err(|_| {
        shared.clients(|c| c.end(peer));
        Some(Busy::Server)
    })
}

/// A session limit is reached: tell the client to come back later.
fn refuse_busy(origin: Origin, filename: &str, busy: Busy) {
    let peer = origin.peer;
    let (why, msg) = match busy {
        Busy::Client => (
            "per-client session limit reached",
            "server busy: too many transfers from your address, retry later",
        ),
        Busy::Server => (
            "session limit reached",
            "server busy: too many transfers, retry later",
        ),
    };
    tracing::warn!(client = %peer, file = %filename, outcome = "busy", "tftp transfer refused: {why}");
    tokio::spawn(reply_error(origin, ErrorCode::NotDefined, msg));
}

impl Shared {
    /// Work on the record of running transfers.
    fn clients<R>(&self, f: impl FnOnce(&mut Sessions) -> R) -> R {
        f(&mut self.clients.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One line per transfer, whatever its outcome.
fn log_read(peer: SocketAddr, filename: &str, started: Instant, result: &Result<Done, ReadError>) {
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(done) => tracing::info!(
            client = %peer,
            file = %filename,
            bytes = done.bytes,
            duration_ms = ms,
            blksize = done.blksize,
            windowsize = done.windowsize,
            second_stage = done.second_stage,
            http_status = done.http_status,
            outcome = "ok",
            "tftp transfer"
        ),
        Err(e) => tracing::warn!(
            client = %peer,
            file = %filename,
            duration_ms = ms,
            http_status = e.http_status(),
            outcome = %e,
            "tftp transfer failed"
        ),
    }
}

struct Done {
    bytes: u64,
    blksize: u16,
    windowsize: u16,
    second_stage: bool,
    /// bty-web's status, for a relayed name.
    http_status: Option<u16>,
}

/// Why a read failed, for the log line.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("relay refused: {}", .0.message)]
    Relay(Refusal),
    #[error("{error}")]
    Transfer {
        error: TransferError,
        http_status: Option<u16>,
    },
    #[error("cannot open a reply socket: {0}")]
    Socket(io::Error),
}

impl ReadError {
    /// bty-web's status, for a relayed name it answered.
    fn http_status(&self) -> Option<u16> {
        match self {
            ReadError::Relay(r) => r.status,
            ReadError::Transfer { http_status, .. } => *http_status,
            _ => None,
        }
    }
}

async fn run_read(
    shared: &Shared,
    origin: Origin,
    filename: &str,
    mode: Mode,
    options: &[(String, String)],
) -> Result<Done, ReadError> {
    let socket = reply_socket(origin).await.map_err(ReadError::Socket)?;
    let peer = origin.peer;
    if mode != Mode::Octet {
        return Err(refuse_mode(&socket, peer, mode).await);
    }
    let client_ip = canonical_ip(peer.ip());
    let found = match (&shared.relay, relay::is_relayed(filename)) {
        (Some(fetcher), true) => match fetcher.fetch(filename, client_ip, origin.local).await {
            Ok(f) => Found {
                source: f.source,
                size: f.size,
                second_stage: false,
                http_status: Some(f.status),
            },
            Err(refusal) => return Err(refuse_relay(&socket, peer, refusal).await),
        },
        _ => match source(shared, client_ip, filename).await? {
            Ok(found) => found,
            Err(e) => return Err(refuse_path(&socket, peer, e).await),
        },
    };
    let (size, http_status) = (found.size, found.http_status);
    let neg = negotiate(&borrowed(options), size, &limits(&shared.opts, client_ip));
    let sent = send_within_deadline(&shared.opts, &socket, peer, found.source, size, &neg).await;
    let bytes = match sent {
        Ok(bytes) => bytes,
        Err(error) => {
            let error = tell_failure(&socket, peer, error).await;
            return Err(ReadError::Transfer { error, http_status });
        }
    };
    shared
        .second_stage
        .record(client_ip, filename, found.second_stage);
    Ok(Done {
        bytes,
        blksize: neg.blksize,
        windowsize: neg.windowsize,
        second_stage: found.second_stage,
        http_status,
    })
}

/// What a read request is answered with.
struct Found {
    source: Source,
    size: u64,
    /// Whether it is the second-stage script.
    second_stage: bool,
    /// bty-web's status, for a relayed name.
    http_status: Option<u16>,
}

/// bty-web did not give the file: tell the client what it said.
async fn refuse_relay(socket: &UdpSocket, peer: SocketAddr, refusal: Refusal) -> ReadError {
    send_error(socket, peer, refusal.code, &refusal.message).await;
    ReadError::Relay(refusal)
}

/// Run the transfer, ended once it takes longer than its deadline (a
/// client ACKing just often enough must not hold a session for hours).
async fn send_within_deadline(
    opts: &Options,
    socket: &UdpSocket,
    peer: SocketAddr,
    source: Source,
    size: u64,
    neg: &Negotiated,
) -> Result<u64, TransferError> {
    let limit = transfer::deadline(opts.transfer_deadline, opts.min_rate, size);
    let policy = Retransmit {
        retries: opts.retries,
    };
    tokio::time::timeout(
        limit,
        transfer::send(socket, peer, source, size, neg, policy),
    )
    .await
    .unwrap_or(Err(TransferError::Deadline { limit }))
}

/// Only octet mode is served; netascii would need a translation no boot
/// loader uses.
async fn refuse_mode(socket: &UdpSocket, peer: SocketAddr, mode: Mode) -> ReadError {
    let msg = format!("{mode} mode is not supported: request the file in octet (binary) mode");
    send_error(socket, peer, ErrorCode::IllegalOperation, &msg).await;
    ReadError::Refused(msg)
}

/// Tell the client why its file cannot be served; an I/O error's details
/// stay in the log.
async fn refuse_path(socket: &UdpSocket, peer: SocketAddr, e: PathError) -> ReadError {
    let msg = match &e {
        PathError::Io(_) => "cannot read file".to_string(),
        other => other.to_string(),
    };
    send_error(socket, peer, e.code(), &msg).await;
    ReadError::Refused(e.to_string())
}

/// What to send for `filename`: this client's second-stage script, or the
/// file under the root (`Ok(Err)`: refused, with why); its size; whether it
/// is the script.
async fn source(
    shared: &Shared,
    client_ip: IpAddr,
    filename: &str,
) -> Result<Result<Found, PathError>, ReadError> {
    if let Some(script) = shared.second_stage.script_for(client_ip, filename) {
        let size = script.len() as u64;
        return Ok(Ok(Found {
            source: Source::Memory(script),
            size,
            second_stage: true,
            http_status: None,
        }));
    }
    let root = shared.root.clone();
    let name = filename.to_string();
    let opened = tokio::task::spawn_blocking(move || path::open(&root, &name))
        .await
        .map_err(|e| ReadError::Refused(e.to_string()))?;
    Ok(opened.map(|o| Found {
        source: Source::File(Arc::new(o.file)),
        size: o.size,
        second_stage: false,
        http_status: None,
    }))
}

/// The options as `negotiate` takes them.
fn borrowed(options: &[(String, String)]) -> Vec<(&str, &str)> {
    options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The option limits for a client at `client_ip`.
fn limits(opts: &Options, client_ip: IpAddr) -> Limits {
    // IPv4-mapped clients on a dual-stack socket travel as IPv4.
    let max_blksize = if client_ip.is_ipv6() {
        opts.max_blksize_v6
    } else {
        opts.max_blksize
    };
    Limits {
        max_blksize: max_blksize.clamp(RFC_MIN_BLKSIZE, RFC_MAX_BLKSIZE),
        // A window must stay well below 65536 blocks so an ACK number maps
        // to one block (see window.rs).
        max_windowsize: opts.max_windowsize.clamp(1, 4096),
        default_timeout: opts.timeout,
        max_timeout: opts.max_client_timeout,
    }
}

/// Tell the client why the transfer ended, unless it ended it itself.
async fn tell_failure(socket: &UdpSocket, peer: SocketAddr, e: TransferError) -> TransferError {
    match &e {
        TransferError::ClientAbort { .. } => {}
        TransferError::Timeout { .. } => {
            send_error(socket, peer, ErrorCode::NotDefined, "timed out").await
        }
        TransferError::Deadline { .. } => {
            let msg = "transfer took too long: deadline exceeded";
            send_error(socket, peer, ErrorCode::NotDefined, msg).await
        }
        // bty-web's answer broke off: the client must not take what it got
        // for the whole file, and the operator should see why.
        TransferError::StreamEnded { .. } | TransferError::Stream(_) => {
            send_error(socket, peer, ErrorCode::NotDefined, &e.to_string()).await
        }
        _ => send_error(socket, peer, ErrorCode::NotDefined, "transfer failed").await,
    }
    e
}

/// A fresh socket (new transfer ID) bound to the local address the request
/// was sent to, so the reply comes from the address the client talked to.
async fn reply_socket(origin: Origin) -> io::Result<UdpSocket> {
    let bind: SocketAddr = match (origin.peer, origin.local) {
        (SocketAddr::V4(_), Some(IpAddr::V4(l))) => SocketAddrV4::new(l, 0).into(),
        (SocketAddr::V6(_), Some(IpAddr::V4(l))) => {
            SocketAddrV6::new(l.to_ipv6_mapped(), 0, 0, 0).into()
        }
        (SocketAddr::V6(_), Some(IpAddr::V6(l))) => {
            // A link-local address only means something with its interface.
            let scope = if l.is_unicast_link_local() {
                origin.ifindex
            } else {
                0
            };
            SocketAddrV6::new(l, 0, 0, scope).into()
        }
        (SocketAddr::V4(_), _) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), _) => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0).into(),
    };
    UdpSocket::bind(bind).await
}

async fn send_error(socket: &UdpSocket, peer: SocketAddr, code: ErrorCode, msg: &str) {
    // Best effort: errors are never retransmitted (RFC 1350 section 7).
    let _ = socket.send_to(&packet::error(code, msg), peer).await;
}

async fn reply_error(origin: Origin, code: ErrorCode, msg: &str) {
    if let Ok(socket) = reply_socket(origin).await {
        send_error(&socket, origin.peer, code, msg).await;
    }
}

/// `recvmsg` with the packet-info control message. Returns the length,
/// whether the datagram was cut, and its origin.
async fn recv_with_origin(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, bool, Origin)> {
    let fd = socket.as_raw_fd();
    socket
        .async_io(Interest::READABLE, || recv_now(fd, buf))
        .await
}

/// One `recvmsg` on the ready socket `fd`.
fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, bool, Origin)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo, nix::libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let peer = msg
        .address
        .as_ref()
        .and_then(to_std)
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let (local, ifindex) = match msg.cmsgs() {
        Ok(cmsgs) => cmsgs
            .filter_map(packet_info)
            .last()
            .map_or((None, 0), |(ip, index)| (Some(ip), index)),
        Err(_) => (None, 0),
    };
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    let origin = Origin {
        peer,
        local,
        ifindex,
    };
    Ok((msg.bytes, truncated, origin))
}

/// The local address and interface a packet-info message names.
fn packet_info(c: ControlMessageOwned) -> Option<(IpAddr, u32)> {
    match c {
        ControlMessageOwned::Ipv4PacketInfo(info) => {
            // ipi_spec_dst is the local address, not the header
            // destination (which may be broadcast).
            let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            Some((IpAddr::V4(ip), info.ipi_ifindex as u32))
        }
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            let local = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some((local, info.ipi6_ifindex))
        }
        _ => None,
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}
