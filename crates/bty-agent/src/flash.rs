//! One flash, as numbered steps. Everything it needs comes in [`Job`];
//! everything it learns goes out through the [`Reporter`] and the result.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, sync_channel};
use std::time::{Duration, Instant};

use bty_proto::plan::{Phase, Plan, PlanImage};
use bty_proto::ImageFormat;
use sha2::{Digest, Sha256};

use crate::console::Console;
use crate::decompress::{self, SizeHint};
use crate::qcow2;
use crate::report::Reporter;
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
    let (hint, layout) = size_of(job.http, image, expect.size)?;
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
        let name = &image.name;
        let sha256 = image.sha256.as_deref().ok_or_else(|| {
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
        let size = image.size.ok_or_else(|| {
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

fn write_and_verify(
    job: &Job,
    image: &PlanImage,
    expect: &Expected,
    hint: SizeHint,
    layout: Option<qcow2::Layout>,
    sink: &mut Sink,
    rep: &Reporter,
) -> Result<(String, u64)> {
    // 5. wipe the first and last MiB, then stream → decompress → write
    sink.wipe_ends()?;
    if sink.prezero(hint.exact)? {
        job.console.line(format!(
            "zeroed the image range with BLKZEROOUT: {}",
            sink.mode()
        ));
    } else if let Some(why) = sink.zeroout_refused() {
        job.console.line(format!(
            "the device refused BLKZEROOUT ({why}): writing zero blocks instead"
        ));
    }
    rep.phase(Phase::Writing, hint.exact);
    let mut readback = verify::ReadBack::start(sink.path());
    let (download, stream_digest) = stream(job, image, layout, sink, rep, &mut readback)?;
    let len = sink.end();

    // 6. the download must be the catalog's bytes, the image its full size
    if download.0 != expect.size {
        return Err(Error::Corrupt(format!(
            "downloaded {} bytes, the catalog says {}",
            download.0, expect.size
        )));
    }
    if !expect.sha256.eq_ignore_ascii_case(&download.1) {
        return Err(Error::ChecksumMismatch {
            what: "download",
            expected: expect.sha256.clone(),
            actual: download.1,
        });
    }
    job.console.line("download sha256 matches the catalog");
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
    rep.phase(Phase::Verifying, Some(len));
    let head_len = HOLD_BACK.min(len);
    let (on_disk, mode) = readback.finish(len, sink.head())?;
    rep.progress.bytes.store(len, Ordering::Relaxed);
    if let verify::ReadMode::DroppedCache(why) = mode {
        job.console.line(format!(
            "read-back through the page cache after dropping it ({why})"
        ));
    }
    if on_disk != stream_digest {
        return Err(Error::ChecksumMismatch {
            what: "read-back",
            expected: stream_digest,
            actual: on_disk,
        });
    }

    // 8. only now write the head, and check it landed
    rep.phase(Phase::Finishing, Some(head_len));
    sink.commit_head()?;
    verify::check_head(sink.path(), sink.head())?;
    job.console.line(format!(
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
    image: &PlanImage,
    size: u64,
) -> Result<(SizeHint, Option<qcow2::Layout>)> {
    let url = &image.url;
    let len = Some(size);
    let mut hint = SizeHint::default();
    match image.format {
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

/// Step 5: a fetch thread (HTTP, download hash, decoding) fills 4 MiB
/// aligned buffers; this thread writes them and passes them on to a hash
/// thread, which hashes the decoded stream and hands them back to the
/// fetch thread. Writing waits on the device, hashing on the core: on
/// their own threads, they overlap.
/// For a raw image the download is the decoded stream, so only the hash
/// thread hashes it: the fetch thread then only receives.
/// Returns ((download length, download sha256), decoded stream sha256).
fn stream(
    job: &Job,
    image: &PlanImage,
    layout: Option<qcow2::Layout>,
    sink: &mut Sink,
    rep: &Reporter,
    readback: &mut verify::ReadBack,
) -> Result<((u64, String), String)> {
    let (full_tx, full_rx) = sync_channel::<AlignedBuf>(3);
    let (hash_tx, hash_rx) = channel::<AlignedBuf>();
    let (free_tx, free_rx) = channel::<AlignedBuf>();
    for _ in 0..6 {
        free_tx
            .send(AlignedBuf::new(BLOCK))
            .map_err(|_| Error::Stream(io::Error::other("write buffers dropped")))?;
    }
    let raw = image.format == ImageFormat::Raw;
    let fetched = rep.progress.fetched.clone();
    std::thread::scope(|s| {
        let fetcher = s.spawn(move || -> Result<(u64, Option<String>)> {
            let mut src = HttpSource::open(
                job.http.clone(),
                &image.url,
                job.retry,
                job.console.clone(),
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
                        Box::new(qcow2::Reader::new(l, chained, job.http.clone(), &image.url))
                    }
                    None => decompress::open(image.format, &mut src)?,
                };
                loop {
                    // The writer hung up: it failed, and said why.
                    let Ok(mut buf) = free_rx.recv() else {
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
                        break;
                    }
                    buf.len = n;
                    if full_tx.send(buf).is_err() {
                        return Err(Error::Stream(io::Error::other("writer stopped")));
                    }
                }
            }
            // Trailing bytes after the last frame still count for the digest.
            io::copy(&mut src, &mut io::sink())?;
            if src.resumes() > 0 {
                job.console
                    .line(format!("download resumed {} time(s)", src.resumes()));
            }
            Ok(src.finish())
        });
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
            rep.progress.bytes.store(off, Ordering::Relaxed);
            let _ = hash_tx.send(buf);
        }
        // Hang up on both: the hash thread ends, and with it the last
        // sender of free buffers, so a fetch thread still waiting stops.
        drop(full_rx);
        drop(hash_tx);
        let decoded = hash
            .join()
            .map_err(|_| Error::Stream(io::Error::other("hash thread panicked")))?;
        let download = fetcher
            .join()
            .map_err(|_| Error::Stream(io::Error::other("fetch thread panicked")))?;
        wrote?;
        let (len, download_sha) = download?;
        // Raw: the source left the hashing to us (same bytes, same order).
        let download_sha = download_sha.unwrap_or_else(|| decoded.clone());
        Ok(((len, download_sha), decoded))
    })
}
