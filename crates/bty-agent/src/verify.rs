//! Reading back what landed on the target, past the page cache, and
//! hashing it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::write::{AlignedBuf, ALIGN};
use crate::{Error, Result, BLOCK, HOLD_BACK};

/// How the read-back bypassed the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMode {
    /// O_DIRECT.
    Direct,
    /// O_DIRECT refused; the cache was dropped first (and why).
    DroppedCache(String),
}

fn open(path: &Path) -> Result<(File, ReadMode)> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok((f, ReadMode::Direct)),
        Err(e) => {
            let f = File::open(path).map_err(Error::io("opening for read-back", path))?;
            // SAFETY: plain fadvise on an owned fd.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            Ok((f, ReadMode::DroppedCache(format!("O_DIRECT refused: {e}"))))
        }
    }
}

/// Buffers in flight between the reading thread and the hashing one.
const IN_FLIGHT: usize = 4;

/// sha256 of `prefix` followed by bytes `[from, to)` of `path`, read with
/// O_DIRECT in large aligned reads. `done` counts bytes hashed, for
/// progress.
///
/// A second thread reads while this one hashes: a direct read waits on the
/// device and leaves the core idle, so reading and hashing one after the
/// other costs their sum, overlapped only the larger of the two.
pub fn digest(
    path: &Path,
    prefix: &[u8],
    from: u64,
    to: u64,
    done: &AtomicU64,
) -> Result<(String, ReadMode)> {
    let (f, mode) = open(path)?;
    let direct = mode == ReadMode::Direct;
    let mut h = Sha256::new();
    h.update(prefix);
    let (full_tx, full_rx) = sync_channel::<Result<AlignedBuf>>(IN_FLIGHT);
    let (free_tx, free_rx) = channel::<AlignedBuf>();
    for _ in 0..IN_FLIGHT {
        free_tx
            .send(AlignedBuf::new(BLOCK))
            .map_err(|_| Error::Stream(std::io::Error::other("read-back buffers dropped")))?;
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut pos = from;
            while pos < to {
                // The hasher hung up: it stopped on an error of ours.
                let Ok(mut buf) = free_rx.recv() else { return };
                let want = ((to - pos) as usize).min(BLOCK);
                // Direct reads need whole sectors: read up to the next
                // boundary and hash only what belongs to the image.
                let ask = want.div_ceil(ALIGN) * ALIGN;
                let read = buf
                    .spare_prefix(ask)
                    .and_then(|b| read_at_full(&f, b, pos, direct));
                let r = match read {
                    Err(e) => Err(Error::io("reading back", path)(e)),
                    Ok(got) if got < want => Err(Error::Corrupt(format!(
                        "{} ends at byte {} but the image is {to} bytes",
                        path.display(),
                        pos + got as u64
                    ))),
                    Ok(_) => {
                        buf.len = want;
                        Ok(buf)
                    }
                };
                let failed = r.is_err();
                if full_tx.send(r).is_err() || failed {
                    return;
                }
                pos += want as u64;
            }
        });
        for r in full_rx.iter() {
            let buf = r?;
            h.update(buf.data());
            done.fetch_add(buf.len as u64, Ordering::Relaxed);
            let _ = free_tx.send(buf);
        }
        Ok::<(), Error>(())
    })?;
    Ok((hex::encode(h.finalize()), mode))
}

/// How far a [`ReadBack`] may read: everything below `upto` is written
/// and will not be written again before the read-back ends.
struct Settled {
    upto: u64,
    /// The held-back head, sent once, before anything past it is hashed.
    head: Option<Vec<u8>>,
    last: bool,
}

/// The read-back, run while the image is still being written: a thread
/// that follows the writer, makes each settled range durable (fdatasync)
/// and then reads it back past the page cache and hashes it, so that when
/// the last byte is written only the last stretch is left to read.
/// Every byte of the image is still read back after it was synced; what
/// changes is only that the reading overlaps the download.
pub struct ReadBack {
    tx: Option<Sender<Settled>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(String, ReadMode)>>>,
    head_sent: bool,
    /// Bytes read back and hashed so far (the head included once sent).
    pub verified: Arc<AtomicU64>,
}

impl ReadBack {
    /// Start following writes to `path`.
    pub fn start(path: &Path) -> ReadBack {
        let (tx, rx) = channel::<Settled>();
        let stop = Arc::new(AtomicBool::new(false));
        let verified = Arc::new(AtomicU64::new(0));
        let (path, stop2, verified2) = (path.to_path_buf(), stop.clone(), verified.clone());
        let thread = std::thread::spawn(move || follow(&path, rx, &stop2, &verified2));
        ReadBack {
            tx: Some(tx),
            stop,
            thread: Some(thread),
            head_sent: false,
            verified,
        }
    }

    /// Bytes below `upto` are written (zero runs included) and stay as
    /// they are; `head` is the held-back head once the image is past it.
    pub fn settled(&mut self, upto: u64, head: &[u8]) {
        if upto <= HOLD_BACK {
            return;
        }
        self.send(upto, head, false);
    }

    fn send(&mut self, upto: u64, head: &[u8], last: bool) {
        let head = (!self.head_sent).then(|| head.to_vec());
        self.head_sent = true;
        if let Some(tx) = &self.tx {
            // A send fails only when the thread ended on an error, which
            // `finish` returns.
            let _ = tx.send(Settled { upto, head, last });
        }
    }

    /// The image is `len` bytes, all written and synced: read the rest and
    /// return the sha256 of `head` followed by bytes `[head.len(), len)`
    /// of the target.
    pub fn finish(mut self, len: u64, head: &[u8]) -> Result<(String, ReadMode)> {
        self.send(len, head, true);
        self.tx = None;
        // Only `finish` (which takes self) and `drop` take the thread.
        let Some(thread) = self.thread.take() else {
            return Err(Error::Corrupt("the read-back thread is gone".into()));
        };
        thread
            .join()
            .map_err(|_| Error::Corrupt("the read-back thread panicked".into()))?
    }
}

impl Drop for ReadBack {
    /// Abandoned (the flash failed): stop reading and wait for the thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(
    path: &Path,
    rx: Receiver<Settled>,
    stop: &AtomicBool,
    verified: &AtomicU64,
) -> Result<(String, ReadMode)> {
    let (f, mode) = open(path)?;
    let direct = mode == ReadMode::Direct;
    let mut h = Sha256::new();
    let mut buf = AlignedBuf::new(BLOCK);
    let mut pos: Option<u64> = None; // read back up to here, once the head is in
    let mut ended = false;
    while let Ok(mut s) = rx.recv() {
        // Catch up with the writer in one go rather than message by message.
        while !s.last {
            match rx.try_recv() {
                Ok(next) => {
                    let head = s.head.take();
                    s = Settled {
                        head: head.or(next.head),
                        ..next
                    };
                }
                Err(_) => break,
            }
        }
        if let Some(head) = s.head {
            h.update(&head);
            verified.fetch_add(head.len() as u64, Ordering::Relaxed);
            pos = Some(head.len() as u64);
        }
        let Some(from) = pos else {
            return Err(Error::Corrupt(
                "read-back asked to go on before the head was known".into(),
            ));
        };
        if s.upto > from {
            // Durable first: what is read back is what stays on the disk.
            f.sync_data().map_err(Error::io("syncing", path))?;
            if !direct {
                // No O_DIRECT: drop this range from the cache now that it
                // is clean, so that it is read from the device.
                // SAFETY: plain fadvise on an owned fd.
                unsafe {
                    libc::posix_fadvise(
                        f.as_raw_fd(),
                        from as libc::off_t,
                        (s.upto - from) as libc::off_t,
                        libc::POSIX_FADV_DONTNEED,
                    )
                };
            }
            let mut at = from;
            while at < s.upto {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::Corrupt("read-back abandoned".into()));
                }
                let want = ((s.upto - at) as usize).min(BLOCK);
                // Direct reads need whole sectors: read up to the next
                // boundary and hash only what belongs to the image.
                let ask = want.div_ceil(ALIGN) * ALIGN;
                let got = buf
                    .spare_prefix(ask)
                    .and_then(|b| read_at_full(&f, b, at, direct))
                    .map_err(Error::io("reading back", path))?;
                if got < want {
                    return Err(Error::Corrupt(format!(
                        "{} ends at byte {} but the image is at least {} bytes",
                        path.display(),
                        at + got as u64,
                        s.upto
                    )));
                }
                // want <= got <= ask, which spare_prefix checked.
                h.update(buf.spare().get(..want).unwrap_or_default());
                verified.fetch_add(want as u64, Ordering::Relaxed);
                at += want as u64;
            }
            pos = Some(s.upto);
        }
        if s.last {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(Error::Corrupt("read-back stopped before the end".into()));
    }
    Ok((hex::encode(h.finalize()), mode))
}

/// Fill `buf` from `off` until full or EOF. A direct read of a block
/// device past its end fails with EINVAL; retry that last piece buffered.
fn read_at_full(f: &File, buf: &mut [u8], off: u64, direct: bool) -> std::io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read_at(rest, off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                let mut plain = File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                use std::io::Seek;
                plain.seek(std::io::SeekFrom::Start(off + n as u64))?;
                let k = plain.read(rest)?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read `[0, head.len())` back and compare with `head`.
pub fn check_head(path: &Path, head: &[u8]) -> Result<()> {
    let (f, mode) = open(path)?;
    let mut buf = AlignedBuf::new(head.len().div_ceil(ALIGN).max(1) * ALIGN);
    let got = read_at_full(&f, buf.spare(), 0, mode == ReadMode::Direct)
        .map_err(Error::io("reading back", path))?;
    let back = buf.spare().get(..got.min(head.len())).unwrap_or_default();
    if back != head {
        return Err(Error::ChecksumMismatch {
            what: "first MiB read-back",
            expected: hex::encode(Sha256::digest(head)),
            actual: hex::encode(Sha256::digest(back)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_prefix_plus_range() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        let data: Vec<u8> = (0..(5u32 << 20) + 77).map(|i| (i % 241) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let n = AtomicU64::new(0);
        let (d, _) = digest(&p, &data[..1000], 1000, data.len() as u64, &n).unwrap();
        assert_eq!(d, hex::encode(Sha256::digest(&data)));
        assert_eq!(n.load(Ordering::Relaxed), data.len() as u64 - 1000);
        let e = digest(&p, &[], 0, data.len() as u64 + 1, &n).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        check_head(&p, &data[..4096]).unwrap();
        let mut other = data[..4096].to_vec();
        other[7] ^= 1;
        assert!(matches!(
            check_head(&p, &other),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    fn buf_with(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::new(data.len().div_ceil(ALIGN).max(1) * ALIGN);
        b.spare()[..data.len()].copy_from_slice(data);
        b.len = data.len();
        b
    }

    /// 9 MiB and a bit, zero stretches inside and at the end (holes in a
    /// file whose length is only known at the end).
    fn image() -> Vec<u8> {
        let mut v: Vec<u8> = (0..(9u32 << 20) + 777).map(|i| (i % 251) as u8).collect();
        v[(3 << 20)..(5 << 20)].fill(0);
        let n = v.len();
        v[n - (1 << 20)..].fill(0);
        v
    }

    /// Write `img` in 1 MiB pieces, letting `rb` follow after each.
    fn write_following(p: &Path, img: &[u8], rb: &mut ReadBack) -> crate::write::Sink {
        let mut sink = crate::write::Sink::open_file(p, None).unwrap();
        for (i, piece) in img.chunks(1 << 20).enumerate() {
            sink.put((i as u64) << 20, buf_with(piece).data()).unwrap();
            let upto = sink.settle().unwrap();
            assert_eq!(upto, ((i as u64) << 20) + piece.len() as u64);
            rb.settled(upto, sink.head());
        }
        sink.finish_body().unwrap();
        sink
    }

    #[test]
    fn read_back_follows_the_writer_and_covers_every_byte() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        let img = image();
        std::fs::write(&p, b"").unwrap();
        let mut rb = ReadBack::start(&p);
        let verified = rb.verified.clone();
        let sink = write_following(&p, &img, &mut rb);
        let (d, _) = rb.finish(img.len() as u64, sink.head()).unwrap();
        assert_eq!(d, hex::encode(Sha256::digest(&img)));
        assert_eq!(verified.load(Ordering::Relaxed), img.len() as u64);
    }

    #[test]
    fn read_back_catches_a_byte_changed_on_the_target() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        let img = image();
        std::fs::write(&p, b"").unwrap();
        let mut rb = ReadBack::start(&p);
        let mut sink = crate::write::Sink::open_file(&p, None).unwrap();
        sink.put(0, buf_with(&img).data()).unwrap();
        sink.finish_body().unwrap();
        // The disk returns something else than was written at 7 MiB.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xee], 7 << 20).unwrap();
        f.sync_all().unwrap();
        rb.settled(sink.end(), sink.head());
        let (d, _) = rb.finish(img.len() as u64, sink.head()).unwrap();
        assert_ne!(d, hex::encode(Sha256::digest(&img)));
    }

    #[test]
    fn read_back_of_a_short_target_fails_and_an_abandoned_one_stops() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("d");
        std::fs::write(&p, vec![1u8; 3 << 20]).unwrap();
        let rb = ReadBack::start(&p);
        let e = rb.finish(5 << 20, &vec![1u8; 1 << 20]).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        assert!(e.to_string().contains("ends at byte 3145728"), "{e}");

        // Dropped mid-way (the flash failed): returns, no thread left hanging.
        let mut rb = ReadBack::start(&p);
        rb.settled(2 << 20, &vec![1u8; 1 << 20]);
        drop(rb);

        // Missing target: the error names it.
        let rb = ReadBack::start(&t.path().join("missing"));
        let e = rb.finish(5 << 20, &[]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
