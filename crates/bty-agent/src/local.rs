//! A flash of a local file (the USB stick's images, `bty-lab flash`) with
//! exactly the network flow's write-and-verify core
//! ([`crate::flash`]): zero-block skipping, the read-back that follows
//! the writes, and the first MiB written last. The stick wizard's server
//! images take the same path with a [`Remote`] source: the network flow's
//! download (Range resume, stall timeouts) and its catalog check in place
//! of the file.
//!
//! The order of the checks is the point: the stored file is hashed and the
//! target vetted (mounted, held, too small) before the first byte is
//! written; once writing has begun, any failure leaves the first and last
//! MiB of the target zeroed, so a half-written disk never boots.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use bty_proto::plan::Phase;
use bty_proto::ImageFormat;
use sha2::{Digest, Sha256};

use crate::console::Console;
use crate::decompress::{self, SizeHint};
use crate::flash::{write_and_verify_core, Core, Download, Expected, Pump, Streamed};
use crate::qcow2;
use crate::report::Reporter;
use crate::source::Retry;
use crate::target::{self, Host};
use crate::write::Sink;
use crate::{Error, Result};

/// A flash of a local file onto a block device (or a regular file, in tests).
pub struct LocalJob<'a> {
    /// The image file.
    pub source: &'a Path,
    /// How it is encoded.
    pub format: ImageFormat,
    /// `/dev/sdX` (checked: not mounted, not held, big enough) or a regular
    /// file (created or truncated).
    pub device: &'a Path,
    /// sha256 of the file as stored: checked by hashing the file before
    /// the first write.
    pub expect_stored_sha256: Option<&'a str>,
    /// sha256 of the decoded image, if known: the read-back must match.
    pub expect_sha256: Option<&'a str>,
    /// Decoded size, if known (the stick manifest's `size`): lets a
    /// too-small disk be refused before the first write when the container
    /// does not say its size (gzip, bzip2, xz without an index, zstd
    /// without a content size). Checked against the decoded length.
    pub expect_size: Option<u64>,
    /// Status lines.
    pub console: &'a Console,
    /// Stream the image from a URL instead of reading `source`, which then
    /// only names it in messages (a stick wizard's server image).
    pub remote: Option<Remote<'a>>,
    /// Also post progress to a bty-web that records this flash (the stick
    /// wizard's report; the caller posts `done`).
    pub reporter: Option<&'a Reporter>,
}

/// An image's bytes over HTTP, checked like a plan's download: its length
/// and sha256 must be the catalog's.
#[derive(Clone, Copy)]
pub struct Remote<'a> {
    /// Shared HTTP client (its stall timeout applies).
    pub http: &'a ureq::Agent,
    /// Where the bytes are.
    pub url: &'a str,
    /// The catalog's sha256 and size of the download.
    pub expect: &'a Expected,
    /// Resume policy.
    pub retry: Retry,
}

impl<'a> LocalJob<'a> {
    /// A job with no expectations beyond the format.
    pub fn new(
        source: &'a Path,
        format: ImageFormat,
        device: &'a Path,
        console: &'a Console,
    ) -> LocalJob<'a> {
        LocalJob {
            source,
            format,
            device,
            expect_stored_sha256: None,
            expect_sha256: None,
            expect_size: None,
            console,
            remote: None,
            reporter: None,
        }
    }
}

/// Progress as it goes (for a progress bar: bytes, rate, time left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Decoded bytes written so far (all of them once verifying).
    pub written: u64,
    /// The decoded size, when known.
    pub total: Option<u64>,
    /// Since the flash started.
    pub elapsed: Duration,
    /// The target has been written to (its ends wiped, at least): from here
    /// on a failure leaves its first and last MiB zeroed. Until then, a
    /// failure changed nothing.
    pub writing: bool,
}

/// A verified flash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOutcome {
    /// Decoded image length.
    pub bytes: u64,
    /// sha256 of the image as read back from the target.
    pub sha256: String,
    /// Wall time.
    pub duration: Duration,
}

/// How often `progress` is called at least.
const TICK: Duration = Duration::from_millis(250);

/// Flash `job.source` onto `job.device` and verify it; `progress` is called
/// on this thread at least every quarter second.
pub fn flash(job: &LocalJob, progress: &mut dyn FnMut(&Progress)) -> Result<LocalOutcome> {
    flash_on(&Host::default(), job, progress)
}

/// [`flash`] with the system views (`/sys`, `/proc`, `/dev`) under `host`.
pub fn flash_on(
    host: &Host,
    job: &LocalJob,
    progress: &mut dyn FnMut(&Progress),
) -> Result<LocalOutcome> {
    let started = Instant::now();
    let tick = |written: u64, total: Option<u64>, progress: &mut dyn FnMut(&Progress)| {
        progress(&Progress {
            written,
            total,
            elapsed: started.elapsed(),
            writing: false,
        })
    };
    let tick_writing = |written: u64, total: Option<u64>, progress: &mut dyn FnMut(&Progress)| {
        progress(&Progress {
            written,
            total,
            elapsed: started.elapsed(),
            writing: true,
        })
    };
    tick(0, None, progress);
    let expect_stored = job
        .expect_stored_sha256
        .map(|h| hex_digest("expected stored", h))
        .transpose()?;
    let expect_decoded = job
        .expect_sha256
        .map(|h| hex_digest("expected image", h))
        .transpose()?;

    // 1. and 2. the bytes, and how big the decoded image is, from the
    // container or the caller
    let (file, hint, layout) = match &job.remote {
        None => {
            let (file, hint, layout) = open_file(job, expect_stored.as_deref(), &mut |n| {
                tick(n, None, progress)
            })?;
            (Some(file), hint, layout)
        }
        Some(r) => {
            let (hint, layout) = download(job, r).size_hint(r.expect.size)?;
            (None, hint, layout)
        }
    };
    let hint = match (hint.exact, job.expect_size) {
        (None, Some(size)) => SizeHint {
            exact: Some(size),
            at_least: size,
        },
        (Some(exact), Some(size)) if exact != size => {
            return Err(Error::Corrupt(format!(
                "{} decodes to {exact} bytes (its header says), {size} were expected",
                job.source.display()
            )));
        }
        _ => hint,
    };

    // 3. the target: refuse anything in use or too small, before writing
    let own = job.remote.is_none().then_some(job.source);
    let mut sink = open_target(host, own, job.device, hint)?;
    job.console.line(format!(
        "writing {} ({}) to {} with {}",
        job.source.display(),
        job.format,
        job.device.display(),
        sink.mode()
    ));

    // 4. from here on, a failure leaves the first and last MiB zeroed; the
    // core runs on its own thread so that `progress` (which need not be
    // Send: a terminal progress bar) is called here
    let mine = crate::report::Progress::default();
    let counters = job.reporter.map_or(&mine, |r| &*r.progress);
    let total = AtomicU64::new(hint.exact.unwrap_or(0));
    let (done_tx, done_rx) = channel::<()>();
    let result = std::thread::scope(|s| {
        let (file, total) = (file.as_ref(), &total);
        let (expect_stored, expect_decoded) = (&expect_stored, &expect_decoded);
        let worker = s.spawn(move || {
            let r = write_and_run(
                job,
                file,
                layout,
                hint,
                &mut sink,
                counters,
                total,
                expect_stored,
                expect_decoded,
            );
            drop(done_tx);
            (r, sink)
        });
        // A reporter's phase change zeroes the counter (bty-web shows each
        // phase's own bytes); the bar here only ever goes forward.
        let mut shown = 0u64;
        loop {
            let t = total.load(Ordering::Relaxed);
            shown = shown.max(counters.bytes.load(Ordering::Relaxed));
            tick_writing(shown, (t > 0).then_some(t), progress);
            // The worker hangs up when it ends (or panics).
            match done_rx.recv_timeout(TICK) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        worker
            .join()
            .map_err(|_| Error::Stream(io::Error::other("flash thread panicked")))
    });
    let (result, mut sink) = result?;
    if result.is_err() {
        if let Err(e) = sink.invalidate() {
            job.console.line(format!(
                "could not zero the first and last MiB after the failure: {e}"
            ));
        }
    }
    let (sha256, bytes) = result?;
    tick_writing(bytes, Some(bytes), progress);
    Ok(LocalOutcome {
        bytes,
        sha256,
        duration: started.elapsed(),
    })
}

/// Step 4 on the worker thread: the shared core fed from the file.
#[allow(clippy::too_many_arguments)]
fn write_and_run(
    job: &LocalJob,
    file: Option<&File>,
    layout: Option<qcow2::Layout>,
    hint: SizeHint,
    sink: &mut Sink,
    counters: &crate::report::Progress,
    total: &AtomicU64,
    expect_stored: &Option<String>,
    expect_decoded: &Option<String>,
) -> Result<(String, u64)> {
    let fetch: Fetch = match (&job.remote, file) {
        (Some(r), _) => Box::new(download(job, r).fetcher(layout, counters.fetched.clone())),
        (None, Some(file)) => file_fetcher(job, file, layout, expect_stored.is_some())?,
        (None, None) => {
            return Err(Error::BadPlan(
                "neither a file nor a URL to flash from".into(),
            ))
        }
    };
    let check = |s: &Streamed| -> Result<()> {
        if let Some(r) = &job.remote {
            r.expect.check(s, job.console)?;
        }
        if let (Some(want), Some(got)) = (expect_stored, &s.source_sha256) {
            if job.remote.is_none() && want != got {
                return Err(Error::ChecksumMismatch {
                    what: "stored image (changed while being written)",
                    expected: want.clone(),
                    actual: got.clone(),
                });
            }
        }
        if let Some(want) = expect_decoded {
            if want != &s.decoded_sha256 {
                return Err(Error::ChecksumMismatch {
                    what: "image",
                    expected: want.clone(),
                    actual: s.decoded_sha256.clone(),
                });
            }
            job.console.line("image sha256 matches");
        }
        Ok(())
    };
    let phase = |p: Phase, t: Option<u64>| {
        if let Some(r) = job.reporter {
            r.phase(p, t);
        }
        if p == Phase::Writing {
            total.store(t.unwrap_or(0), Ordering::Relaxed);
        }
    };
    let core = Core {
        console: job.console,
        progress: counters,
        phase: &phase,
        hint,
    };
    write_and_verify_core(&core, sink, fetch, check)
}

/// The core's fetch step, boxed: a file's or a download's.
type Fetch<'a> = Box<dyn FnOnce(&mut Pump) -> Result<(u64, Option<String>)> + Send + 'a>;

/// The network flow's download of `r`, as the shared core takes it.
fn download<'a>(job: &LocalJob<'a>, r: &Remote<'a>) -> Download<'a> {
    Download {
        http: r.http,
        url: r.url,
        format: job.format,
        retry: r.retry,
        console: job.console,
    }
}

/// Steps 1 and 2 for a file: open it, check its header is the format,
/// hash it when a stored sha256 is expected (`tick` with 0 bytes written
/// as it goes), and read its decoded size from the container.
fn open_file(
    job: &LocalJob,
    expect_stored: Option<&str>,
    tick: &mut dyn FnMut(u64),
) -> Result<(File, SizeHint, Option<qcow2::Layout>)> {
    let file = File::open(job.source).map_err(Error::io("opening the image", job.source))?;
    let stored_len = file
        .metadata()
        .map_err(Error::io("reading the size of", job.source))?
        .len();
    let mut head = [0u8; 18];
    let n = read_at_most(&file, &mut head, 0)?;
    decompress::confirm(job.format, head.get(..n).unwrap_or_default())?;
    if let Some(want) = expect_stored {
        // The pre-hash reports no bytes written: nothing is, yet.
        let got = hash_file(&file, &mut || tick(0))?;
        if got != want {
            return Err(Error::ChecksumMismatch {
                what: "stored image",
                expected: want.to_string(),
                actual: got,
            });
        }
        job.console.line(format!(
            "{} sha256 matches ({stored_len} bytes)",
            job.source.display()
        ));
    }
    let (hint, layout) = size_of(&file, job.format, stored_len, head.get(..n))?;
    Ok((file, hint, layout))
}

/// The core's fetch step for a file: read, decode, and (`rehash`) hash
/// the stored bytes again on the way.
fn file_fetcher<'a>(
    job: &LocalJob<'a>,
    file: &File,
    layout: Option<qcow2::Layout>,
    rehash: bool,
) -> Result<Fetch<'a>> {
    let format = job.format;
    // Hashing the stored bytes again while streaming catches a file that
    // changed after the pre-hash; for raw the core's digest is the same
    // bytes, so only compressed formats pay for it.
    let rehash = rehash && format != ImageFormat::Raw;
    let src = file
        .try_clone()
        .map_err(Error::io("reopening", job.source))?;
    let random = file
        .try_clone()
        .map_err(Error::io("reopening", job.source))?;
    Ok(Box::new(move |pump: &mut Pump| {
        let mut src = Hashing::new(src, rehash);
        {
            let mut decoded: Box<dyn Read + Send + '_> = match layout {
                Some(l) => Box::new(qcow2::Reader::new(
                    l,
                    io::BufReader::with_capacity(1 << 20, &mut src),
                    qcow2::Origin::File(random),
                )),
                None => decompress::open(format, &mut src)?,
            };
            pump.pump(&mut decoded)?;
        }
        io::copy(&mut src, &mut io::sink())?;
        Ok(src.finish())
    }))
}

/// A sha256 given by the caller, lower-cased, or why it is refused.
fn hex_digest(what: &str, h: &str) -> Result<String> {
    let h = h.trim();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadPlan(format!(
            "{what} sha256 {:?} is not 64 hex digits",
            h.chars().take(80).collect::<String>()
        )));
    }
    Ok(h.to_ascii_lowercase())
}

/// Positioned read of up to `buf.len()` bytes; fewer at the end of the file.
fn read_at_most(f: &File, buf: &mut [u8], off: u64) -> Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read_at(rest, off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// sha256 of the whole file, in 4 MiB positioned reads; `tick` is called
/// every [`TICK`] or so.
fn hash_file(f: &File, tick: &mut dyn FnMut()) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::BLOCK];
    let mut off = 0u64;
    let mut last = Instant::now();
    loop {
        let n = read_at_most(f, &mut buf, off)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
        off += n as u64;
        if last.elapsed() >= TICK {
            last = Instant::now();
            tick();
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// What the container says about its decoded size, read from the file the
/// way the network flow asks with Range requests.
fn size_of(
    f: &File,
    format: ImageFormat,
    stored_len: u64,
    head: Option<&[u8]>,
) -> Result<(SizeHint, Option<qcow2::Layout>)> {
    let mut hint = SizeHint::default();
    let tail = |n: u64| -> Option<Vec<u8>> {
        let from = stored_len.checked_sub(n)?;
        let mut b = vec![0u8; n as usize];
        (read_at_most(f, &mut b, from).ok()? == n as usize).then_some(b)
    };
    match format {
        ImageFormat::Raw => hint.exact = Some(stored_len),
        ImageFormat::Zst => hint.exact = head.and_then(decompress::zstd_content_size),
        ImageFormat::Gz => {
            hint.at_least = tail(4)
                .and_then(|t| decompress::gzip_isize(&t))
                .unwrap_or(0)
        }
        ImageFormat::Xz => {
            hint.exact = (|| {
                let footer = tail(12)?;
                // A real index is a few KiB per GiB; a footer claiming more
                // is corrupt and must not size an allocation.
                let idx = decompress::xz_index_size(&footer).filter(|&i| i <= 64 << 20)?;
                let index = tail(12 + idx)?;
                decompress::xz_index_uncompressed(index.get(..idx as usize)?)
            })();
        }
        ImageFormat::Bz2 => {}
        ImageFormat::Qcow2 => {
            let random = f.try_clone()?;
            let layout = qcow2::Layout::load(&qcow2::Origin::File(random))?;
            hint.exact = Some(layout.virtual_size);
            return Ok((hint, Some(layout)));
        }
    }
    Ok((hint, None))
}

/// Open the target for writing after the checks: a whole-disk block
/// device that nothing uses and that is big enough, or a regular file
/// (created when missing). Anything else is refused.
fn open_target(host: &Host, source: Option<&Path>, device: &Path, hint: SizeHint) -> Result<Sink> {
    let meta = match std::fs::metadata(device) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("inspecting", device)(e)),
    };
    match meta {
        Some(m) if m.file_type().is_block_device() => {
            let name = disk_name(host, device)?.unwrap_or_default();
            let t = target::for_name(host, &name)?;
            target::check_fits(device, t.size, hint.need())?;
            Sink::open_device(&t)
        }
        None => Sink::open_file(device, hint.exact),
        Some(m) if m.is_file() => {
            // Truncating the target must not truncate the image itself.
            let same = source.is_some_and(|source| {
                std::fs::metadata(source).is_ok_and(|s| (s.dev(), s.ino()) == (m.dev(), m.ino()))
            });
            if same {
                return Err(Error::BadPlan(format!(
                    "{} is the image itself; refusing to write it onto itself",
                    device.display()
                )));
            }
            Sink::open_file(device, hint.exact)
        }
        Some(_) => Err(Error::BadPlan(format!(
            "{} is neither a block device nor a regular file; refusing to write to it",
            device.display()
        ))),
    }
}

/// The kernel name of the whole disk `device` is (any path to its node:
/// `/dev/sdb`, `/dev/disk/by-id/...`), from `/sys/dev/block/MAJ:MIN`;
/// `None` when it is not a block device. A partition is refused (an image
/// is a whole disk: its partition table would land inside a partition).
pub fn disk_name(host: &Host, device: &Path) -> Result<Option<String>> {
    let m = std::fs::metadata(device).map_err(Error::io("inspecting", device))?;
    if !m.file_type().is_block_device() {
        return Ok(None);
    }
    let rdev = m.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let link = host.sys.join(format!("dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&link).map_err(Error::io("resolving", &link))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::BadPlan(format!("{} has no name in sysfs", link.display())))?;
    if real.join("partition").exists() {
        let disk = real
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::BadPlan(format!(
            "{} is partition {name} of /dev/{disk}; give the whole disk (/dev/{disk})",
            device.display()
        )));
    }
    Ok(Some(name))
}

/// The stored bytes as they are read, hashed on the way when asked.
struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    len: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, hash: bool) -> Self {
        Hashing {
            inner,
            hasher: hash.then(Sha256::new),
            len: 0,
        }
    }

    fn finish(self) -> (u64, Option<String>) {
        (self.len, self.hasher.map(|h| hex::encode(h.finalize())))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = buf.get(..n).unwrap_or_default();
        if let Some(h) = &mut self.hasher {
            h.update(got);
        }
        self.len += n as u64;
        Ok(n)
    }
}
