//! One read transfer on its own socket: OACK, windows of DATA, ACKs,
//! retransmits. The block arithmetic lives in [`crate::window`].

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};

use crate::options::Negotiated;
use crate::packet::{self, ErrorCode, Packet};
use crate::window::{wire, AckEffect, Window};

/// Bytes read from the file per read call. Reading a chunk at a time keeps
/// the blocking-pool hops far below one per block.
const CHUNK: usize = 256 * 1024;

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No ACK came after all retransmits.
    #[error("timed out waiting for ACK of block {block} after {retries} retransmits")]
    Timeout {
        /// Wire block number (0 = the OACK).
        block: u16,
        /// Retransmits sent.
        retries: u32,
    },
    /// The client sent an ERROR packet (also how clients abort after a
    /// tsize probe).
    #[error("client aborted with error {code}: {message}")]
    ClientAbort {
        /// Code sent by the client.
        code: u16,
        /// Message sent by the client.
        message: String,
    },
    /// The whole transfer took longer than its deadline ([`deadline`]).
    #[error("deadline of {limit:?} exceeded")]
    Deadline {
        /// The deadline the transfer had.
        limit: Duration,
    },
    /// The file shrank while it was being served.
    #[error("file changed while being served")]
    FileChanged,
    /// Socket or file I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Where the bytes come from.
pub enum Source {
    /// A file on disk, read in chunks.
    File(Arc<File>),
    /// Bytes in memory (the second-stage script).
    Memory(Arc<[u8]>),
}

/// Wall time allowed for a transfer of `size` bytes: `base`, or the time
/// at `min_rate` bytes per second if that is longer (0 means no rate term).
pub fn deadline(base: Duration, min_rate: u64, size: u64) -> Duration {
    match size.checked_div(min_rate) {
        Some(secs) => base.max(Duration::from_secs(secs.saturating_add(1))),
        None => base,
    }
}

/// Retransmit policy.
#[derive(Debug, Clone, Copy)]
pub struct Retransmit {
    /// Retransmits of one window (or the OACK) before giving up.
    pub retries: u32,
}

/// Serve `size` bytes of `source` to `peer` over `socket`; returns the
/// bytes acknowledged.
pub async fn send(
    socket: &UdpSocket,
    peer: SocketAddr,
    source: Source,
    size: u64,
    neg: &Negotiated,
    policy: Retransmit,
) -> Result<u64, TransferError> {
    let mut reader = Reader::new(source, size);
    let mut recv_buf = vec![0u8; 1024];
    if !neg.oack.is_empty() {
        send_oack(socket, peer, neg, policy, &mut recv_buf).await?;
    }
    let mut window = Window::new(size, neg.blksize, neg.windowsize);
    let mut out = Vec::with_capacity(4 + usize::from(neg.blksize));
    let mut tries = 0;
    loop {
        let first = wire(*window.pending().start());
        send_window(socket, peer, &window, &mut reader, &mut out).await?;
        match window_ack(socket, peer, &mut window, &mut recv_buf, neg.timeout).await? {
            Some(AckEffect::Done) => return Ok(window.acked_bytes()),
            Some(_) => tries = 0,
            None if tries == policy.retries => {
                return Err(TransferError::Timeout {
                    block: first,
                    retries: tries,
                })
            }
            None => tries += 1,
        }
    }
}

/// Send the OACK until the client acknowledges it (ACK 0).
async fn send_oack(
    socket: &UdpSocket,
    peer: SocketAddr,
    neg: &Negotiated,
    policy: Retransmit,
    recv_buf: &mut [u8],
) -> Result<(), TransferError> {
    let oack = packet::oack(
        &neg.oack
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>(),
    );
    let mut tries = 0;
    loop {
        socket.send_to(&oack, peer).await?;
        let deadline = Instant::now() + neg.timeout;
        match wait_ack(socket, peer, recv_buf, deadline, |b| b == 0).await? {
            Some(_) => return Ok(()),
            None if tries == policy.retries => {
                return Err(TransferError::Timeout {
                    block: 0,
                    retries: tries,
                })
            }
            None => tries += 1,
        }
    }
}

/// Send the blocks of the window that are not acknowledged yet.
async fn send_window(
    socket: &UdpSocket,
    peer: SocketAddr,
    window: &Window,
    reader: &mut Reader,
    out: &mut Vec<u8>,
) -> Result<(), TransferError> {
    let pending = window.pending();
    let (start, _) = window.span(*pending.start());
    let (end_off, end_len) = window.span(*pending.end());
    reader.ensure(start, end_off + end_len as u64).await?;
    for index in pending {
        let (off, len) = window.span(index);
        out.clear();
        packet::data_header(wire(index), out);
        out.extend_from_slice(reader.slice(off, len).ok_or(TransferError::FileChanged)?);
        socket.send_to(out.as_slice(), peer).await?;
    }
    Ok(())
}

/// Wait one timeout for an ACK that moves the window; `None` if none came.
async fn window_ack(
    socket: &UdpSocket,
    peer: SocketAddr,
    window: &mut Window,
    recv_buf: &mut [u8],
    timeout: Duration,
) -> Result<Option<AckEffect>, TransferError> {
    let deadline = Instant::now() + timeout;
    let mut effect = AckEffect::Ignored;
    let got = wait_ack(socket, peer, recv_buf, deadline, |b| {
        effect = window.on_ack(b);
        effect != AckEffect::Ignored
    })
    .await?;
    Ok(got.map(|_| effect))
}

/// Wait until `deadline` for an ACK from `peer` that `accept` takes.
/// Returns `None` on timeout. Packets from another address get ERROR 5
/// (RFC 1350: unknown transfer ID) and do not disturb the transfer.
async fn wait_ack(
    socket: &UdpSocket,
    peer: SocketAddr,
    buf: &mut [u8],
    deadline: Instant,
    mut accept: impl FnMut(u16) -> bool,
) -> Result<Option<u16>, TransferError> {
    loop {
        let (len, from) = match timeout_at(deadline, socket.recv_from(buf)).await {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        if from != peer {
            let err = packet::error(ErrorCode::UnknownTransferId, "unknown transfer ID");
            let _ = socket.send_to(&err, from).await;
            continue;
        }
        match packet::parse(buf.get(..len).unwrap_or_default()) {
            Ok(Packet::Ack(b)) if accept(b) => return Ok(Some(b)),
            Ok(Packet::Error { code, message }) => {
                return Err(TransferError::ClientAbort { code, message })
            }
            // Duplicate ACKs, stray requests and garbage: keep waiting.
            _ => {}
        }
    }
}

/// Up to `want` bytes of `file` from `start`; fewer only at its end.
fn read_up_to(file: &File, start: u64, want: usize) -> io::Result<Vec<u8>> {
    let mut data = vec![0u8; want];
    let mut filled = 0;
    while let Some(rest) = data.get_mut(filled..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, start + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    data.truncate(filled);
    Ok(data)
}

/// Read-ahead buffer over the source.
struct Reader {
    source: Source,
    size: u64,
    buf: Arc<[u8]>,
    start: u64,
}

impl Reader {
    fn new(source: Source, size: u64) -> Reader {
        let buf: Arc<[u8]> = match &source {
            Source::Memory(bytes) => bytes.clone(),
            Source::File(_) => Arc::from(Vec::new()),
        };
        Reader {
            source,
            size,
            buf,
            start: 0,
        }
    }

    /// Make bytes `start..end` available through [`Reader::slice`].
    async fn ensure(&mut self, start: u64, end: u64) -> Result<(), TransferError> {
        let have_end = self.start + self.buf.len() as u64;
        if start >= self.start && end <= have_end {
            return Ok(());
        }
        let Source::File(file) = &self.source else {
            return Err(TransferError::FileChanged);
        };
        let want = (end - start).max(CHUNK as u64).min(self.size - start) as usize;
        let file = file.clone();
        let data = tokio::task::spawn_blocking(move || read_up_to(&file, start, want))
            .await
            .map_err(io::Error::other)??;
        if (data.len() as u64) < end - start {
            return Err(TransferError::FileChanged);
        }
        self.buf = Arc::from(data);
        self.start = start;
        Ok(())
    }

    /// Bytes `off..off + len`, which [`Reader::ensure`] made available
    /// (`None` if it did not: the source is shorter than its size).
    fn slice(&self, off: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(off.checked_sub(self.start)?).ok()?;
        self.buf.get(from..from.checked_add(len)?)
    }
}

/// Default retransmit timeout when the client sends no `timeout` option.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_the_base_for_bootfiles_and_grows_with_large_files() {
        let base = Duration::from_secs(60);
        let rate = 64 * 1024;
        // ipxe.efi is about 1 MiB, undionly.kpxe 70 KiB.
        assert_eq!(deadline(base, rate, 2 << 20), base);
        assert_eq!(deadline(base, rate, 0), base);
        // 100 MiB at 64 KiB/s: 1600 s (rounded up by a second).
        assert_eq!(deadline(base, rate, 100 << 20), Duration::from_secs(1601));
        assert_eq!(deadline(base, 0, u64::MAX), base);
        assert_eq!(deadline(base, 1, u64::MAX), Duration::from_secs(u64::MAX));
    }
}
