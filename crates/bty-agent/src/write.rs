//! Putting the image on the target: large aligned writes with O_DIRECT,
//! runs of zeroes skipped only where the target already reads as zeroes,
//! and the first MiB held back until the rest is written and verified.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::target::Target;
use crate::{Error, Result, HOLD_BACK};

/// Granularity of zero detection: a run of zeroes shorter than this is
/// written like data. 64 KiB keeps the scan cheap and the writes large.
pub const ZERO_CHUNK: usize = 64 << 10;

/// Alignment of every buffer (covers 512 and 4096 byte sectors).
pub const ALIGN: usize = 4096;

/// A heap buffer aligned for O_DIRECT. Hand-written because the standard
/// `Vec<u8>` cannot promise page alignment; it is 30 lines of `alloc`.
pub struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
    /// Bytes in use.
    pub len: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (a multiple of [`ALIGN`]).
    #[allow(
        clippy::expect_used,
        reason = "ALIGN is a power of two and every size is the crate's own (at most a few MiB), \
                  so the layout is valid"
    )]
    pub fn new(cap: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(cap.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf {
            ptr,
            cap: layout.size(),
            len: 0,
        }
    }
    /// The whole capacity, for filling.
    pub fn spare(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }
    /// The first `n` bytes of the capacity, for filling (an error if the
    /// buffer is smaller).
    pub fn spare_prefix(&mut self, n: usize) -> std::io::Result<&mut [u8]> {
        let cap = self.cap;
        self.spare().get_mut(..n).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{n} bytes asked of a {cap}-byte buffer"),
            )
        })
    }
    /// `len` zero bytes, in use.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let mut b = AlignedBuf::new(len);
        b.len = len;
        b
    }
    /// The bytes in use (`len`, at most the capacity).
    pub fn data(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap bytes, and the length is clamped
        // to cap (`len` is a public field).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len.min(self.cap)) }
    }
    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout.
        unsafe { alloc::dealloc(self.ptr, Layout::from_size_align_unchecked(self.cap, ALIGN)) }
    }
}

/// True when every byte is zero. Word-wise so the compiler vectorises it.
pub fn is_zero(b: &[u8]) -> bool {
    // SAFETY: any bytes are valid u128s; align_to handles the edges.
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0)
        && mid.iter().fold(0u128, |a, &x| a | x) == 0
        && post.iter().all(|&x| x == 0)
}

/// What the target is, for the zero-skip rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A regular file we truncated: holes read as zeroes.
    FreshFile,
    /// A block device; `zeroout` when BLKZEROOUT is offloaded.
    Block { zeroout: bool },
    /// A block device whose whole image range was zeroed with one
    /// offloaded BLKZEROOUT before writing: zero runs need nothing more.
    Prezeroed,
}

const BLKZEROOUT: libc::c_ulong = 0x127f;
const BLKRRPART: libc::c_ulong = 0x125f;

/// The writer. Offsets below [`HOLD_BACK`] are kept in memory until
/// [`Sink::commit_head`].
pub struct Sink {
    path: PathBuf,
    direct: File,
    buffered: File,
    is_direct: bool,
    fallback: Option<String>,
    kind: Kind,
    align: u64,
    capacity: Option<u64>,
    hold: AlignedBuf,
    end: u64,
    zero_run: Option<(u64, u64)>,
    /// End of the range [`Sink::prezero`] zeroed.
    prezeroed_upto: u64,
    /// Why the device refused BLKZEROOUT although it claims write-zeroes
    /// (zero runs are then written like data).
    zeroout_refused: Option<String>,
    /// Bytes written to the target.
    pub written: u64,
    /// Bytes of zeroes not written (holes or BLKZEROOUT).
    pub skipped: u64,
}

fn open_direct(path: &Path, extra: libc::c_int) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | extra)
        .open(path)
}

impl Sink {
    /// A regular file (the `--target-file` seam): created or truncated, then
    /// sized, so every byte not written reads as zero.
    pub fn open_file(path: &Path, size: Option<u64>) -> Result<Sink> {
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(Error::io("opening", path))?;
        if let Some(s) = size {
            buffered.set_len(s).map_err(Error::io("sizing", path))?;
        }
        let (direct, fallback) = match open_direct(path, 0) {
            Ok(f) => (f, None),
            Err(e) => (
                buffered.try_clone()?,
                Some(format!("O_DIRECT refused by the file system: {e}")),
            ),
        };
        Ok(Sink::new(
            path,
            direct,
            buffered,
            fallback,
            Kind::FreshFile,
            ALIGN as u64,
            None,
        ))
    }

    /// A block device, opened exclusively (EBUSY = in use by the kernel:
    /// mounted, swap, device mapper, md).
    pub fn open_device(t: &Target) -> Result<Sink> {
        let direct = match open_direct(&t.path, libc::O_EXCL) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(Error::TargetBusy {
                    device: t.path.display().to_string(),
                    holders: "the kernel refuses exclusive access (EBUSY)".into(),
                })
            }
            Err(e) => return Err(Error::io("opening", &t.path)(e)),
        };
        // Second descriptor, no O_EXCL (the first holds the claim), for the
        // unaligned tail of an image.
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&t.path)
            .map_err(Error::io("opening", &t.path))?;
        let kind = Kind::Block {
            zeroout: t.write_zeroes,
        };
        Ok(Sink::new(
            &t.path,
            direct,
            buffered,
            None,
            kind,
            t.logical_sector as u64,
            Some(t.size),
        ))
    }

    fn new(
        path: &Path,
        direct: File,
        buffered: File,
        fallback: Option<String>,
        kind: Kind,
        align: u64,
        capacity: Option<u64>,
    ) -> Sink {
        Sink {
            path: path.to_path_buf(),
            direct,
            buffered,
            is_direct: fallback.is_none(),
            fallback,
            kind,
            align,
            capacity,
            hold: AlignedBuf::new(HOLD_BACK as usize),
            end: 0,
            zero_run: None,
            prezeroed_upto: 0,
            zeroout_refused: None,
            written: 0,
            skipped: 0,
        }
    }

    /// One line on how bytes reach the target, for the console.
    pub fn mode(&self) -> String {
        let zeroes = match self.kind {
            Kind::FreshFile => "zero blocks left as holes",
            Kind::Prezeroed => "image range zeroed up front with BLKZEROOUT, zero blocks skipped",
            Kind::Block { zeroout: true } => "zero blocks via BLKZEROOUT",
            Kind::Block { zeroout: false } if self.zeroout_refused.is_some() => {
                "zero blocks written (the device refused BLKZEROOUT)"
            }
            Kind::Block { zeroout: false } => "zero blocks written (no write-zeroes offload)",
        };
        match &self.fallback {
            None => format!("O_DIRECT, {zeroes}"),
            Some(why) => format!("buffered + fdatasync ({why}), {zeroes}"),
        }
    }

    /// The target's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the image seen so far (its length once the stream ends).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Zero the first and the last MiB of the target now, so that from
    /// here on, until [`Sink::commit_head`], the disk does not boot
    /// whatever it held: the first MiB holds the MBR and the primary GPT,
    /// the last the backup GPT, from which UEFI firmware would otherwise
    /// restore the old partition table once the primary reads as zeroes.
    pub fn wipe_ends(&mut self) -> Result<()> {
        if self.kind == Kind::FreshFile {
            return Ok(()); // truncated: already zeroes
        }
        let len = self.capacity.unwrap_or(HOLD_BACK);
        self.zero_ends(len)
    }

    /// Write zeroes over `[0, 1 MiB)` and the last MiB before `len` (one
    /// range when `len` is under 2 MiB), then sync.
    fn zero_ends(&mut self, len: u64) -> Result<()> {
        let head = HOLD_BACK.min(len);
        let tail = len.saturating_sub(HOLD_BACK).max(head);
        // Both ranges are at most HOLD_BACK (1 MiB) long.
        self.pwrite(0, AlignedBuf::zeroed(head as usize).data())?;
        if len > tail {
            self.pwrite(tail, AlignedBuf::zeroed((len - tail) as usize).data())?;
        }
        self.sync()
    }

    /// When the image's length is known and the device offloads
    /// write-zeroes, zero the whole image range with one BLKZEROOUT (the
    /// kernel splits it) so every zero run after it is simply skipped: one
    /// call instead of one per run. Returns whether it did.
    pub fn prezero(&mut self, len: Option<u64>) -> Result<bool> {
        let (Kind::Block { zeroout: true }, Some(len)) = (self.kind, len) else {
            return Ok(false);
        };
        let upto = len / 512 * 512;
        if upto <= HOLD_BACK {
            return Ok(false);
        }
        if !self.zeroout(HOLD_BACK, upto - HOLD_BACK)? {
            return Ok(false); // zero runs will be written like data
        }
        self.prezeroed_upto = upto;
        self.kind = Kind::Prezeroed;
        Ok(true)
    }

    /// Write `data` (from an [`AlignedBuf`], at an offset that is a
    /// multiple of [`ZERO_CHUNK`]) at `off`.
    pub fn put(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let end = off + data.len() as u64;
        if let Some(cap) = self.capacity {
            if end > cap {
                return Err(Error::TargetTooSmall {
                    device: self.path.display().to_string(),
                    need: end,
                    have: cap,
                });
            }
        }
        self.end = self.end.max(end);
        let mut pos = off;
        let mut rest = data;
        if pos < HOLD_BACK {
            // n <= rest.len(), and pos + n <= HOLD_BACK, the hold's size.
            let n = ((HOLD_BACK - pos) as usize).min(rest.len());
            let (head, tail) = rest.split_at(n);
            let at = pos as usize;
            self.hold
                .spare()
                .get_mut(at..at + n)
                .ok_or_else(|| {
                    Error::Stream(std::io::Error::other(
                        "the held-back head is smaller than the first MiB",
                    ))
                })?
                .copy_from_slice(head);
            self.hold.len = self.hold.len.max(at + n);
            pos += n as u64;
            rest = tail;
        }
        // Coalesce: one write per run of data, one zero-out per run of zeroes.
        while let Some(first) = rest.chunks(ZERO_CHUNK).next() {
            let zero = is_zero(first);
            let n: usize = rest
                .chunks(ZERO_CHUNK)
                .take_while(|c| is_zero(c) == zero)
                .map(<[u8]>::len)
                .sum();
            // n <= rest.len(): the sum of some of its chunks.
            let (run, tail) = rest.split_at(n);
            if zero {
                self.zeroes(pos, n as u64)?;
            } else {
                self.flush_zero_run()?;
                self.pwrite(pos, run)?;
            }
            pos += n as u64;
            rest = tail;
        }
        Ok(())
    }

    fn zeroes(&mut self, off: u64, len: u64) -> Result<()> {
        match self.kind {
            Kind::FreshFile => {
                self.skipped += len;
                Ok(())
            }
            Kind::Prezeroed if off + len <= self.prezeroed_upto => {
                self.skipped += len;
                Ok(())
            }
            Kind::Block { zeroout: true } if len % 512 == 0 => {
                match &mut self.zero_run {
                    Some((s, l)) if *s + *l == off && *l < (1 << 30) => *l += len,
                    _ => {
                        self.flush_zero_run()?;
                        self.zero_run = Some((off, len));
                    }
                }
                Ok(())
            }
            Kind::Block { .. } | Kind::Prezeroed => {
                let zeros = AlignedBuf::zeroed(ZERO_CHUNK);
                let mut done = 0;
                while done < len {
                    // n <= ZERO_CHUNK, the length of `zeros`.
                    let n = (len - done).min(ZERO_CHUNK as u64) as usize;
                    let (chunk, _) = zeros.data().split_at(n);
                    self.pwrite(off + done, chunk)?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }

    fn flush_zero_run(&mut self) -> Result<()> {
        let Some((off, len)) = self.zero_run.take() else {
            return Ok(());
        };
        if self.zeroout(off, len)? {
            self.skipped += len;
            Ok(())
        } else {
            // Refused: write this run (and, from now on, every run).
            self.zeroes(off, len)
        }
    }

    /// BLKZEROOUT of `[off, off + len)`. `Ok(false)` when the device
    /// refuses the request itself (no such ioctl, operation not supported,
    /// a range it will not take although sysfs advertised write-zeroes):
    /// the sink then switches to writing zeroes, which costs time but keeps
    /// the bytes exact. Any other error (EIO, ...) is a failed write.
    fn zeroout(&mut self, off: u64, len: u64) -> Result<bool> {
        let range: [u64; 2] = [off, len];
        // SAFETY: BLKZEROOUT reads a [u64; 2] (start, length) from the pointer.
        let rc = unsafe { libc::ioctl(self.direct.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                self.zeroout_refused = Some(e.to_string());
                self.kind = Kind::Block { zeroout: false };
                Ok(false)
            }
            _ => Err(Error::io("zeroing a range of", &self.path)(e)),
        }
    }

    /// Why BLKZEROOUT was refused, when it was (zero runs were then written).
    pub fn zeroout_refused(&self) -> Option<&str> {
        self.zeroout_refused.as_deref()
    }

    /// Write through O_DIRECT when offset and length allow it; the tail of
    /// an image that is not a whole number of sectors goes through the
    /// buffered descriptor (synced in [`Sink::sync`]).
    fn pwrite(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let aligned = if self.is_direct && off % self.align == 0 {
            data.len() as u64 / self.align * self.align
        } else {
            0
        } as usize;
        // aligned <= data.len(): a multiple of align rounded down from it.
        let (direct, buffered) = data.split_at(aligned);
        if aligned > 0 {
            match self.direct.write_all_at(direct, off) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Some file systems accept O_DIRECT at open and refuse
                    // it at write: switch, and say so.
                    self.is_direct = false;
                    self.fallback = Some(format!("O_DIRECT write refused: {e}"));
                    return self.pwrite(off, data);
                }
                Err(e) => return Err(Error::io("writing to", &self.path)(e)),
            }
        }
        if !buffered.is_empty() {
            self.buffered
                .write_all_at(buffered, off + aligned as u64)
                .map_err(Error::io("writing to", &self.path))?;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// Everything after the held-back head is in: flush pending zero runs,
    /// give a file its full length, and make it durable.
    pub fn finish_body(&mut self) -> Result<()> {
        self.settle()?;
        self.sync()
    }

    /// Make every byte below [`Sink::end`] final on the target, short of a
    /// sync: pending zero runs zeroed, a file as long as the image so far.
    /// Nothing below the returned offset is written again (but the head,
    /// at [`Sink::commit_head`]), so it can be read back.
    pub fn settle(&mut self) -> Result<u64> {
        self.flush_zero_run()?;
        if self.kind == Kind::FreshFile {
            let len = self
                .buffered
                .metadata()
                .map_err(Error::io("reading size of", &self.path))?
                .len();
            if len < self.end {
                self.buffered
                    .set_len(self.end)
                    .map_err(Error::io("sizing", &self.path))?;
            }
        }
        Ok(self.end)
    }

    /// The held-back head, as it will be written.
    pub fn head(&self) -> &[u8] {
        self.hold.data()
    }

    /// Write the held-back head and sync: from here the disk boots.
    pub fn commit_head(&mut self) -> Result<()> {
        let hold = std::mem::replace(&mut self.hold, AlignedBuf::new(ALIGN));
        let r = self.pwrite(0, hold.data()).and_then(|_| self.sync());
        self.hold = hold;
        r?;
        if self.kind != Kind::FreshFile {
            // Best effort: the kernel re-reads the new partition table (we
            // reboot anyway; busy partitions make this fail harmlessly).
            // SAFETY: BLKRRPART takes no argument.
            unsafe { libc::ioctl(self.direct.as_raw_fd(), BLKRRPART, 0) };
        }
        Ok(())
    }

    /// After a failure: zero the first and the last MiB (see
    /// [`Sink::wipe_ends`]) so neither a half-written image nor the old
    /// table ever boots, and sync. A file stands for a disk as long as it
    /// is.
    pub fn invalidate(&mut self) -> Result<()> {
        self.zero_run = None;
        let len = match self.kind {
            Kind::FreshFile => self
                .buffered
                .metadata()
                .map_err(Error::io("reading size of", &self.path))?
                .len(),
            Kind::Block { .. } | Kind::Prezeroed => self.capacity.unwrap_or(HOLD_BACK),
        };
        self.zero_ends(len)
    }

    fn sync(&mut self) -> Result<()> {
        self.direct
            .sync_data()
            .map_err(Error::io("syncing", &self.path))?;
        self.buffered
            .sync_data()
            .map_err(Error::io("syncing", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 100_003];
        assert!(is_zero(&b));
        assert!(is_zero(&b[1..]));
        b[100_002] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&b[..100_002]));
        b[100_002] = 0;
        b[0] = 9;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }

    fn buf_with(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::new(data.len().div_ceil(ALIGN) * ALIGN);
        b.spare()[..data.len()].copy_from_slice(data);
        b.len = data.len();
        b
    }

    #[test]
    fn file_target_holds_back_head_and_leaves_zero_blocks_as_holes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.img");
        std::fs::write(&p, vec![0xaau8; 8 << 20]).unwrap(); // old content
        let mut img = vec![0u8; 3 << 20];
        img[..512].fill(0x55); // "partition table"
        img[(1 << 20) + 10] = 1; // data just after the head
        img[(3 << 20) - 1] = 2; // data at the very end
        let mut s = Sink::open_file(&p, None).unwrap();
        let b = buf_with(&img);
        s.put(0, b.data()).unwrap();
        s.finish_body().unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(on_disk.len(), img.len());
        assert!(
            is_zero(&on_disk[..1 << 20]),
            "head must not be written before commit"
        );
        assert_eq!(on_disk[1 << 20..], img[1 << 20..]);
        assert_eq!(s.head(), &img[..1 << 20]);
        assert_eq!(s.written, 2 * ZERO_CHUNK as u64);
        assert_eq!(s.skipped, (2 << 20) - 2 * ZERO_CHUNK as u64);
        s.commit_head().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), img);
        s.invalidate().unwrap();
        let after = std::fs::read(&p).unwrap();
        assert_eq!(after.len(), img.len());
        assert!(is_zero(&after[..1 << 20]) && after[1 << 20..2 << 20] == img[1 << 20..2 << 20]);
        assert!(
            is_zero(&after[2 << 20..]),
            "a file's last MiB is zeroed too"
        );
    }

    #[test]
    fn unaligned_tail_and_small_image() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.img");
        let img: Vec<u8> = (0..(1u32 << 20) + 5000)
            .map(|i| (i % 253) as u8 + 1)
            .collect();
        let mut s = Sink::open_file(&p, Some(img.len() as u64)).unwrap();
        s.put(0, buf_with(&img).data()).unwrap();
        s.finish_body().unwrap();
        s.commit_head().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), img);

        let small = vec![7u8; 1000];
        let mut s = Sink::open_file(&p, None).unwrap();
        s.put(0, buf_with(&small).data()).unwrap();
        s.finish_body().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), vec![0u8; 1000]);
        s.commit_head().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), small);
    }

    /// A device-like target that advertises write-zeroes but refuses
    /// BLKZEROOUT. Mocked with a regular file opened through the device
    /// path (the ioctl on a file fails with ENOTTY, as a device that does
    /// not implement it would), because no real block device here refuses
    /// it: the kernel's loop and virtio drivers both accept it.
    fn refusing_device(t: &tempfile::TempDir, size: usize) -> Target {
        let p = t.path().join("refuses-zeroout");
        std::fs::write(&p, vec![0xaau8; size]).unwrap();
        Target {
            path: p,
            name: "refuses-zeroout".into(),
            size: size as u64,
            logical_sector: 512,
            write_zeroes: true,
        }
    }

    fn sparse_image() -> Vec<u8> {
        let mut img = vec![0u8; 5 << 20];
        img[..512].fill(0x55);
        img[(2 << 20) + 3] = 1;
        img[(4 << 20) + 100..(4 << 20) + 200].fill(9);
        img
    }

    #[test]
    fn refused_prezero_falls_back_to_writing_zeroes_and_bytes_verify() {
        let t = tempfile::tempdir().unwrap();
        let dev = refusing_device(&t, 8 << 20);
        let img = sparse_image();
        let mut s = Sink::open_device(&dev).unwrap();
        s.wipe_ends().unwrap();
        assert!(
            !s.prezero(Some(img.len() as u64)).unwrap(),
            "must report it did not zero"
        );
        assert!(s.zeroout_refused().is_some());
        assert!(s.mode().contains("refused BLKZEROOUT"), "{}", s.mode());
        s.put(0, buf_with(&img).data()).unwrap();
        s.finish_body().unwrap();
        assert_eq!(s.skipped, 0, "nothing may be skipped on this device");
        let done = std::sync::atomic::AtomicU64::new(0);
        let (d, _) =
            crate::verify::digest(&dev.path, s.head(), HOLD_BACK, img.len() as u64, &done).unwrap();
        assert_eq!(d, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&img)));
        s.commit_head().unwrap();
        let on_disk = std::fs::read(&dev.path).unwrap();
        assert_eq!(on_disk[..img.len()], img[..]);
        assert!(
            on_disk[img.len()..(7 << 20)].iter().all(|&b| b == 0xaa),
            "past the image: untouched up to the last MiB"
        );
        assert!(is_zero(&on_disk[7 << 20..]), "the last MiB is wiped");
    }

    /// The device's last MiB as a GPT leaves it: backup partition entries,
    /// then the backup header in the last sector.
    fn gpt_like_tail(dev: &Target) {
        let mut tail = vec![0x5au8; 1 << 20];
        tail[(1 << 20) - 512..(1 << 20) - 504].copy_from_slice(b"EFI PART");
        let f = OpenOptions::new().write(true).open(&dev.path).unwrap();
        f.write_all_at(&tail, dev.size - (1 << 20)).unwrap();
    }

    #[test]
    fn wipe_zeroes_first_and_last_mib_of_a_device() {
        let t = tempfile::tempdir().unwrap();
        let dev = refusing_device(&t, 8 << 20);
        gpt_like_tail(&dev);
        let mut s = Sink::open_device(&dev).unwrap();
        s.wipe_ends().unwrap();
        let on_disk = std::fs::read(&dev.path).unwrap();
        assert!(is_zero(&on_disk[..1 << 20]), "first MiB");
        assert!(
            on_disk[1 << 20..7 << 20].iter().all(|&b| b == 0xaa),
            "the middle is left alone"
        );
        assert!(is_zero(&on_disk[7 << 20..]), "the backup GPT must be gone");
    }

    #[test]
    fn invalidate_zeroes_first_and_last_mib_of_a_device() {
        let t = tempfile::tempdir().unwrap();
        let dev = refusing_device(&t, 8 << 20);
        let img = sparse_image();
        let mut s = Sink::open_device(&dev).unwrap();
        s.put(0, buf_with(&img).data()).unwrap();
        s.finish_body().unwrap();
        s.commit_head().unwrap();
        // What a failed flash finds: an image, and a table at the end.
        gpt_like_tail(&dev);
        s.invalidate().unwrap();
        let after = std::fs::read(&dev.path).unwrap();
        assert!(is_zero(&after[..1 << 20]), "first MiB");
        assert_eq!(after[1 << 20..img.len()], img[1 << 20..]);
        assert!(is_zero(&after[7 << 20..]), "the backup GPT must be gone");
    }

    #[test]
    fn ends_of_a_target_under_two_mib_are_one_range() {
        let t = tempfile::tempdir().unwrap();
        let dev = refusing_device(&t, 1536 << 10);
        let mut s = Sink::open_device(&dev).unwrap();
        s.wipe_ends().unwrap();
        let on_disk = std::fs::read(&dev.path).unwrap();
        assert_eq!(on_disk.len(), 1536 << 10, "never written past the end");
        assert!(is_zero(&on_disk));
    }

    #[test]
    fn refused_zero_run_is_written_instead_when_the_size_is_unknown() {
        let t = tempfile::tempdir().unwrap();
        let dev = refusing_device(&t, 8 << 20);
        let img = sparse_image();
        let mut s = Sink::open_device(&dev).unwrap();
        s.wipe_ends().unwrap();
        assert!(!s.prezero(None).unwrap());
        assert!(s.zeroout_refused().is_none(), "not asked yet");
        // Two puts, so a zero run is pending across them when the refusal
        // comes.
        s.put(0, buf_with(&img[..3 << 20]).data()).unwrap();
        s.put(3 << 20, buf_with(&img[3 << 20..]).data()).unwrap();
        s.finish_body().unwrap();
        assert!(s.zeroout_refused().is_some());
        s.commit_head().unwrap();
        let on_disk = std::fs::read(&dev.path).unwrap();
        assert!(
            on_disk[..img.len()] == img[..],
            "bytes differ from the image"
        );
        // A failure afterwards still zeroes the head.
        s.invalidate().unwrap();
        let after = std::fs::read(&dev.path).unwrap();
        assert!(is_zero(&after[..1 << 20]));
        assert_eq!(after[1 << 20..img.len()], img[1 << 20..]);
    }
}
