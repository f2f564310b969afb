//! One read transfer on its own socket: OACK, windows of DATA, ACKs,
//! retransmits. The block arithmetic lives in [`crate::window`].

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
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
    /// A streamed source (bty-web's answer to a relayed name) ended before
    /// the size it announced.
    #[error("bty-web's answer ended at byte {at} of the {size} its Content-Length announced")]
    StreamEnded {
        /// Bytes received.
        at: u64,
        /// Bytes announced.
        size: u64,
    },
    /// A streamed source failed or stalled.
    #[error("reading bty-web's answer failed: {0}")]
    Stream(String),
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
    /// A body read as the transfer advances (a relayed HTTP answer): only
    /// the bytes from the oldest unacknowledged block on are kept.
    Stream(ByteStream),
}

/// A stream of byte chunks that must each arrive within `stall`.
pub struct ByteStream {
    chunks: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    stall: Duration,
}

impl ByteStream {
    /// Wrap `chunks`; a chunk that takes longer than `stall` to arrive
    /// fails the transfer.
    pub fn new(
        chunks: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        stall: Duration,
    ) -> ByteStream {
        ByteStream {
            chunks: Box::pin(chunks),
            stall,
        }
    }

    /// The next chunk; `None` at the end of the stream.
    async fn next(&mut self) -> Result<Option<Bytes>, TransferError> {
        match tokio::time::timeout(self.stall, self.chunks.next()).await {
            Err(_) => Err(TransferError::Stream(format!(
                "no data for {:?}",
                self.stall
            ))),
            Ok(Some(Err(e))) => Err(TransferError::Stream(e.to_string())),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(None) => Ok(None),
        }
    }
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
///
/// The window only moves forward: [`Reader::ensure`] is asked for the
/// bytes from the oldest unacknowledged block to the end of the window,
/// and a window may be sent again until it is acknowledged. A stream
/// therefore keeps exactly those bytes (plus the rest of the last chunk
/// read), whatever the size of the file.
struct Reader {
    source: Source,
    size: u64,
    buf: Held,
    start: u64,
}

/// The bytes a [`Reader`] holds.
enum Held {
    /// The whole of a memory source, shared with it.
    Shared(Arc<[u8]>),
    /// A chunk read from a file, or the unacknowledged tail of a stream.
    Owned(Vec<u8>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Shared(b) => b,
            Held::Owned(b) => b,
        }
    }
}

impl Reader {
    fn new(source: Source, size: u64) -> Reader {
        let buf = match &source {
            Source::Memory(bytes) => Held::Shared(bytes.clone()),
            Source::File(_) | Source::Stream(_) => Held::Owned(Vec::new()),
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
        let have_end = self.start + self.buf.bytes().len() as u64;
        if start >= self.start && end <= have_end {
            return Ok(());
        }
        let file = match &mut self.source {
            Source::File(file) => file.clone(),
            Source::Memory(_) => return Err(TransferError::FileChanged),
            Source::Stream(stream) => {
                let Held::Owned(buf) = &mut self.buf else {
                    return Err(TransferError::FileChanged);
                };
                return fill_from_stream(stream, buf, &mut self.start, start, end, self.size).await;
            }
        };
        let want = (end - start).max(CHUNK as u64).min(self.size - start) as usize;
        let data = tokio::task::spawn_blocking(move || read_up_to(&file, start, want))
            .await
            .map_err(io::Error::other)??;
        if (data.len() as u64) < end - start {
            return Err(TransferError::FileChanged);
        }
        self.buf = Held::Owned(data);
        self.start = start;
        Ok(())
    }

    /// Bytes `off..off + len`, which [`Reader::ensure`] made available
    /// (`None` if it did not: the source is shorter than its size).
    fn slice(&self, off: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(off.checked_sub(self.start)?).ok()?;
        self.buf.bytes().get(from..from.checked_add(len)?)
    }

    /// Bytes held in memory for this transfer (for the memory tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        match &self.buf {
            Held::Shared(_) => 0,
            Held::Owned(b) => b.capacity(),
        }
    }
}

/// Drop the bytes of `buf` (which starts at `*buf_start`) before `start`
/// and read `stream` until `buf` reaches `end`. Going back before
/// `*buf_start` is impossible: those bytes are gone from the stream.
async fn fill_from_stream(
    stream: &mut ByteStream,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
    start: u64,
    end: u64,
    size: u64,
) -> Result<(), TransferError> {
    let Some(drop) = start.checked_sub(*buf_start) else {
        return Err(TransferError::Stream(format!(
            "byte {start} was asked for again after it was acknowledged"
        )));
    };
    let drop = usize::try_from(drop)
        .map_err(io::Error::other)?
        .min(buf.len());
    buf.drain(..drop);
    *buf_start += drop as u64;
    // More than the window after its start never needs to be held: a
    // chunk larger than that is rare (hyper yields ≤ its read buffer),
    // and `shrink_to` below returns what a burst took.
    while *buf_start + (buf.len() as u64) < end {
        match stream.next().await? {
            Some(chunk) => {
                let room = size.saturating_sub(*buf_start + buf.len() as u64);
                let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                buf.extend_from_slice(chunk.get(..take).unwrap_or_default());
            }
            None => {
                return Err(TransferError::StreamEnded {
                    at: *buf_start + buf.len() as u64,
                    size,
                })
            }
        }
    }
    buf.shrink_to((end - *buf_start) as usize + STREAM_SLACK);
    Ok(())
}

/// Bytes a stream buffer may keep above what the window needs before its
/// allocation is given back (a few of hyper's reads).
const STREAM_SLACK: usize = 64 * 1024;

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

    /// `size` bytes of a pattern in chunks of `chunk` bytes, made as they
    /// are read (so the test itself holds no copy of the body).
    fn pattern_stream(size: usize, chunk: usize) -> ByteStream {
        let chunks = (0..size.div_ceil(chunk)).map(move |i| {
            let from = i * chunk;
            let to = (from + chunk).min(size);
            Ok(Bytes::from((from..to).map(pattern).collect::<Vec<u8>>()))
        });
        ByteStream::new(futures::stream::iter(chunks), Duration::from_secs(5))
    }

    fn pattern(i: usize) -> u8 {
        (i % 251) as u8
    }

    #[tokio::test]
    async fn a_stream_is_held_only_from_the_oldest_unacked_block() {
        // 30 MB, the size of a netboot kernel and initrd, through windows
        // of 64 blocks of 1468 bytes, in 16 KiB chunks as hyper yields.
        let (size, blksize, windowsize, chunk) = (30_000_000u64, 1468u16, 64u16, 16 * 1024);
        let mut reader = Reader::new(Source::Stream(pattern_stream(size as usize, chunk)), size);
        let mut window = Window::new(size, blksize, windowsize);
        let window_bytes = usize::from(blksize) * usize::from(windowsize);
        let mut most = 0;
        let mut round = 0u64;
        loop {
            let pending = window.pending();
            let (start, _) = window.span(*pending.start());
            let (end_off, end_len) = window.span(*pending.end());
            reader
                .ensure(start, end_off + end_len as u64)
                .await
                .unwrap();
            // Every block of the window is there, byte for byte, also when
            // the same window is asked for again (a retransmit).
            for _ in 0..1 + u64::from(round % 7 == 0) {
                for index in pending.clone() {
                    let (off, len) = window.span(index);
                    let got = reader.slice(off, len).unwrap();
                    assert!(got
                        .iter()
                        .zip(off as usize..)
                        .all(|(b, i)| *b == pattern(i)));
                }
                reader
                    .ensure(start, end_off + end_len as u64)
                    .await
                    .unwrap();
            }
            most = most.max(reader.held());
            // Every third round the client lost a block: it ACKs half.
            let ack = if round % 3 == 1 && pending.end() > pending.start() {
                pending.start() + (pending.end() - pending.start()) / 2
            } else {
                *pending.end()
            };
            round += 1;
            if window.on_ack(crate::window::wire(ack)) == crate::window::AckEffect::Done {
                break;
            }
        }
        assert_eq!(window.acked_bytes(), size);
        assert!(
            most <= window_bytes + chunk + STREAM_SLACK,
            "held {most} bytes for a {window_bytes}-byte window"
        );
        // Bytes before what is held are gone for good.
        assert!(matches!(
            reader.ensure(0, 10).await,
            Err(TransferError::Stream(_))
        ));
    }

    #[tokio::test]
    async fn a_short_or_stalled_stream_fails_the_transfer() {
        let mut reader = Reader::new(Source::Stream(pattern_stream(1000, 300)), 2000);
        reader.ensure(0, 512).await.unwrap();
        match reader.ensure(512, 1024).await {
            Err(TransferError::StreamEnded {
                at: 1000,
                size: 2000,
            }) => {}
            other => panic!("{:?}", other.err()),
        }
        let first = futures::stream::iter([Ok(Bytes::from(vec![1u8; 100]))]);
        let stalled = ByteStream::new(
            first.chain(futures::stream::pending()),
            Duration::from_millis(100),
        );
        let mut reader = Reader::new(Source::Stream(stalled), 1000);
        let t = tokio::time::Instant::now();
        let e = reader.ensure(0, 512).await.unwrap_err();
        assert!(e.to_string().contains("no data for"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        let broken = futures::stream::iter([Err(io::Error::other("connection reset"))]);
        let mut reader = Reader::new(
            Source::Stream(ByteStream::new(broken, Duration::from_secs(1))),
            10,
        );
        let e = reader.ensure(0, 10).await.unwrap_err();
        assert!(e.to_string().contains("connection reset"), "{e}");
    }
}
