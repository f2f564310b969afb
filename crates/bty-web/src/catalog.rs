//! The image catalog: a static TOML file and/or withcache's catalog.
//!
//! Lookups read an in-memory snapshot (an `Arc` behind a lock held for a
//! pointer copy), so the PXE and plan paths never wait on the network or
//! the file system. A background task re-reads the file when its mtime
//! changes and re-polls withcache every `[withcache] refresh_secs` (every
//! 2 s while withcache is downloading an entry); a failed poll keeps the
//! last good entries and records "withcache unreachable".
//!
//! With a service token (`[withcache] token`) the static file's entries are
//! also registered in withcache's catalog each time the file is (re)read,
//! so withcache serves them (read-while-fetch) instead of answering a miss:
//! an entry withcache already has for the same src is left alone, and a
//! withcache entry of the same name for another src is reported in
//! [`Snapshot::problems`], never overwritten.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use bty_proto::catalog::{CatalogEntry, CatalogFile};
use bty_proto::ImageFormat;
use serde::Serialize;

use crate::sites::Sites;
use crate::withcache::{Client, WcEntry, WcError};

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[images] catalog`.
    Static,
    /// withcache's catalog.
    Withcache,
}

/// What withcache says about an entry's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheState {
    /// `cached`, `downloading`, `queued` or `absent` (not fetched yet).
    pub state: String,
    /// Bytes downloaded so far.
    pub written: Option<u64>,
    /// Expected length, when known.
    pub total: Option<u64>,
}

/// One usable catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// The entry as read. A static entry without sha256 or size gets
    /// withcache's measured ones once withcache has cached its src.
    #[serde(flatten)]
    pub entry: CatalogEntry,
    /// Resolved format (the entry's, or guessed from the src file name).
    pub resolved_format: ImageFormat,
    /// The URL the agent downloads: withcache's blob URL when withcache is
    /// configured, the origin otherwise.
    pub url: String,
    /// Where it came from.
    pub source: Source,
    /// withcache's state of the src's bytes, when withcache said.
    pub cache: Option<CacheState>,
}

impl Image {
    /// This image as a target at `ip` downloads it: through the withcache
    /// of the site `ip` falls in ([`crate::sites`]) when the image goes
    /// through withcache at all (its URL is a blob URL) and `ip` is in a
    /// site; else unchanged. `ip` is the text form a client address is
    /// stored in; one that does not parse is in no site.
    pub fn at(&self, sites: &Sites, ip: &str) -> Cow<'_, Image> {
        match self.site_url(sites, ip) {
            Some(url) => Cow::Owned(Image {
                url,
                ..self.clone()
            }),
            None => Cow::Borrowed(self),
        }
    }

    /// The URL a target at `ip` downloads this image from (see [`Image::at`]).
    pub fn url_at(&self, sites: &Sites, ip: &str) -> String {
        self.site_url(sites, ip).unwrap_or_else(|| self.url.clone())
    }

    fn site_url(&self, sites: &Sites, ip: &str) -> Option<String> {
        if self.url == self.entry.src {
            // Straight from the origin: no withcache is in use for it.
            return None;
        }
        let ip: std::net::IpAddr = ip.trim().parse().ok()?;
        let wc = sites.withcache_for(ip)?;
        Some(bty_proto::catalog::blob_url(wc, &self.entry.src))
    }

    /// Both its sha256 and its size are known (given, or measured by
    /// withcache): only such an image is flashed, so every flash plan lets
    /// the agent check the bytes it writes.
    pub fn measured(&self) -> bool {
        self.entry.sha256.is_some() && self.entry.size.is_some()
    }
}

/// State of one catalog source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SourceStatus {
    /// Not configured.
    Off,
    /// Configured, not read yet.
    Pending,
    /// Read fine.
    Ok {
        /// When.
        at: String,
        /// Entries taken.
        entries: usize,
        /// Entries skipped as invalid.
        skipped: usize,
    },
    /// The last read failed; the last good entries are still used.
    Unreachable {
        /// Since when it fails.
        since: String,
        /// The last error.
        error: String,
        /// Entries still served from the last good read.
        entries: usize,
    },
}

/// An immutable view of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Entries by name.
    pub images: BTreeMap<String, Image>,
    /// The static file's state.
    pub static_file: SourceStatus,
    /// withcache's state.
    pub withcache: SourceStatus,
    /// Catalog problems an operator should fix: a refused service token, a
    /// static entry withcache cannot take.
    pub problems: Vec<String>,
    /// The `[[sites]]`, so that a decision made on this snapshot hands a
    /// target its site's withcache URL ([`Image::at`]).
    #[serde(skip)]
    pub sites: Arc<Sites>,
}

impl Snapshot {
    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }

    /// One line describing where entries come from, for error messages.
    pub fn describe_sources(&self, cfg_file: Option<&PathBuf>, wc: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(p) = cfg_file {
            parts.push(format!(
                "static file {} ({})",
                p.display(),
                describe(&self.static_file)
            ));
        }
        if let Some(u) = wc {
            parts.push(format!("withcache {u} ({})", describe(&self.withcache)));
        }
        if parts.is_empty() {
            "no catalog is configured: set [images] catalog or [withcache] url".into()
        } else {
            format!("catalog sources: {}", parts.join("; "))
        }
    }
}

fn describe(s: &SourceStatus) -> String {
    match s {
        SourceStatus::Off => "off".into(),
        SourceStatus::Pending => "not read yet".into(),
        SourceStatus::Ok { entries, .. } => format!("{entries} entries"),
        SourceStatus::Unreachable { error, entries, .. } => {
            format!("unreachable: {error}; {entries} entries from the last good read")
        }
    }
}

/// The catalog and how to refresh it.
pub struct Catalog {
    file: Option<PathBuf>,
    withcache: Option<Client>,
    snap: RwLock<Arc<Snapshot>>,
    state: tokio::sync::Mutex<RefreshState>,
    sites: Arc<Sites>,
}

#[derive(Default)]
struct RefreshState {
    file_mtime: Option<SystemTime>,
    static_images: Vec<Image>,
    static_status: Option<SourceStatus>,
    /// withcache's entries as last read (all of them, with their state).
    wc_entries: Vec<WcEntry>,
    wc_images: Vec<Image>,
    wc_status: Option<SourceStatus>,
    /// withcache refused the token (the open catalog was read instead).
    token_problem: Option<String>,
    /// Static entries withcache refused to take: (name, its reason). Not
    /// tried again until the file changes or a forced refresh.
    register_refused: Vec<(String, String)>,
    /// When the last registration started.
    register_attempt: Option<std::time::Instant>,
}

impl Catalog {
    /// A catalog over these sources; nothing is read until
    /// [`Catalog::refresh`]. With `token`, withcache's full catalog is read
    /// and the static entries are registered there.
    pub fn new(
        file: Option<PathBuf>,
        withcache: Option<String>,
        token: Option<bty_auth::ServiceToken>,
    ) -> Catalog {
        let snap = Snapshot {
            images: BTreeMap::new(),
            static_file: if file.is_some() {
                SourceStatus::Pending
            } else {
                SourceStatus::Off
            },
            withcache: if withcache.is_some() {
                SourceStatus::Pending
            } else {
                SourceStatus::Off
            },
            problems: Vec::new(),
            sites: Arc::default(),
        };
        Catalog {
            file,
            withcache: withcache.map(|u| Client::new(&u, token)),
            snap: RwLock::new(Arc::new(snap)),
            state: Default::default(),
            sites: Arc::default(),
        }
    }

    /// This catalog with `sites` in every snapshot it makes (call before
    /// the first refresh).
    pub fn with_sites(self, sites: Sites) -> Catalog {
        let sites = Arc::new(sites);
        let mut snap = (*self.snapshot()).clone();
        snap.sites = sites.clone();
        Catalog {
            snap: RwLock::new(Arc::new(snap)),
            sites,
            ..self
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The static catalog file, when configured.
    pub fn file(&self) -> Option<&PathBuf> {
        self.file.as_ref()
    }

    /// The withcache URL, when configured.
    pub fn withcache_url(&self) -> Option<&str> {
        self.withcache.as_ref().map(Client::base)
    }

    /// The withcache client, when configured.
    pub fn withcache(&self) -> Option<&Client> {
        self.withcache.as_ref()
    }

    /// Read the static file (if changed, or `force`) and, when
    /// `poll_withcache`, poll withcache and register static entries it
    /// lacks; then publish a new snapshot.
    pub async fn refresh(&self, force: bool, poll_withcache: bool) {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.file {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if force || mtime != st.file_mtime || st.static_status.is_none() {
                st.file_mtime = mtime;
                match read_static(path, self.withcache_url()) {
                    Ok((images, skipped)) => {
                        st.static_status = Some(SourceStatus::Ok {
                            at: crate::db::now(),
                            entries: images.len(),
                            skipped,
                        });
                        if st.static_images != images || force {
                            // A new file: try everything again, now.
                            st.register_refused.clear();
                            st.register_attempt = None;
                        }
                        st.static_images = images;
                    }
                    Err(e) => {
                        tracing::warn!("catalog file {}: {e:#}", path.display());
                        st.static_status = Some(SourceStatus::Unreachable {
                            since: crate::db::now(),
                            error: format!("{e:#}"),
                            entries: st.static_images.len(),
                        });
                    }
                }
            }
        }
        if let (Some(wc), true) = (&self.withcache, poll_withcache) {
            if self.poll(wc, &mut st).await && self.must_register(&st) {
                st.register_attempt = Some(std::time::Instant::now());
                self.register_static(wc, &mut st).await;
            }
        }
        let snap = self.build(&st);
        match self.snap.write() {
            Ok(mut g) => *g = Arc::new(snap),
            Err(e) => *e.into_inner() = Arc::new(snap),
        }
    }

    /// Static entries are to be put into withcache: there is a token
    /// withcache accepts and a static entry to add or update there.
    fn must_register(&self, st: &RefreshState) -> bool {
        self.withcache.as_ref().is_some_and(Client::has_token)
            && st.token_problem.is_none()
            && st
                .static_images
                .iter()
                .any(|i| matches!(registration(st, &i.entry), Reg::Add | Reg::Update(_)))
    }

    /// withcache is to be read before `refresh_secs` is up: a download is
    /// running (its end brings the measured sha256 and size that plans
    /// carry), or a registration is waiting (the file changed, withcache
    /// lost an entry, or the last try did not finish; at most every 10 s).
    /// Not while withcache does not answer: the regular poll retries that.
    async fn poll_soon(&self) -> bool {
        let st = self.state.lock().await;
        if matches!(st.wc_status, Some(SourceStatus::Unreachable { .. })) {
            return false;
        }
        let downloading = st
            .wc_entries
            .iter()
            .any(|w| matches!(w.state.as_str(), "downloading" | "queued"));
        let register = self.must_register(&st)
            && st
                .register_attempt
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
        downloading || register
    }

    /// Read withcache's catalog into `st`; false when it could not be read.
    async fn poll(&self, wc: &Client, st: &mut RefreshState) -> bool {
        let mut result = wc.entries().await;
        if let Err(e @ WcError::Refused { .. }) = &result {
            // A wrong token must not take the cached images away: read the
            // open catalog, and say what is wrong.
            if st.token_problem.is_none() {
                tracing::warn!("{e}");
            }
            st.token_problem = Some(e.to_string());
            result = wc.open_entries().await;
        } else if result.is_ok() {
            st.token_problem = None;
        }
        match result {
            Ok((entries, parse_skipped)) => {
                let (images, skipped) = usable(
                    entries.iter().map(|w| w.entry.clone()).collect(),
                    Source::Withcache,
                    Some(wc.base()),
                );
                st.wc_status = Some(SourceStatus::Ok {
                    at: crate::db::now(),
                    entries: images.len(),
                    skipped: skipped + parse_skipped,
                });
                st.wc_entries = entries;
                st.wc_images = images;
                true
            }
            Err(e) => {
                let since = match &st.wc_status {
                    Some(SourceStatus::Unreachable { since, .. }) => since.clone(),
                    _ => {
                        tracing::warn!("{e}");
                        crate::db::now()
                    }
                };
                st.wc_status = Some(SourceStatus::Unreachable {
                    since,
                    error: e.to_string(),
                    entries: st.wc_images.len(),
                });
                false
            }
        }
    }

    /// Put every static entry whose src withcache does not know into
    /// withcache's catalog: added, or, when withcache's entry of that name
    /// is one bty-web put there (the file's src changed), updated. A name
    /// withcache got from someone else is left alone (see
    /// [`Catalog::build`] for the report); withcache unreachable leaves
    /// the job for the next poll.
    async fn register_static(&self, wc: &Client, st: &mut RefreshState) {
        let mut added = Vec::new();
        // (entry, the src withcache's entry of that name had, if any)
        let todo: Vec<(Image, Option<String>)> = st
            .static_images
            .iter()
            .filter_map(|i| match registration(st, &i.entry) {
                Reg::Add => Some((i.clone(), None)),
                Reg::Update(w) => Some((i.clone(), Some(w.entry.src.clone()))),
                Reg::Done | Reg::Conflict(_) => None,
            })
            .collect();
        for (img, old_src) in todo {
            let entry = CatalogEntry {
                format: Some(img.resolved_format),
                ..img.entry.clone()
            };
            let done = match &old_src {
                Some(old) => {
                    tracing::info!(
                        "static entry {:?} now names {}; updating withcache's entry (was {old})",
                        entry.name,
                        entry.src
                    );
                    wc.put(&entry).await
                }
                None => wc.add(&entry, false).await,
            };
            match done {
                Ok(()) => added.push(entry.name),
                Err(WcError::Rejected { message, .. }) => {
                    st.register_refused.push((entry.name, message));
                }
                Err(err) => {
                    // Unreachable or failing: the next poll tries again.
                    tracing::warn!("registering the static catalog in withcache: {err}");
                    break;
                }
            }
        }
        if !added.is_empty() {
            tracing::info!(
                "registered {} static catalog entries in withcache: {}",
                added.len(),
                added.join(", ")
            );
            self.poll(wc, st).await;
        }
    }

    /// The snapshot of `st`: withcache's entries, then the static file's
    /// (the operator's local file wins a name clash), with withcache's
    /// cache state attached by src.
    fn build(&self, st: &RefreshState) -> Snapshot {
        let mut images = BTreeMap::new();
        for img in st.wc_images.iter().chain(st.static_images.iter()) {
            images.insert(img.entry.name.clone(), img.clone());
        }
        for img in images.values_mut() {
            let Some(w) = st.wc_entries.iter().find(|w| w.entry.src == img.entry.src) else {
                continue;
            };
            if w.state == "cached" {
                // withcache measured these bytes: what the agent will get.
                img.entry.sha256 = img.entry.sha256.take().or(w.entry.sha256.clone());
                img.entry.size = img.entry.size.or(w.entry.size);
            }
            img.cache = Some(CacheState {
                state: w.state.clone(),
                written: w.written,
                total: w.total,
            });
        }
        let mut problems: Vec<String> = st.token_problem.iter().cloned().collect();
        if self.withcache.as_ref().is_some_and(Client::has_token) {
            for img in &st.static_images {
                let e = &img.entry;
                if let Reg::Conflict(w) = registration(st, e) {
                    problems.push(format!(
                        "static entry {:?} ({}) is not in withcache: withcache has an entry of \
                         that name for another src ({}), added there by {}, and leaves it alone. \
                         Rename one of them; until then withcache answers a miss for {}",
                        e.name,
                        e.src,
                        w.entry.src,
                        w.added_by.as_deref().unwrap_or("someone else"),
                        e.src
                    ));
                }
            }
        }
        problems.extend(st.register_refused.iter().map(|(name, why)| {
            format!("static entry {name:?} could not be registered in withcache: {why}")
        }));
        Snapshot {
            images,
            static_file: st.static_status.clone().unwrap_or(if self.file.is_some() {
                SourceStatus::Pending
            } else {
                SourceStatus::Off
            }),
            withcache: st.wc_status.clone().unwrap_or(if self.withcache.is_some() {
                SourceStatus::Pending
            } else {
                SourceStatus::Off
            }),
            problems,
            sites: self.sites.clone(),
        }
    }

    /// Spawn the background refresher; it stops when `stop` resolves.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        refresh_secs: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let cat = self.clone();
        tokio::spawn(async move {
            let wc_every = std::time::Duration::from_secs(refresh_secs.max(1));
            let mut last_wc = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
                let poll = last_wc.elapsed() >= wc_every || cat.poll_soon().await;
                if poll {
                    last_wc = tokio::time::Instant::now();
                }
                cat.refresh(false, poll).await;
            }
        });
    }
}

/// What registering a static entry in withcache takes.
enum Reg<'a> {
    /// Nothing: withcache knows its src (under any name), or refused it.
    Done,
    /// Add it.
    Add,
    /// Replace withcache's entry of that name, which bty-web put there.
    Update(&'a WcEntry),
    /// withcache's entry of that name is someone else's, for another src.
    Conflict(&'a WcEntry),
}

fn registration<'a>(st: &'a RefreshState, e: &CatalogEntry) -> Reg<'a> {
    if st.wc_entries.iter().any(|w| w.entry.src == e.src) {
        return Reg::Done;
    }
    let refused = st.register_refused.iter().any(|(n, _)| *n == e.name);
    match st.wc_entries.iter().find(|w| w.entry.name == e.name) {
        Some(w) if w.added_by.as_deref() != Some("bty-web") => Reg::Conflict(w),
        _ if refused => Reg::Done,
        Some(w) => Reg::Update(w),
        None => Reg::Add,
    }
}

fn read_static(path: &PathBuf, withcache: Option<&str>) -> anyhow::Result<(Vec<Image>, usize)> {
    let text = std::fs::read_to_string(path).context("reading")?;
    let file: CatalogFile = toml::from_str(&text).context("parsing")?;
    if file.version != 1 {
        anyhow::bail!("version = {} is not supported (expected 1)", file.version);
    }
    Ok(usable(file.images, Source::Static, withcache))
}

/// Keep entries that can be flashed; count the others.
fn usable(
    entries: Vec<CatalogEntry>,
    source: Source,
    withcache: Option<&str>,
) -> (Vec<Image>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for e in entries {
        match check_entry(&e) {
            Ok(format) => {
                let url = match withcache {
                    Some(wc) => bty_proto::catalog::blob_url(wc, &e.src),
                    None => e.src.clone(),
                };
                out.push(Image {
                    entry: e,
                    resolved_format: format,
                    url,
                    source,
                    cache: None,
                });
            }
            Err(why) => {
                tracing::debug!("catalog entry {:?} skipped: {why}", e.name);
                skipped += 1;
            }
        }
    }
    (out, skipped)
}

fn check_entry(e: &CatalogEntry) -> Result<ImageFormat, String> {
    bty_proto::text::validate_image_name(&e.name).map_err(|x| x.to_string())?;
    bty_proto::text::validate_http_url("src", &e.src).map_err(|x| x.to_string())?;
    if let Some(sha) = &e.sha256 {
        bty_proto::text::validate_sha256("sha256", sha).map_err(|x| x.to_string())?;
    }
    e.format
        .or_else(|| ImageFormat::from_file_name(&e.src))
        .ok_or_else(|| "no format and none can be guessed from src".to_string())
}

/// `GET /catalog.toml`: the catalog for clients, with withcache URLs.
/// `ip` is the requester's address: its site's withcache URLs (see
/// [`Image::at`]).
pub fn to_toml(snap: &Snapshot, ip: &str) -> String {
    let file = CatalogFile {
        version: 1,
        images: snap
            .images
            .values()
            .map(|i| CatalogEntry {
                src: i.url_at(&snap.sites, ip),
                format: Some(i.resolved_format),
                ..i.entry.clone()
            })
            .collect(),
    };
    toml::to_string(&file).unwrap_or_else(|_| "version = 1\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_file_is_read_and_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.toml");
        std::fs::write(
            &p,
            "version = 1\n[[images]]\nname = \"a\"\nsrc = \"https://o/a.img.zst\"\n\
             [[images]]\nname = \"bad name!\"\nsrc = \"https://o/b.img\"\n\
             [[images]]\nname = \"noformat\"\nsrc = \"https://o/b.iso\"\n",
        )
        .unwrap();
        let c = Catalog::new(Some(p.clone()), None, None);
        c.refresh(false, false).await;
        let s = c.snapshot();
        assert_eq!(s.images.len(), 1);
        let a = s.get("a").unwrap();
        assert_eq!(a.url, "https://o/a.img.zst");
        assert_eq!(a.resolved_format, ImageFormat::Zst);
        assert!(matches!(
            s.static_file,
            SourceStatus::Ok {
                entries: 1,
                skipped: 2,
                ..
            }
        ));
        std::fs::write(
            &p,
            "version = 1\n[[images]]\nname = \"b\"\nsrc = \"https://o/b.img\"\n",
        )
        .unwrap();
        c.refresh(true, false).await;
        assert!(c.snapshot().get("b").is_some());
        assert!(c.snapshot().get("a").is_none());
        std::fs::write(&p, "not toml [").unwrap();
        c.refresh(true, false).await;
        let s = c.snapshot();
        assert!(s.get("b").is_some(), "last good entries kept");
        assert!(matches!(s.static_file, SourceStatus::Unreachable { .. }));
    }

    #[tokio::test]
    async fn withcache_unreachable_is_a_state_not_a_crash() {
        // Port 9 on loopback: nothing listens there.
        let c = Catalog::new(None, Some("http://127.0.0.1:9".into()), None);
        c.refresh(true, true).await;
        let s = c.snapshot();
        assert!(s.images.is_empty());
        match &s.withcache {
            SourceStatus::Unreachable { error, .. } => assert!(error.contains("/catalog")),
            other => panic!("{other:?}"),
        }
        assert!(s
            .describe_sources(None, c.withcache_url())
            .contains("unreachable"));
    }

    #[test]
    fn catalog_toml_points_at_withcache() {
        let (images, _) = usable(
            vec![CatalogEntry {
                name: "a".into(),
                src: "https://o/a.img.gz".into(),
                sha256: None,
                size: Some(3),
                format: None,
                arch: None,
                description: None,
            }],
            Source::Static,
            Some("http://wc:3000"),
        );
        let snap = Snapshot {
            images: images
                .into_iter()
                .map(|i| (i.entry.name.clone(), i))
                .collect(),
            static_file: SourceStatus::Off,
            withcache: SourceStatus::Off,
            problems: Vec::new(),
            sites: Arc::default(),
        };
        let t = to_toml(&snap, "127.0.0.1");
        let back: CatalogFile = toml::from_str(&t).unwrap();
        assert_eq!(
            back.images[0].src,
            bty_proto::catalog::blob_url("http://wc:3000", "https://o/a.img.gz")
        );
        assert_eq!(back.images[0].format, Some(ImageFormat::Gz));
    }
}
