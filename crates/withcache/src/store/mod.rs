//! The blob store: content-addressed files under `blobs/sha256/`, the
//! in-memory index the serve path reads, the disk quota with LRU eviction,
//! and the single-flight map of downloads in progress. The store only
//! keeps that map; `fetch` runs the downloads (and depends on the store,
//! never the other way round).
//!
//! Locking: `index` and `downloads` are std mutexes held only for map
//! operations (never across an await). Eviction deletes files while holding
//! `index` so two reservations can never both count the same free space.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::db::{now_unix, Db};
use crate::error::Error;
use crate::origin::{GuardedResolver, Policy};

/// The header that carries a blob's sha256 (a cached blob's digest, or
/// the one its download will be checked against); a cache with an
/// upstream checks the upstream's.
pub(crate) const X_SHA256: http::HeaderName = http::HeaderName::from_static("x-withcache-sha256");

mod download;

use download::queued;
pub(crate) use download::settled;
pub use download::{DlState, Download, Phase};

/// Tunables of the download path. The defaults suit a lab; tests shorten
/// the timeouts.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Downloads running at once; more wait in line.
    pub max_downloads: usize,
    /// Requests per download (first try plus resumes and retries).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, capped at 30 s.
    pub retry_base_delay: Duration,
    /// An origin that sends nothing for this long is treated as dropped.
    pub read_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_downloads: 4,
            max_attempts: 6,
            retry_base_delay: Duration::from_millis(500),
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// GETs answered from a cached blob.
    pub hits: AtomicU64,
    /// Requests for URLs that are neither cached nor in the catalog.
    pub misses: AtomicU64,
    /// Body bytes sent to clients.
    pub bytes_served: AtomicU64,
    /// Downloads started.
    pub downloads_started: AtomicU64,
    /// Downloads verified and stored.
    pub downloads_completed: AtomicU64,
    /// Downloads that failed.
    pub downloads_failed: AtomicU64,
    /// Bytes received from origins.
    pub origin_bytes: AtomicU64,
    /// Blobs evicted to make room.
    pub evictions: AtomicU64,
}

/// A cached, verified blob ready to serve.
#[derive(Debug, Clone)]
pub struct Hit {
    /// sha256 hex.
    pub digest: String,
    /// Length.
    pub size: u64,
    /// The file.
    pub path: PathBuf,
}

#[derive(Debug)]
struct BlobMeta {
    size: u64,
    last_access: u64,
    hits: u64,
    /// Requests its URLs got as misses before they were cached.
    misses: u64,
    dirty: bool,
}

/// One stored blob, as `GET /blobs` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlobInfo {
    /// sha256 hex.
    pub digest: String,
    /// Length.
    pub size: u64,
    /// GET hits.
    pub hits: u64,
    /// Unix seconds of the last hit.
    pub last_access: u64,
    /// Requests its URLs got as misses before they were cached.
    pub misses: u64,
    /// The origin URLs whose bytes it is.
    pub sources: Vec<String>,
}

#[derive(Default)]
struct Index {
    sources: HashMap<String, String>,
    blobs: HashMap<String, BlobMeta>,
    used: u64,
    reserved: u64,
}

/// The store.
pub struct Store {
    data_dir: PathBuf,
    db: Arc<Db>,
    index: Mutex<Index>,
    downloads: Mutex<HashMap<String, Arc<Download>>>,
    max_bytes: Option<u64>,
    /// Counters.
    pub metrics: Metrics,
    /// Bounds concurrent downloads.
    pub(crate) slots: Semaphore,
    /// Origin client: its resolver and redirect policy apply `origins`.
    pub(crate) client: reqwest::Client,
    /// Which origin addresses may be connected to.
    pub(crate) origins: Policy,
    /// Tunables.
    pub(crate) fetch: FetchConfig,
    /// The withcache downloads go through instead of the origins, if any.
    pub(crate) upstream: Option<Upstream>,
    tmp_seq: AtomicU64,
}

/// Another withcache this one fetches every blob from
/// ([`crate::Options::upstream`]).
pub(crate) struct Upstream {
    /// Its base URL, without a trailing slash.
    pub base: String,
    /// A client without the origin address policy: the operator named
    /// this host, and it is often on a private or loopback address.
    pub client: reqwest::Client,
}

impl Upstream {
    /// Where the upstream serves the bytes of `src` (the same key).
    pub fn url(&self, src: &str) -> String {
        bty_proto::catalog::blob_url(&self.base, src)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Partial downloads do not survive a restart: their single-flight owner
/// is gone, and a resume would need validators we did not keep.
fn sweep(tmp: &Path) -> Result<(), Error> {
    for ent in std::fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))? {
        let ent = ent.map_err(|e| Error::io(tmp, e))?;
        let _ = std::fs::remove_file(ent.path());
    }
    Ok(())
}

/// The index as the database has it, without the blobs whose file is
/// missing or has the wrong size (their rows are deleted).
fn load_index(db: &Db, blobs: &Path) -> Result<Index, Error> {
    let (rows, sources) = db.load_index()?;
    let mut index = Index::default();
    for row in rows {
        match std::fs::metadata(blobs.join(&row.digest)) {
            Ok(m) if m.len() == row.size => {
                index.used += row.size;
                index.blobs.insert(
                    row.digest,
                    BlobMeta {
                        size: row.size,
                        last_access: row.last_access,
                        hits: row.hits,
                        misses: row.misses,
                        dirty: false,
                    },
                );
            }
            _ => {
                tracing::warn!(digest = %row.digest, "blob file missing or wrong size; forgetting it");
                db.delete_blob(&row.digest)?;
            }
        }
    }
    for (src, digest) in sources {
        if index.blobs.contains_key(&digest) {
            index.sources.insert(src, digest);
        }
    }
    Ok(index)
}

/// The client downloads go through. Unless private origins are allowed,
/// its resolver drops refused addresses and every redirect hop's IP
/// literal is checked (see `origin`).
fn origin_client(fetch: &FetchConfig, origins: Policy) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(fetch.connect_timeout)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            // Redirects may not leave http/https (no file://, no ftp://).
            if !matches!(attempt.url().scheme(), "http" | "https") {
                attempt.error("origin redirected to a non-http(s) URL")
            } else if attempt.previous().len() >= 10 {
                attempt.error("origin redirected more than 10 times")
            } else if let Err(refused) = origins.check_url(attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        }))
        .user_agent(concat!("withcache/", env!("CARGO_PKG_VERSION")));
    if !origins.allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(GuardedResolver));
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))
}

/// The least recently used blob that is not pinned.
fn lru_unpinned(index: &Index, pinned: &HashSet<String>) -> Option<String> {
    index
        .blobs
        .iter()
        .filter(|(d, _)| !pinned.contains(*d))
        .min_by_key(|(_, m)| m.last_access)
        .map(|(d, _)| d.clone())
}

/// Why `n` more bytes cannot fit, and what the operator can do.
fn cache_full(index: &Index, pinned: usize, n: u64, max: u64) -> Error {
    Error::Full(format!(
        "cache full: {} bytes stored ({pinned} pinned), {} reserved by running downloads, \
         quota {max}; {n} more bytes needed. Unpin or delete blobs \
         (DELETE /blobs/{{digest}}) or raise --max-bytes",
        index.used, index.reserved
    ))
}

/// Index a blob just stored; one stored before under another URL keeps its
/// entry and takes the misses of this one.
fn index_blob(index: &mut Index, digest: &str, size: u64, misses: u64) {
    match index.blobs.get_mut(digest) {
        Some(meta) => meta.misses = misses,
        None => {
            index.used += size;
            index.blobs.insert(
                digest.to_string(),
                BlobMeta {
                    size,
                    last_access: now_unix(),
                    hits: 0,
                    misses,
                    dirty: false,
                },
            );
        }
    }
}

impl Store {
    /// Open the store under `data_dir`: sweep temp files a crash left
    /// behind, load the index and drop rows whose file is gone.
    /// `allow_private_origins` is [`crate::Options::allow_private_origins`].
    pub fn open(
        data_dir: &Path,
        db: Arc<Db>,
        max_bytes: Option<u64>,
        fetch: FetchConfig,
        allow_private_origins: bool,
    ) -> Result<Store, Error> {
        let blobs = data_dir.join("blobs").join("sha256");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        sweep(&tmp)?;
        let index = load_index(&db, &blobs)?;
        let origins = Policy {
            allow_private: allow_private_origins,
        };
        let client = origin_client(&fetch, origins)?;
        Ok(Store {
            data_dir: data_dir.to_path_buf(),
            db,
            index: Mutex::new(index),
            downloads: Mutex::new(HashMap::new()),
            max_bytes,
            metrics: Metrics::default(),
            slots: Semaphore::new(fetch.max_downloads.max(1)),
            client,
            origins,
            fetch,
            upstream: None,
            tmp_seq: AtomicU64::new(0),
        })
    }

    /// Fetch from the withcache at `url` instead of the origins (`None`
    /// keeps the origins). The URL must be http(s) with a host.
    pub fn with_upstream(mut self, url: Option<&str>) -> Result<Store, Error> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(self);
        };
        bty_proto::text::validate_http_url("upstream", url).map_err(|e| {
            Error::Config(format!(
                "{e}; set it to the base URL of another withcache, e.g. http://central:3000"
            ))
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(self.fetch.connect_timeout)
            .user_agent(concat!("withcache/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("building the upstream HTTP client: {e}")))?;
        self.upstream = Some(Upstream {
            base: url.trim_end_matches('/').to_string(),
            client,
        });
        Ok(self)
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The path of a blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.data_dir.join("blobs").join("sha256").join(digest)
    }

    /// A fresh temp file path for a download.
    pub(crate) fn temp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.data_dir
            .join("tmp")
            .join(format!("{}-{n}.part", std::process::id()))
    }

    /// The cached blob for `src`, if any.
    pub fn lookup(&self, src: &str) -> Option<Hit> {
        let index = lock(&self.index);
        let digest = index.sources.get(src)?;
        let meta = index.blobs.get(digest)?;
        Some(Hit {
            digest: digest.clone(),
            size: meta.size,
            path: self.blob_path(digest),
        })
    }

    /// Count a GET hit (kept in memory; flushed by [`Store::flush_access`]).
    pub fn touch(&self, digest: &str) {
        let mut index = lock(&self.index);
        if let Some(meta) = index.blobs.get_mut(digest) {
            meta.last_access = now_unix();
            meta.hits += 1;
            meta.dirty = true;
        }
        self.metrics.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Write hit counters and access times to the database.
    pub fn flush_access(&self) -> Result<(), Error> {
        let rows: Vec<(String, u64, u64)> = {
            let mut index = lock(&self.index);
            index
                .blobs
                .iter_mut()
                .filter(|(_, m)| m.dirty)
                .map(|(d, m)| {
                    m.dirty = false;
                    (d.clone(), m.last_access, m.hits)
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        self.db.flush_access(&rows)
    }

    /// Bytes of stored blobs, bytes reserved by downloads, and the quota.
    pub fn usage(&self) -> (u64, u64, Option<u64>) {
        let index = lock(&self.index);
        (index.used, index.reserved, self.max_bytes)
    }

    /// Every blob, by digest.
    pub fn blobs(&self) -> Vec<BlobInfo> {
        let index = lock(&self.index);
        let mut out: Vec<_> = index
            .blobs
            .iter()
            .map(|(d, m)| BlobInfo {
                digest: d.clone(),
                size: m.size,
                hits: m.hits,
                last_access: m.last_access,
                misses: m.misses,
                sources: index
                    .sources
                    .iter()
                    .filter(|(_, v)| *v == d)
                    .map(|(k, _)| k.clone())
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out
    }

    /// Reserve `n` bytes of quota for a download, evicting least recently
    /// used unpinned blobs if needed.
    pub fn reserve(&self, n: u64) -> Result<(), Error> {
        let Some(max) = self.max_bytes else {
            lock(&self.index).reserved += n;
            return Ok(());
        };
        if n > max {
            return Err(Error::Full(format!(
                "the download needs {n} bytes but the cache quota (--max-bytes) is {max} bytes; \
                 raise --max-bytes"
            )));
        }
        if self.reserve_in_room(n, max) {
            return Ok(());
        }
        let pinned: HashSet<String> = self.db.pinned_digests()?.into_iter().collect();
        let mut index = lock(&self.index);
        while index.used + index.reserved + n > max {
            let victim = lru_unpinned(&index, &pinned)
                .ok_or_else(|| cache_full(&index, pinned.len(), n, max))?;
            self.evict(&mut index, &victim)?;
        }
        index.reserved += n;
        Ok(())
    }

    /// The common case: it fits, no eviction, no database query.
    fn reserve_in_room(&self, n: u64, max: u64) -> bool {
        let mut index = lock(&self.index);
        let fits = index.used + index.reserved + n <= max;
        if fits {
            index.reserved += n;
        }
        fits
    }

    /// Evict `victim` to make room for a download.
    fn evict(&self, index: &mut Index, victim: &str) -> Result<(), Error> {
        self.remove_locked(index, victim)?;
        self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(digest = %victim, "evicted to make room");
        let _ = self.db.event(
            "blob.evicted",
            victim,
            "system",
            None,
            "evicted (least recently used) to make room for a download",
        );
        Ok(())
    }

    /// Give back reserved quota.
    pub fn release(&self, n: u64) {
        let mut index = lock(&self.index);
        index.reserved = index.reserved.saturating_sub(n);
    }

    fn remove_locked(&self, index: &mut Index, digest: &str) -> Result<bool, Error> {
        let Some(meta) = index.blobs.remove(digest) else {
            return Ok(false);
        };
        index.used = index.used.saturating_sub(meta.size);
        index.sources.retain(|_, d| d != digest);
        self.db.delete_blob(digest)?;
        let path = self.blob_path(digest);
        // Clients being served keep reading their open descriptor.
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(&path, e));
            }
        }
        Ok(true)
    }

    /// Delete a blob (and the source mappings naming it).
    pub fn delete_blob(&self, digest: &str) -> Result<bool, Error> {
        let mut index = lock(&self.index);
        self.remove_locked(&mut index, digest)
    }

    /// Forget that `src` is cached (the blob stays if other sources use it
    /// and is deleted otherwise).
    pub fn forget_source(&self, src: &str) -> Result<(), Error> {
        let mut index = lock(&self.index);
        if let Some(digest) = index.sources.remove(src) {
            self.db.delete_source(src)?;
            if !index.sources.values().any(|d| *d == digest) {
                self.remove_locked(&mut index, &digest)?;
            }
        }
        Ok(())
    }

    /// Move a verified temp file into place and index it. `reserved` is the
    /// quota the download held; it becomes `size` bytes of use.
    pub(crate) fn commit(
        &self,
        src: &str,
        temp: &Path,
        digest: &str,
        size: u64,
        reserved: u64,
    ) -> Result<(), Error> {
        let dest = self.blob_path(digest);
        let mut index = lock(&self.index);
        if !index.blobs.contains_key(digest) {
            std::fs::rename(temp, &dest).map_err(|e| Error::io(&dest, e))?;
        } else {
            // Same bytes already stored under another URL.
            let _ = std::fs::remove_file(temp);
        }
        index.reserved = index.reserved.saturating_sub(reserved);
        // The row takes over the misses `src` collected before.
        let misses = self.db.add_blob(src, digest, size)?;
        index_blob(&mut index, digest, size, misses);
        index.sources.insert(src.to_string(), digest.to_string());
        Ok(())
    }

    /// The download of `src` in progress, if any.
    pub fn download(&self, src: &str) -> Option<Arc<Download>> {
        lock(&self.downloads).get(src).cloned()
    }

    /// Every download in progress.
    pub fn downloads(&self) -> Vec<Arc<Download>> {
        lock(&self.downloads).values().cloned().collect()
    }

    /// Join the download of `src`, or register a new one if none is
    /// running (single flight: one origin fetch per URL however many
    /// clients ask); `true` = registered now, and the caller starts it
    /// (`fetch::start`). `None` if `src` is cached after all (a download
    /// finished just now).
    pub fn join_or_register(
        &self,
        src: &str,
        expected_sha: Option<String>,
        expected_size: Option<u64>,
    ) -> Option<(Arc<Download>, bool)> {
        let mut downloads = lock(&self.downloads);
        if let Some(d) = downloads.get(src) {
            return Some((d.clone(), false));
        }
        // A finished download indexes its blob before leaving this map, so
        // checking here, under the map's lock, cannot miss it.
        if self.lookup(src).is_some() {
            return None;
        }
        let dl = Arc::new(queued(src, expected_sha, expected_size));
        downloads.insert(src.to_string(), dl.clone());
        self.metrics
            .downloads_started
            .fetch_add(1, Ordering::Relaxed);
        Some((dl, true))
    }

    /// Called by the downloader when it is done either way. The blob (if
    /// any) is indexed before this, so no request falls in between.
    pub(crate) fn finish(&self, src: &str) {
        lock(&self.downloads).remove(src);
    }
}
