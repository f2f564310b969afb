//! Reading back what landed on the target, past the page cache, and
//! hashing it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel};

use sha2::{Digest, Sha256};

use crate::write::{AlignedBuf, ALIGN};
use crate::{Error, Result, BLOCK};

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
            .expect("receiver alive");
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
                let r = match read_at_full(&f, &mut buf.spare()[..ask], pos, direct) {
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

/// Fill `buf` from `off` until full or EOF. A direct read of a block
/// device past its end fails with EINVAL; retry that last piece buffered.
fn read_at_full(f: &File, buf: &mut [u8], off: u64, direct: bool) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                let mut plain = File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                use std::io::Seek;
                plain.seek(std::io::SeekFrom::Start(off + n as u64))?;
                let k = plain.read(&mut buf[n..])?;
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
    if got < head.len() || buf.spare()[..head.len()] != *head {
        return Err(Error::ChecksumMismatch {
            what: "first MiB read-back",
            expected: hex::encode(Sha256::digest(head)),
            actual: hex::encode(Sha256::digest(&buf.spare()[..got.min(head.len())])),
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
}
