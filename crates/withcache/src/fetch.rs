//! The downloader: one task per URL (started by [`start`]) that
//! pulls the origin into a temp file, resumes with `Range` when the
//! connection drops, restarts from zero when the origin changed, verifies
//! the sha256 the catalog promises and only then renames the file into the
//! content-addressed store.
//!
//! Readers follow the temp file while it grows (read-while-fetch, see
//! `blob`); the state they watch is updated after every write.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use http::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::store::{Download, Phase, Store};

/// Buffer this much before writing, so a fast origin costs few syscalls
/// and readers are woken in useful steps.
const WRITE_CHUNK: usize = 1 << 20;
/// When the origin pauses, write what is buffered after this long so
/// readers are not held back by a slow origin.
const FLUSH_IDLE: Duration = Duration::from_millis(20);

/// What identifies one version of the origin's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
    length: Option<u64>,
}

impl Validators {
    fn from(resp: &reqwest::Response, length: Option<u64>) -> Validators {
        let h = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        Validators {
            etag: h(ETAG),
            last_modified: h(LAST_MODIFIED),
            length,
        }
    }

    /// The `If-Range` value: a strong ETag, else Last-Modified.
    fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(e) if !e.starts_with("W/") => Some(e),
            _ => self.last_modified.as_deref(),
        }
    }

    /// Whether a later response is the same version. With no validator at
    /// all only the length can be compared; the catalog sha256 (when there
    /// is one) is the final check.
    fn same(&self, other: &Validators) -> bool {
        self.etag == other.etag
            && self.last_modified == other.last_modified
            && self.length == other.length
    }
}

/// One pass over the origin's bytes from offset 0.
struct Generation {
    path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    got: u64,
    total: Option<u64>,
    validators: Validators,
}

enum Attempt {
    /// The body ended at the declared length (or at EOF with none).
    Complete,
    /// Try again (resume if the generation is kept); the message says why.
    Retry(String),
}

/// Join the download of `src`, or register and start it (single flight,
/// see `Store::join_or_register`); `true` = started now. `None` if `src`
/// turned out to be cached.
pub(crate) fn start(
    store: &Arc<Store>,
    src: &str,
    expected_sha: Option<String>,
    expected_size: Option<u64>,
) -> Option<(Arc<Download>, bool)> {
    let (dl, started) = store.join_or_register(src, expected_sha, expected_size)?;
    if started {
        tokio::spawn(run(store.clone(), dl.clone()));
    }
    Some((dl, started))
}

/// Run a download to completion and publish the outcome.
async fn run(store: Arc<Store>, dl: Arc<Download>) {
    let mut reserved = 0u64;
    let mut temp: Option<PathBuf> = None;
    let outcome = fetch(&store, &dl, &mut reserved, &mut temp).await;
    match outcome {
        Ok((digest, size)) => {
            store
                .metrics
                .downloads_completed
                .fetch_add(1, Ordering::Relaxed);
            let _ = store.db().event(
                "download.completed",
                &dl.src,
                "system",
                None,
                &format!("stored {size} bytes, sha256 {digest}"),
            );
            tracing::info!(src = %dl.src, %digest, size, "download completed");
            dl.state
                .send_modify(|s| s.phase = Phase::Done { digest, size });
        }
        Err(msg) => {
            if let Some(t) = temp {
                let _ = tokio::fs::remove_file(t).await;
            }
            store.release(reserved);
            store
                .metrics
                .downloads_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(src = %dl.src, error = %msg, "download failed");
            let _ = store
                .db()
                .event("download.failed", &dl.src, "system", None, &msg);
            dl.state.send_modify(|s| s.phase = Phase::Failed(msg));
        }
    }
    store.finish(&dl.src);
}

fn backoff(cfg_base: Duration, attempt: u32) -> Duration {
    let d = cfg_base.saturating_mul(1u32 << attempt.min(10));
    d.min(Duration::from_secs(30))
}

/// Parse `Content-Range: bytes a-b/len` into (a, len).
fn content_range(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, len) = rest.split_once('/')?;
    let (a, _b) = range.split_once('-')?;
    let len = if len == "*" {
        None
    } else {
        Some(len.parse().ok()?)
    };
    Some((a.parse().ok()?, len))
}

async fn fetch(
    store: &Arc<Store>,
    dl: &Arc<Download>,
    reserved: &mut u64,
    temp: &mut Option<PathBuf>,
) -> Result<(String, u64), String> {
    let cfg = store.fetch.clone();
    let _permit = store
        .slots
        .acquire()
        .await
        .map_err(|_| "shutting down".to_string())?;
    dl.state.send_modify(|s| s.phase = Phase::Connecting);
    let _ = store.db().event(
        "download.started",
        &dl.src,
        "system",
        None,
        "download started",
    );

    let mut gen: Option<Generation> = None;
    let mut last_error = String::from("no attempt made");
    for attempt in 0..cfg.max_attempts {
        if attempt > 0 {
            tokio::time::sleep(backoff(cfg.retry_base_delay, attempt - 1)).await;
        }
        if dl.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled by the operator".into());
        }
        let mut req = store.client.get(&dl.src);
        let resume_at = gen.as_ref().map_or(0, |g| g.got);
        if let Some(g) = gen.as_ref().filter(|g| g.got > 0) {
            req = req.header(RANGE, format!("bytes={}-", g.got));
            if let Some(v) = g.validators.if_range() {
                req = req.header(IF_RANGE, v);
            }
        }
        let resp = match tokio::time::timeout(cfg.read_timeout, req.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                last_error = format!("requesting {}: {e}", dl.src);
                continue;
            }
            Err(_) => {
                last_error = format!("origin did not answer within {:?}", cfg.read_timeout);
                continue;
            }
        };
        let status = resp.status();
        let mut skip = 0u64;
        // A resume (`resume_at > 0`) always has a generation.
        let resumed = gen
            .as_ref()
            .filter(|_| resume_at > 0 && status == StatusCode::PARTIAL_CONTENT);
        if let Some(g) = resumed {
            let (start, len) = content_range(&resp).unwrap_or((u64::MAX, None));
            let now = Validators::from(&resp, len.or(g.validators.length));
            if start != resume_at || !g.validators.same(&now) {
                last_error = "origin changed during the download; restarting from byte 0".into();
                gen = None;
                // Retry right away: this is not an origin fault to back off from.
                continue;
            }
        } else if status == StatusCode::OK {
            let v = Validators::from(&resp, resp.content_length());
            let keep = gen.as_ref().is_some_and(|g| {
                g.got > 0
                    && g.validators.same(&v)
                    && (g.validators.etag.is_some() || g.validators.last_modified.is_some())
            });
            if keep {
                // The origin ignored Range but sends the same version:
                // read past what we have instead of voiding the readers.
                skip = resume_at;
            } else {
                let total = resp.content_length();
                if let (Some(want), Some(have)) = (dl.expected_size, total) {
                    if want != have {
                        return Err(format!(
                            "origin length {have} differs from the catalog size {want}; \
                             fix the catalog entry or the origin"
                        ));
                    }
                }
                let need = total.or(dl.expected_size).unwrap_or(0);
                if need > *reserved {
                    store.reserve(need - *reserved).map_err(|e| e.to_string())?;
                    *reserved = need;
                }
                if let Some(old) = temp.take() {
                    let _ = tokio::fs::remove_file(old).await;
                }
                let path = store.temp_path();
                let file = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                *temp = Some(path.clone());
                dl.state.send_modify(|s| {
                    s.generation += 1;
                    s.path = Some(path.clone());
                    s.written = 0;
                    s.total = dl.expected_size.or(total);
                    s.phase = Phase::Running;
                });
                gen = Some(Generation {
                    path,
                    file,
                    hasher: Sha256::new(),
                    got: 0,
                    total,
                    validators: v,
                });
            }
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE && resume_at > 0 {
            last_error = "origin refused to resume (416); restarting from byte 0".into();
            gen = None;
            continue;
        } else if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            return Err(format!("origin answered {status} for {}", dl.src));
        } else {
            last_error = format!("origin answered {status}");
            continue;
        }
        let Some(g) = gen.as_mut() else {
            return Err("internal error: no download file was set up".into());
        };
        match pump(store, dl, g, resp, skip, reserved, cfg.read_timeout).await? {
            Attempt::Complete => {
                let digest = hex::encode(std::mem::take(&mut g.hasher).finalize());
                let size = g.got;
                if let Some(want) = &dl.expected_sha {
                    if *want != digest {
                        return Err(format!(
                            "sha256 mismatch: the catalog says {want}, the origin's bytes are \
                             {digest}; nothing was stored"
                        ));
                    }
                }
                if let Some(want) = dl.expected_size {
                    if want != size {
                        return Err(format!(
                            "size mismatch: the catalog says {want} bytes, the origin sent {size}"
                        ));
                    }
                }
                // The bytes are right: let streaming clients finish now
                // rather than after the fsync below.
                dl.state.send_modify(|s| s.verified = true);
                g.file
                    .sync_all()
                    .await
                    .map_err(|e| format!("syncing {}: {e}", g.path.display()))?;
                let path = g.path.clone();
                store
                    .commit(&dl.src, &path, &digest, size, *reserved)
                    .map_err(|e| e.to_string())?;
                *temp = None;
                *reserved = 0;
                return Ok((digest, size));
            }
            Attempt::Retry(why) => {
                last_error = why;
            }
        }
    }
    Err(format!(
        "gave up after {} attempts: {last_error}",
        cfg.max_attempts
    ))
}

/// Copy one response body into the generation's file.
async fn pump(
    store: &Arc<Store>,
    dl: &Arc<Download>,
    g: &mut Generation,
    resp: reqwest::Response,
    mut skip: u64,
    reserved: &mut u64,
    read_timeout: Duration,
) -> Result<Attempt, String> {
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
    let end = loop {
        if dl.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled by the operator".into());
        }
        let wait = if buf.is_empty() {
            read_timeout
        } else {
            FLUSH_IDLE
        };
        let item = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) if !buf.is_empty() => {
                flush(dl, g, &mut buf).await?;
                continue;
            }
            Err(_) => break End::Stalled,
            Ok(None) => break End::Eof,
            // hyper's own words here are "error decoding response body";
            // the counts below say more.
            Ok(Some(Err(e))) => break End::Broke(e.to_string()),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let mut chunk = &item[..];
        if skip > 0 {
            let n = (skip as usize).min(chunk.len());
            chunk = chunk.get(n..).unwrap_or_default();
            skip -= n as u64;
        }
        if chunk.is_empty() {
            continue;
        }
        store
            .metrics
            .origin_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let after = g.got + buf.len() as u64 + chunk.len() as u64;
        if let Some(total) = g.total {
            if after > total {
                return Err(format!(
                    "origin sent more than the {total} bytes it declared"
                ));
            }
        }
        if after > *reserved {
            // Unknown length: grow the reservation as bytes arrive.
            // Reserve in steps of up to 1 MiB (within the free room, so a
            // step never evicts more than the bytes need).
            let need = after - *reserved;
            let (used, held, max) = store.usage();
            let room = max.map_or(u64::MAX, |m| m.saturating_sub(used + held));
            let more = need.max(room.min(1 << 20));
            store.reserve(more).map_err(|e| e.to_string())?;
            *reserved += more;
        }
        buf.extend_from_slice(chunk);
        if buf.len() >= WRITE_CHUNK {
            flush(dl, g, &mut buf).await?;
        }
    };
    flush(dl, g, &mut buf).await?;
    if skip > 0 {
        return Ok(Attempt::Retry(
            "origin ended before reaching the resume point".into(),
        ));
    }
    Ok(match (end, g.total) {
        (End::Stalled, _) => Attempt::Retry(format!("origin stalled for {read_timeout:?}")),
        (End::Eof | End::Broke(_), Some(total)) if g.got < total => Attempt::Retry(format!(
            "the origin declared {total} bytes but closed the connection after {}",
            g.got
        )),
        (End::Broke(e), _) => Attempt::Retry(format!(
            "origin connection broke after {} bytes: {e}",
            g.got
        )),
        (End::Eof, _) => Attempt::Complete,
    })
}

/// How one response body ended.
enum End {
    /// The body ended (possibly short of the declared length).
    Eof,
    /// The connection broke; hyper's reason.
    Broke(String),
    /// Nothing came for the read timeout.
    Stalled,
}

async fn flush(dl: &Download, g: &mut Generation, buf: &mut BytesMut) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    g.file
        .write_all(buf)
        .await
        .map_err(|e| format!("writing {}: {e}", g.path.display()))?;
    // tokio's File completes writes in the background; flush so the bytes
    // are in the file before readers are told they are.
    g.file
        .flush()
        .await
        .map_err(|e| format!("writing {}: {e}", g.path.display()))?;
    g.hasher.update(&buf[..]);
    g.got += buf.len() as u64;
    buf.clear();
    let got = g.got;
    dl.state.send_modify(|s| s.written = got);
    Ok(())
}
