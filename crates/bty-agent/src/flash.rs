//! One flash, as numbered steps. Everything it needs comes in [`Job`];
//! everything it learns goes out through the [`Reporter`] and the result.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use bty_proto::plan::{Phase, Plan, PlanImage};
use bty_proto::ImageFormat;
use sha2::{Digest, Sha256};

use crate::console::Console;
use crate::decompress::{self, SizeHint};
use crate::qcow2;
use crate::report::{Progress, Reporter};
use crate::source::{range_get, HttpSource, Retry};
use crate::target::{self, Host};
use crate::verify;
use crate::write::{AlignedBuf, Sink};
use crate::{Error, Result, BLOCK, HOLD_BACK};

/// Where the image goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The disk whose serial the plan names (production).
    Serial(Host),
    /// This block device, by kernel name (tests, benchmarks): still checked
    /// for mounts, holders and size.
    Device(Host, String),
    /// A regular file (tests, benchmarks).
    File(PathBuf),
}

/// What a flash needs.
pub struct Job<'a> {
    /// Shared HTTP client.
    pub http: &'a ureq::Agent,
    /// Status lines.
    pub console: &'a Console,
    /// Where to write.
    pub dest: &'a Destination,
    /// Download retry policy.
    pub retry: Retry,
}

/// A successful flash.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// sha256 of the image as read back from the target.
    pub sha256: String,
    /// Image length.
    pub bytes: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Carry out a flash plan.
pub fn run(job: &Job, plan: &Plan, rep: &Reporter) -> Result<Outcome> {
    let started = Instant::now();
    rep.phase(Phase::Preflight, None);

    // 1. what to write, and where, according to the plan
    let image = plan
        .image
        .as_ref()
        .ok_or_else(|| Error::BadPlan("flash plan without an image".into()))?;
    let expect = Expected::of(image)?;
    let serial = plan.target.as_ref().map(|t| t.serial.as_str());

    // 2. how big the image is: the plan, or the container's header
    let (hint, layout) = size_of(job.http, &image.url, image.format, expect.size)?;
    job.console.line(format!(
        "image {} ({}), {}",
        image.name,
        image.format,
        match (hint.exact, hint.at_least) {
            (Some(n), _) => format!("{n} bytes"),
            (None, 0) => "size unknown until the end".to_string(),
            (None, n) => format!("at least {n} bytes"),
        }
    ));

    // 3. the target: by serial, refusing anything in use or too small
    let mut sink = match job.dest {
        Destination::Serial(host) => {
            let serial = serial
                .ok_or_else(|| Error::BadPlan("flash plan without a target serial".into()))?;
            let t = target::select(host, serial)?;
            target::check_fits(&t.path, t.size, hint.need())?;
            job.console.line(format!(
                "target {} (serial {serial}, {} bytes)",
                t.path.display(),
                t.size
            ));
            Sink::open_device(&t)?
        }
        Destination::Device(host, name) => {
            let t = target::for_name(host, name)?;
            target::check_fits(&t.path, t.size, hint.need())?;
            Sink::open_device(&t)?
        }
        Destination::File(path) => Sink::open_file(path, hint.exact)?,
    };
    job.console.line(format!("writing with {}", sink.mode()));

    // 4. from here on, a failure leaves the first and the last MiB zeroed
    let result = write_and_verify(job, image, &expect, hint, layout, &mut sink, rep);
    if result.is_err() {
        if let Err(e) = sink.invalidate() {
            job.console.line(format!(
                "could not zero the first and last MiB after the failure: {e}"
            ));
        }
    }
    let (sha256, bytes) = result?;
    Ok(Outcome {
        sha256,
        bytes,
        duration: started.elapsed(),
    })
}

/// What the download must be, from the plan. The LAN is not trusted: a
/// plan that cannot say which bytes it means (no sha256, no size) is
/// refused before anything is opened, let alone written, because without
/// them a truncated or substituted download could be reported good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// sha256 of the download, lower-case hex.
    pub sha256: String,
    /// Length of the download in bytes.
    pub size: u64,
}

impl Expected {
    /// The plan image's sha256 and size, or why the plan is refused.
    pub fn of(image: &PlanImage) -> Result<Expected> {
        Expected::named(&image.name, image.sha256.as_deref(), image.size)
    }

    /// The same checks for any image's catalog sha256 and size (a stick
    /// wizard's server image).
    pub fn named(name: &str, sha256: Option<&str>, size: Option<u64>) -> Result<Expected> {
        let sha256 = sha256.ok_or_else(|| {
            Error::BadPlan(format!(
                "image {name} has no sha256 in the plan; refusing to write bytes that cannot \
                 be checked (give the catalog entry a sha256)"
            ))
        })?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::BadPlan(format!(
                "image {name} has a malformed sha256 in the plan ({:?}); expected 64 hex digits",
                sha256.chars().take(80).collect::<String>()
            )));
        }
        let size = size.ok_or_else(|| {
            Error::BadPlan(format!(
                "image {name} has no size in the plan; refusing to write bytes that cannot \
                 be checked (give the catalog entry a size)"
            ))
        })?;
        Ok(Expected {
            sha256: sha256.to_ascii_lowercase(),
            size,
        })
    }
}

/// The network flow's step 5 to 8: the shared core fed by an
/// [`HttpSource`], with the catalog's checks of the download.
fn write_and_verify(
    job: &Job,
    image: &PlanImage,
    expect: &Expected,
    hint: SizeHint,
    layout: Option<qcow2::Layout>,
    sink: &mut Sink,
    rep: &Reporter,
) -> Result<(String, u64)> {
    let download = Download {
        http: job.http,
        url: &image.url,
        format: image.format,
        retry: job.retry,
        console: job.console,
    };
    let fetch = download.fetcher(layout, rep.progress.fetched.clone());
    // 6. the download must be the catalog's bytes
    let check = |s: &Streamed| expect.check(s, job.console);
    let phase = |p: Phase, total: Option<u64>| rep.phase(p, total);
    let core = Core {
        console: job.console,
        progress: &rep.progress,
        phase: &phase,
        hint,
    };
    write_and_verify_core(&core, sink, fetch, check)
}

/// An image's bytes over HTTP, for the shared core: the network flow's
/// plan image, or a stick wizard's server image ([`crate::local`]).
#[derive(Clone, Copy)]
pub(crate) struct Download<'a> {
    /// Shared HTTP client.
    pub http: &'a ureq::Agent,
    /// Where the bytes are.
    pub url: &'a str,
    /// How they are encoded.
    pub format: ImageFormat,
    /// Resume policy.
    pub retry: Retry,
    /// Status lines.
    pub console: &'a Console,
}

impl<'a> Download<'a> {
    /// Decoded size as far as the container says (Range probes), and the
    /// qcow2 cluster map; `size` is the download's length.
    pub fn size_hint(&self, size: u64) -> Result<(SizeHint, Option<qcow2::Layout>)> {
        size_of(self.http, self.url, self.format, size)
    }

    /// The core's fetch step: stream, resume, decode, and hash the
    /// download (a raw image is hashed by the core, the same bytes).
    pub fn fetcher(
        self,
        layout: Option<qcow2::Layout>,
        fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> impl FnOnce(&mut Pump) -> Result<(u64, Option<String>)> + Send + 'a {
        let raw = self.format == ImageFormat::Raw;
        move |pump: &mut Pump| -> Result<(u64, Option<String>)> {
            let mut src = HttpSource::open(
                self.http.clone(),
                self.url,
                self.retry,
                self.console.clone(),
                fetched,
            )?;
            if raw {
                src.hashed_by_caller();
            }
            {
                let mut decoded: Box<dyn Read + Send + '_> = match layout {
                    Some(l) => {
                        let mut head = [0u8; 4];
                        src.read_exact(&mut head)?;
                        decompress::confirm(ImageFormat::Qcow2, &head)?;
                        let chained = io::Cursor::new(head).chain(&mut src);
                        let origin = qcow2::Origin::Http {
                            http: self.http.clone(),
                            url: self.url.to_string(),
                        };
                        Box::new(qcow2::Reader::new(l, chained, origin))
                    }
                    None => decompress::open(self.format, &mut src)?,
                };
                pump.pump(&mut decoded)?;
            }
            // Trailing bytes after the last frame still count for the digest.
            io::copy(&mut src, &mut io::sink())?;
            if src.resumes() > 0 {
                self.console
                    .line(format!("download resumed {} time(s)", src.resumes()));
            }
            Ok(src.finish())
        }
    }
}

impl Expected {
    /// Step 6: the download must be the catalog's bytes (length and
    /// sha256).
    pub(crate) fn check(&self, s: &Streamed, console: &Console) -> Result<()> {
        // Raw: the source left the hashing to the core (same bytes, same order).
        let download_sha = s.source_sha256.as_deref().unwrap_or(&s.decoded_sha256);
        if s.source_len != self.size {
            return Err(Error::Corrupt(format!(
                "downloaded {} bytes, the catalog says {}",
                s.source_len, self.size
            )));
        }
        if !self.sha256.eq_ignore_ascii_case(download_sha) {
            return Err(Error::ChecksumMismatch {
                what: "download",
                expected: self.sha256.clone(),
                actual: download_sha.to_string(),
            });
        }
        console.line("download sha256 matches the catalog");
        Ok(())
    }
}

/// What the shared write-and-verify core reports to: the network flow's
/// [`Reporter`], or the local flow's progress poller.
pub(crate) struct Core<'a> {
    /// Status lines.
    pub console: &'a Console,
    /// The byte counters (read by the reporter or the poller).
    pub progress: &'a Progress,
    /// Entering a phase, with its total when known.
    pub phase: &'a dyn Fn(Phase, Option<u64>),
    /// The decoded size, as far as known before the first byte.
    pub hint: SizeHint,
}

/// What the stream turned out to be, for the flow's own checks.
pub(crate) struct Streamed {
    /// Bytes read from the source (the download, the stored file).
    pub source_len: u64,
    /// Their sha256, when the source hashed them.
    pub source_sha256: Option<String>,
    /// sha256 of the decoded image as it went to the target.
    pub decoded_sha256: String,
}

/// The fetch thread's end of the pipeline: it fills the writer's
/// buffers from a decoded stream.
pub(crate) struct Pump {
    free_rx: Receiver<AlignedBuf>,
    full_tx: SyncSender<AlignedBuf>,
}

impl Pump {
    /// Hand all of `decoded` to the writer, in [`BLOCK`]-sized buffers.
    pub fn pump(&mut self, decoded: &mut dyn Read) -> Result<()> {
        loop {
            // The writer hung up: it failed, and said why.
            let Ok(mut buf) = self.free_rx.recv() else {
                return Err(Error::Stream(io::Error::other("writer stopped")));
            };
            let mut n = 0;
            while let Some(rest) = buf.spare().get_mut(n..).filter(|r| !r.is_empty()) {
                match decoded.read(rest) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if n == 0 {
                return Ok(());
            }
            buf.len = n;
            if self.full_tx.send(buf).is_err() {
                return Err(Error::Stream(io::Error::other("writer stopped")));
            }
        }
    }
}

/// Steps 5 to 8, shared by the network and the local flow: wipe the ends,
/// stream the decoded image (from `fetch`, on its own thread) onto the
/// target while the read-back follows, let the flow `check` the source,
/// compare the read-back with the decoded stream's digest, and only then
/// write the first MiB. Returns the read-back's sha256 and the length.
pub(crate) fn write_and_verify_core<F, C>(
    core: &Core,
    sink: &mut Sink,
    fetch: F,
    check: C,
) -> Result<(String, u64)>
where
    F: FnOnce(&mut Pump) -> Result<(u64, Option<String>)> + Send,
    C: FnOnce(&Streamed) -> Result<()>,
{
    let hint = core.hint;
    // 5. wipe the first and last MiB, then stream → decompress → write
    sink.wipe_ends()?;
    if sink.prezero(hint.exact)? {
        core.console.line(format!(
            "zeroed the image range with BLKZEROOUT: {}",
            sink.mode()
        ));
    } else if let Some(why) = sink.zeroout_refused() {
        core.console.line(format!(
            "the device refused BLKZEROOUT ({why}): writing zero blocks instead"
        ));
    }
    (core.phase)(Phase::Writing, hint.exact);
    let mut readback = verify::ReadBack::start(sink.path());
    let ((source_len, source_sha256), decoded_sha256) =
        stream(core.progress, sink, &mut readback, fetch)?;
    let len = sink.end();

    // 6. the source must be what the flow expects, the image its full size
    check(&Streamed {
        source_len,
        source_sha256,
        decoded_sha256: decoded_sha256.clone(),
    })?;
    if let Some(exact) = hint.exact {
        if len != exact {
            return Err(Error::Corrupt(format!(
                "image decoded to {len} bytes, its header says {exact}"
            )));
        }
    }

    // 7. make it durable; the read-back, which followed the writes, reads
    // the rest
    sink.finish_body()?;
    (core.phase)(Phase::Verifying, Some(len));
    let head_len = HOLD_BACK.min(len);
    let (on_disk, mode) = readback.finish(len, sink.head())?;
    core.progress.bytes.store(len, Ordering::Relaxed);
    if let verify::ReadMode::DroppedCache(why) = mode {
        core.console.line(format!(
            "read-back through the page cache after dropping it ({why})"
        ));
    }
    if on_disk != decoded_sha256 {
        return Err(Error::ChecksumMismatch {
            what: "read-back",
            expected: decoded_sha256,
            actual: on_disk,
        });
    }

    // 8. only now write the head, and check it landed
    (core.phase)(Phase::Finishing, Some(head_len));
    sink.commit_head()?;
    verify::check_head(sink.path(), sink.head())?;
    core.console.line(format!(
        "wrote {len} bytes ({} written, {} zero bytes skipped), sha256 {on_disk}",
        sink.written, sink.skipped
    ));
    Ok((on_disk, len))
}

/// The size the image will have once decoded, from what is cheapest to
/// ask: the plan's download `size`, or a Range GET of the container's
/// header or trailer. For qcow2 this also loads the cluster map.
fn size_of(
    http: &ureq::Agent,
    url: &str,
    format: ImageFormat,
    size: u64,
) -> Result<(SizeHint, Option<qcow2::Layout>)> {
    let len = Some(size);
    let mut hint = SizeHint::default();
    match format {
        ImageFormat::Raw => hint.exact = len,
        ImageFormat::Zst => {
            hint.exact = range_get(http, url, "0-17", 18)
                .ok()
                .and_then(|(h, _)| decompress::zstd_content_size(&h));
        }
        ImageFormat::Gz => {
            // ISIZE is the size mod 2^32: a lower bound only.
            hint.at_least = range_get(http, url, "-4", 4)
                .ok()
                .and_then(|(t, _)| decompress::gzip_isize(&t))
                .unwrap_or(0);
        }
        ImageFormat::Xz => {
            hint.exact = (|| {
                let total = len?;
                let (footer, _) = range_get(http, url, "-12", 12).ok()?;
                let idx = decompress::xz_index_size(&footer)?;
                let start = total.checked_sub(12 + idx)?;
                let (index, _) =
                    range_get(http, url, &format!("{start}-{}", total - 13), idx).ok()?;
                decompress::xz_index_uncompressed(&index)
            })();
        }
        ImageFormat::Bz2 => {}
        ImageFormat::Qcow2 => {
            let layout = qcow2::Layout::fetch(http, url)?;
            hint.exact = Some(layout.virtual_size);
            return Ok((hint, Some(layout)));
        }
    }
    Ok((hint, None))
}

/// How often the writer lets the read-back catch up: often enough that
/// little is left to read when the download ends, seldom enough that the
/// syncs it costs stay few (16 per GiB).
const SETTLE_EVERY: u64 = 64 << 20;

/// Step 5: a fetch thread (source, its hash, decoding) fills 4 MiB
/// aligned buffers; this thread writes them and passes them on to a hash
/// thread, which hashes the decoded stream and hands them back to the
/// fetch thread. Writing waits on the device, hashing on the core: on
/// their own threads, they overlap.
/// For a raw image the source is the decoded stream, so only the hash
/// thread hashes it: the fetch thread then only receives.
/// Returns ((source length, source sha256 if hashed), decoded stream sha256).
fn stream<F>(
    progress: &Progress,
    sink: &mut Sink,
    readback: &mut verify::ReadBack,
    fetch: F,
) -> Result<((u64, Option<String>), String)>
where
    F: FnOnce(&mut Pump) -> Result<(u64, Option<String>)> + Send,
{
    let (full_tx, full_rx) = sync_channel::<AlignedBuf>(3);
    let (hash_tx, hash_rx) = channel::<AlignedBuf>();
    let (free_tx, free_rx) = channel::<AlignedBuf>();
    for _ in 0..6 {
        free_tx
            .send(AlignedBuf::new(BLOCK))
            .map_err(|_| Error::Stream(io::Error::other("write buffers dropped")))?;
    }
    std::thread::scope(|s| {
        let fetcher = s.spawn(move || fetch(&mut Pump { free_rx, full_tx }));
        let hash_free = free_tx.clone();
        let hash = s.spawn(move || {
            let mut hasher = Sha256::new();
            for buf in hash_rx.iter() {
                hasher.update(buf.data());
                let _ = hash_free.send(buf);
            }
            hex::encode(hasher.finalize())
        });
        drop(free_tx);
        let mut off = 0u64;
        let mut next_settle = SETTLE_EVERY;
        let mut wrote: Result<()> = Ok(());
        for buf in full_rx.iter() {
            if let Err(e) = sink.put(off, buf.data()) {
                wrote = Err(e);
                break;
            }
            off += buf.len as u64;
            if off >= next_settle {
                match sink.settle() {
                    Ok(upto) => readback.settled(upto, sink.head()),
                    Err(e) => {
                        wrote = Err(e);
                        break;
                    }
                }
                next_settle = off + SETTLE_EVERY;
            }
            progress.bytes.store(off, Ordering::Relaxed);
            let _ = hash_tx.send(buf);
        }
        // Hang up on both: the hash thread ends, and with it the last
        // sender of free buffers, so a fetch thread still waiting stops.
        drop(full_rx);
        drop(hash_tx);
        let decoded = hash
            .join()
            .map_err(|_| Error::Stream(io::Error::other("hash thread panicked")))?;
        let source = fetcher
            .join()
            .map_err(|_| Error::Stream(io::Error::other("fetch thread panicked")))?;
        wrote?;
        Ok((source?, decoded))
    })
}
