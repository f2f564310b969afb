//! The image's bytes over HTTP: one GET that, when the connection drops or
//! stalls, resumes where it stopped with a Range request, after checking
//! that the origin still serves the same object (ETag and length). Every
//! byte fetched goes through a sha256 on the way, so the digest of the
//! download is known the moment the last byte arrives, unless the caller
//! hashes the very same bytes itself ([`HttpSource::hashed_by_caller`]).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::console::Console;
use crate::net::{backoff, describe};
use crate::{Error, Result};

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Failed attempts in a row (without a byte of progress) before giving up.
    pub attempts: u32,
    /// First backoff; doubles per failure.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(15),
        }
    }
}

/// A resumable, hashing HTTP reader.
pub struct HttpSource {
    http: ureq::Agent,
    url: String,
    body: Option<Box<dyn Read + Send + Sync>>,
    pos: u64,
    len: Option<u64>,
    etag: Option<String>,
    hasher: Option<Sha256>,
    retry: Retry,
    failures: u32,
    resumes: u32,
    console: Console,
    fetched: Arc<AtomicU64>,
}

fn header_u64(r: &ureq::Response, name: &str) -> Option<u64> {
    r.header(name)?.trim().parse().ok()
}

/// `bytes a-b/total` → (a, total).
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

impl HttpSource {
    /// Start the download. Connection errors and 5xx are retried; a 4xx is
    /// final.
    pub fn open(
        http: ureq::Agent,
        url: &str,
        retry: Retry,
        console: Console,
        fetched: Arc<AtomicU64>,
    ) -> Result<Self> {
        let mut s = HttpSource {
            http,
            url: url.to_string(),
            body: None,
            pos: 0,
            len: None,
            etag: None,
            hasher: Some(Sha256::new()),
            retry,
            failures: 0,
            resumes: 0,
            console,
            fetched,
        };
        loop {
            match s.http.get(&s.url).call() {
                Ok(r) => {
                    s.len = header_u64(&r, "content-length");
                    s.etag = r.header("etag").map(str::to_string);
                    s.body = Some(r.into_reader());
                    return Ok(s);
                }
                Err(ureq::Error::Status(code, r)) if code < 500 => {
                    return Err(Error::Http {
                        url: s.url.clone(),
                        reason: format!("HTTP {code} {}", r.status_text()),
                    })
                }
                Err(e) => s.failed(describe(&e))?,
            }
        }
    }

    /// Length of the object, when the server said.
    pub fn object_len(&self) -> Option<u64> {
        self.len
    }

    /// How many times the download resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Do not hash here: the caller feeds every byte this source delivers,
    /// in order, to its own sha256 (on another thread, so that the hash
    /// and the receiving share the work of two cores). [`HttpSource::finish`]
    /// then has no digest to give.
    pub fn hashed_by_caller(&mut self) {
        self.hasher = None;
    }

    /// Bytes delivered and their sha256 (lower-case hex; `None` after
    /// [`HttpSource::hashed_by_caller`]).
    pub fn finish(self) -> (u64, Option<String>) {
        (self.pos, self.hasher.map(|h| hex::encode(h.finalize())))
    }

    /// Count a failure; sleep, or give up when out of attempts.
    fn failed(&mut self, reason: String) -> Result<()> {
        self.failures += 1;
        if self.failures >= self.retry.attempts {
            return Err(Error::Http {
                url: self.url.clone(),
                reason: format!("{reason} (gave up after {} attempts)", self.failures),
            });
        }
        let wait = backoff(self.failures - 1, self.retry.base, self.retry.cap);
        self.console.line(format!(
            "download interrupted at byte {} ({reason}); resuming in {:.1}s",
            self.pos,
            wait.as_secs_f64()
        ));
        std::thread::sleep(wait);
        Ok(())
    }

    /// Ask for the rest of the object and check it is still the same one.
    fn resume(&mut self) -> Result<()> {
        let mut req = self
            .http
            .get(&self.url)
            .set("Range", &format!("bytes={}-", self.pos));
        if let Some(tag) = self.etag.as_deref().filter(|t| !t.starts_with("W/")) {
            req = req.set("If-Range", tag);
        }
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) if code < 500 && code != 408 && code != 429 => {
                return Err(Error::OriginChanged(format!(
                    "resume at byte {} answered HTTP {code} {}",
                    self.pos,
                    r.status_text()
                )))
            }
            Err(e) => return self.failed(describe(&e)),
        };
        let etag = r.header("etag").map(str::to_string);
        if let (Some(old), Some(new)) = (&self.etag, &etag) {
            if old != new {
                return Err(Error::OriginChanged(format!("ETag was {old}, now {new}")));
            }
        }
        let body = match r.status() {
            206 => {
                let (start, total) = r
                    .header("content-range")
                    .and_then(content_range)
                    .ok_or_else(|| {
                        Error::OriginChanged("206 without a usable Content-Range".into())
                    })?;
                if start != self.pos {
                    return Err(Error::OriginChanged(format!(
                        "asked for byte {}, got {start}",
                        self.pos
                    )));
                }
                if let (Some(t), Some(l)) = (total, self.len) {
                    if t != l {
                        return Err(Error::OriginChanged(format!("length was {l}, now {t}")));
                    }
                }
                r.into_reader()
            }
            _ => {
                // The whole object again: the origin ignores Range. Same
                // length and no ETag change: skip what we have.
                if let (Some(l), Some(n)) = (self.len, header_u64(&r, "content-length")) {
                    if l != n {
                        return Err(Error::OriginChanged(format!("length was {l}, now {n}")));
                    }
                }
                self.console
                    .line("origin ignores Range; re-reading up to the resume point");
                let mut b = r.into_reader();
                io::copy(&mut (&mut b).take(self.pos), &mut io::sink())?;
                b
            }
        };
        self.body = Some(body);
        self.resumes += 1;
        Ok(())
    }
}

impl Read for HttpSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                self.resume()?;
                continue;
            };
            match body.read(buf) {
                Ok(0) if self.len.is_none_or(|l| self.pos >= l) => return Ok(0),
                Ok(0) => {
                    self.body = None;
                    self.failed(format!(
                        "connection closed {} bytes early",
                        self.len.unwrap_or(0) - self.pos
                    ))?;
                }
                Ok(n) => {
                    let got = buf.get(..n).ok_or_else(|| {
                        io::Error::other("the HTTP body reader claimed more bytes than asked")
                    })?;
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(got);
                    }
                    self.pos += n as u64;
                    self.failures = 0;
                    self.fetched.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.body = None;
                    let reason = if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) {
                        "stalled: no data within the stall timeout".to_string()
                    } else {
                        e.to_string()
                    };
                    self.failed(reason)?;
                }
            }
        }
    }
}

/// Bytes `[from, from+len)` of `url` (or to the end when `len` is `None`,
/// negative `from` meaning "the last -from bytes"), for header probes.
pub fn range_get(
    http: &ureq::Agent,
    url: &str,
    range: &str,
    limit: u64,
) -> Result<(Vec<u8>, Option<u64>)> {
    let r = http
        .get(url)
        .set("Range", &format!("bytes={range}"))
        .timeout(Duration::from_secs(20))
        .call()
        .map_err(|e| Error::Http {
            url: url.to_string(),
            reason: describe(&e),
        })?;
    let total = if r.status() == 206 {
        r.header("content-range")
            .and_then(content_range)
            .and_then(|(_, t)| t)
    } else {
        header_u64(&r, "content-length")
    };
    if r.status() != 206 {
        return Err(Error::Http {
            url: url.to_string(),
            reason: format!("Range request answered {} (no Range support)", r.status()),
        });
    }
    let mut out = Vec::new();
    r.into_reader().take(limit).read_to_end(&mut out)?;
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(content_range("bytes 100-199/1000"), Some((100, Some(1000))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
