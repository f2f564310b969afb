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

use http::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::origin::Refused;
use crate::store::{Download, Phase, Store};

mod body;

use body::pump;

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
    /// The sha256 the upstream withcache vouches for (its
    /// `x-withcache-sha256`), checked like the catalog's.
    upstream_sha: Option<String>,
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
    match fetch(&store, &dl, &mut reserved, &mut temp).await {
        Ok((digest, size)) => completed(&store, &dl, digest, size),
        Err(msg) => failed(&store, &dl, msg, reserved, temp).await,
    }
    store.finish(&dl.src);
}

/// Count, log and publish a download that was stored.
fn completed(store: &Store, dl: &Download, digest: String, size: u64) {
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

/// Drop what a failed download held (its temp file, its reservation),
/// then count, log and publish the failure.
async fn failed(store: &Store, dl: &Download, msg: String, reserved: u64, temp: Option<PathBuf>) {
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

/// What to do with one origin response.
enum Next {
    /// Copy its body into the generation, dropping this many bytes first.
    Pump(u64),
    /// Try again; the message says why.
    Retry(String),
}

/// Attempt the download until it is stored, fails for good, or runs out
/// of attempts; `reserved` and `temp` tell the caller what to clean up.
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
    announce_start(store, dl);
    // An entry stored before the rule, or while private origins were
    // allowed, fails here for good; names are checked as they resolve.
    // With an upstream this cache never connects to the origin.
    if store.upstream.is_none() {
        store
            .origins
            .check_src(&dl.src)
            .map_err(|r| r.to_string())?;
    }
    let mut gen: Option<Generation> = None;
    let mut last_error = String::from("no attempt made");
    for attempt in 0..cfg.max_attempts {
        if attempt > 0 {
            tokio::time::sleep(backoff(cfg.retry_base_delay, attempt - 1)).await;
        }
        if dl.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled by the operator".into());
        }
        match try_once(store, dl, &mut gen, reserved, temp, cfg.read_timeout).await? {
            Tried::Stored(digest, size) => return Ok((digest, size)),
            Tried::Retry(why) => last_error = why,
        }
    }
    Err(format!(
        "gave up after {} attempts: {last_error}",
        cfg.max_attempts
    ))
}

/// How one attempt ended, short of a failure for good.
enum Tried {
    /// The bytes are verified and in the store: digest, size.
    Stored(String, u64),
    /// Try again; the message says why.
    Retry(String),
}

/// One request to the origin and as much of its body as it sends.
async fn try_once(
    store: &Store,
    dl: &Download,
    gen: &mut Option<Generation>,
    reserved: &mut u64,
    temp: &mut Option<PathBuf>,
    read_timeout: Duration,
) -> Result<Tried, String> {
    let resp = match request(store, dl, gen.as_ref(), read_timeout).await? {
        Ok(resp) => resp,
        Err(why) => return Ok(Tried::Retry(why)),
    };
    let skip = match accept(store, dl, gen, &resp, reserved, temp).await? {
        Next::Pump(skip) => skip,
        Next::Retry(why) => return Ok(Tried::Retry(why)),
    };
    let Some(g) = gen.as_mut() else {
        return Err("internal error: no download file was set up".into());
    };
    match pump(store, dl, g, resp, skip, reserved, read_timeout).await? {
        Attempt::Complete => {
            let (digest, size) = store_verified(store, dl, g, reserved, temp).await?;
            Ok(Tried::Stored(digest, size))
        }
        Attempt::Retry(why) => Ok(Tried::Retry(why)),
    }
}

/// Tell readers and the event log that the download is under way.
fn announce_start(store: &Store, dl: &Download) {
    dl.state.send_modify(|s| s.phase = Phase::Connecting);
    let _ = store.db().event(
        "download.started",
        &dl.src,
        "system",
        None,
        "download started",
    );
}

/// Ask the origin for the bytes, from where the generation stopped when
/// there is one to resume: the answer, or (inner `Err`) why to try again.
/// A refused origin (its name resolved to, or a redirect led to, an
/// address withcache does not connect to) fails for good (outer `Err`).
async fn request(
    store: &Store,
    dl: &Download,
    gen: Option<&Generation>,
    read_timeout: Duration,
) -> Result<Result<reqwest::Response, String>, String> {
    let mut req = match &store.upstream {
        Some(up) => up.client.get(up.url(&dl.src)),
        None => store.client.get(&dl.src),
    };
    if let Some(g) = gen.filter(|g| g.got > 0) {
        req = req.header(RANGE, format!("bytes={}-", g.got));
        if let Some(v) = g.validators.if_range() {
            req = req.header(IF_RANGE, v);
        }
    }
    match tokio::time::timeout(read_timeout, req.send()).await {
        Ok(Ok(r)) => Ok(Ok(r)),
        Ok(Err(e)) => match (Refused::find(&e), &store.upstream) {
            (_, Some(up)) => Ok(Err(format!(
                "requesting {} from the upstream withcache {}: {}",
                dl.src,
                up.base,
                chain(&e)
            ))),
            (Some(r), None) => Err(format!("requesting {}: {r}", dl.src)),
            (None, None) => Ok(Err(format!("requesting {}: {e}", dl.src))),
        },
        Err(_) => Ok(Err(format!(
            "origin did not answer within {read_timeout:?}"
        ))),
    }
}

/// An error and its causes on one line: reqwest's own text ("error
/// sending request") leaves out the "Connection refused" an operator needs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// How a failed download's message starts when the upstream withcache
/// does not have the blob either; `blob` answers it as this cache's miss
/// (404), not as a failed origin (502).
pub(crate) const UPSTREAM_MISS: &str = "upstream miss: ";

/// Judge the origin's answer: resume the generation, start a new one, try
/// again, or give up (`Err`) when retrying cannot help.
async fn accept(
    store: &Store,
    dl: &Download,
    gen: &mut Option<Generation>,
    resp: &reqwest::Response,
    reserved: &mut u64,
    temp: &mut Option<PathBuf>,
) -> Result<Next, String> {
    let status = resp.status();
    let resume_at = gen.as_ref().map_or(0, |g| g.got);
    if resume_at > 0 && status == StatusCode::PARTIAL_CONTENT {
        return Ok(check_resume(gen, resp, resume_at));
    }
    if status == StatusCode::OK {
        return whole_body(store, dl, gen, resp, reserved, temp).await;
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE && resume_at > 0 {
        *gen = None;
        return Ok(Next::Retry(
            "origin refused to resume (416); restarting from byte 0".into(),
        ));
    }
    if status == StatusCode::NOT_FOUND {
        if let Some(up) = &store.upstream {
            return Err(format!(
                "{UPSTREAM_MISS}the upstream withcache {} has no {} (404): add it to the \
                 upstream's catalog",
                up.base, dl.src
            ));
        }
    }
    if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        return Err(format!("origin answered {status} for {}", dl.src));
    }
    Ok(Next::Retry(format!("origin answered {status}")))
}

/// A `206` must continue the same version at the byte we asked for;
/// anything else voids the generation.
fn check_resume(gen: &mut Option<Generation>, resp: &reqwest::Response, resume_at: u64) -> Next {
    let Some(g) = gen.as_ref() else {
        return Next::Pump(0);
    };
    let (start, len) = content_range(resp).unwrap_or((u64::MAX, None));
    let now = Validators::from(resp, len.or(g.validators.length));
    if start != resume_at || !g.validators.same(&now) {
        *gen = None;
        // Start again from byte 0 (after the retry loop's usual backoff, so a
        // file that keeps changing cannot make us hammer the origin).
        return Next::Retry("origin changed during the download; restarting from byte 0".into());
    }
    Next::Pump(0)
}

/// A `200` sends the body from byte 0: keep the generation when it is
/// provably the same version, else start a new one.
async fn whole_body(
    store: &Store,
    dl: &Download,
    gen: &mut Option<Generation>,
    resp: &reqwest::Response,
    reserved: &mut u64,
    temp: &mut Option<PathBuf>,
) -> Result<Next, String> {
    let v = Validators::from(resp, resp.content_length());
    let keep = gen.as_ref().filter(|g| {
        g.got > 0
            && g.validators.same(&v)
            && (g.validators.etag.is_some() || g.validators.last_modified.is_some())
    });
    if let Some(g) = keep {
        // The origin ignored Range but sends the same version:
        // read past what we have instead of voiding the readers.
        return Ok(Next::Pump(g.got));
    }
    let total = resp.content_length();
    check_declared_size(dl, total)?;
    reserve_up_to(store, total.or(dl.expected_size).unwrap_or(0), reserved)?;
    let upstream_sha = store.upstream.as_ref().and_then(|_| upstream_sha(resp));
    *gen = Some(new_generation(store, dl, total, v, upstream_sha, temp).await?);
    Ok(Next::Pump(0))
}

/// The sha256 an upstream withcache sends for the blob, if a valid one.
fn upstream_sha(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get(crate::store::X_SHA256)?.to_str().ok()?;
    let sha = v.trim().to_ascii_lowercase();
    bty_proto::text::validate_sha256("sha256", &sha).ok()?;
    Some(sha)
}

/// An origin whose length contradicts the catalog will never match it.
fn check_declared_size(dl: &Download, total: Option<u64>) -> Result<(), String> {
    match (dl.expected_size, total) {
        (Some(want), Some(have)) if want != have => Err(format!(
            "origin length {have} differs from the catalog size {want}; \
             fix the catalog entry or the origin"
        )),
        _ => Ok(()),
    }
}

/// Hold at least `need` bytes of the store for this download.
fn reserve_up_to(store: &Store, need: u64, reserved: &mut u64) -> Result<(), String> {
    if need > *reserved {
        store.reserve(need - *reserved).map_err(|e| e.to_string())?;
        *reserved = need;
    }
    Ok(())
}

/// Replace the temp file with an empty one and point readers at it.
async fn new_generation(
    store: &Store,
    dl: &Download,
    total: Option<u64>,
    validators: Validators,
    upstream_sha: Option<String>,
    temp: &mut Option<PathBuf>,
) -> Result<Generation, String> {
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
        s.upstream_sha = upstream_sha.clone();
        s.phase = Phase::Running;
    });
    Ok(Generation {
        path,
        file,
        hasher: Sha256::new(),
        got: 0,
        total,
        validators,
        upstream_sha,
    })
}

/// Check a complete generation against the catalog, make it durable and
/// move it into the store.
async fn store_verified(
    store: &Store,
    dl: &Download,
    g: &mut Generation,
    reserved: &mut u64,
    temp: &mut Option<PathBuf>,
) -> Result<(String, u64), String> {
    let digest = hex::encode(std::mem::take(&mut g.hasher).finalize());
    let size = g.got;
    verify(dl, &digest, size)?;
    if let Some(want) = g.upstream_sha.as_deref().filter(|want| *want != digest) {
        return Err(format!(
            "sha256 mismatch: the upstream withcache says {want}, its bytes are {digest}; \
             nothing was stored"
        ));
    }
    // The bytes are right: let streaming clients finish now
    // rather than after the fsync below.
    dl.state.send_modify(|s| s.verified = true);
    g.file
        .sync_all()
        .await
        .map_err(|e| format!("syncing {}: {e}", g.path.display()))?;
    store
        .commit(&dl.src, &g.path, &digest, size, *reserved)
        .map_err(|e| e.to_string())?;
    *temp = None;
    *reserved = 0;
    Ok((digest, size))
}

/// The bytes must be the ones the catalog promises, if it promises any.
fn verify(dl: &Download, digest: &str, size: u64) -> Result<(), String> {
    if let Some(want) = dl.expected_sha.as_deref().filter(|want| *want != digest) {
        return Err(format!(
            "sha256 mismatch: the catalog says {want}, the origin's bytes are \
             {digest}; nothing was stored"
        ));
    }
    if let Some(want) = dl.expected_size.filter(|want| *want != size) {
        return Err(format!(
            "size mismatch: the catalog says {want} bytes, the origin sent {size}"
        ));
    }
    Ok(())
}
