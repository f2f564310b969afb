//! The image catalog: a static TOML file and/or withcache's `GET /catalog`.
//!
//! Lookups read an in-memory snapshot (an `Arc` behind a lock held for a
//! pointer copy), so the PXE and plan paths never wait on the network or
//! the file system. A background task re-reads the file when its mtime
//! changes and re-polls withcache every `[withcache] refresh_secs`; a failed
//! poll keeps the last good entries and records "withcache unreachable".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bty_proto::catalog::{CatalogEntry, CatalogFile};
use bty_proto::ImageFormat;
use serde::{Deserialize, Serialize};

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[images] catalog`.
    Static,
    /// withcache's catalog.
    Withcache,
}

/// One usable catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// The entry as read.
    #[serde(flatten)]
    pub entry: CatalogEntry,
    /// Resolved format (the entry's, or guessed from the src file name).
    pub resolved_format: ImageFormat,
    /// The URL the agent downloads: withcache's blob URL when withcache is
    /// configured, the origin otherwise.
    pub url: String,
    /// Where it came from.
    pub source: Source,
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
    withcache: Option<String>,
    client: reqwest::Client,
    snap: RwLock<Arc<Snapshot>>,
    state: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct RefreshState {
    file_mtime: Option<SystemTime>,
    static_images: Vec<Image>,
    static_status: Option<SourceStatus>,
    wc_images: Vec<Image>,
    wc_status: Option<SourceStatus>,
}

/// withcache answers either `{"entries": [...]}` or a bare list.
#[derive(Deserialize)]
#[serde(untagged)]
enum WithcacheCatalog {
    Wrapped { entries: Vec<serde_json::Value> },
    Bare(Vec<serde_json::Value>),
}

impl Catalog {
    /// A catalog over these sources; nothing is read until [`Catalog::refresh`].
    pub fn new(file: Option<PathBuf>, withcache: Option<String>) -> Catalog {
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
        };
        Catalog {
            file,
            withcache,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            snap: RwLock::new(Arc::new(snap)),
            state: Default::default(),
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
        self.withcache.as_deref()
    }

    /// Read the static file (if changed, or `force`) and poll withcache
    /// (when `poll_withcache`), then publish a new snapshot.
    pub async fn refresh(&self, force: bool, poll_withcache: bool) {
        let mut st = self.state.lock().await;
        if let Some(path) = &self.file {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if force || mtime != st.file_mtime || st.static_status.is_none() {
                st.file_mtime = mtime;
                match read_static(path, self.withcache.as_deref()) {
                    Ok((images, skipped)) => {
                        st.static_status = Some(SourceStatus::Ok {
                            at: crate::db::now(),
                            entries: images.len(),
                            skipped,
                        });
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
        if let (Some(url), true) = (&self.withcache, poll_withcache) {
            match self.fetch_withcache(url).await {
                Ok((images, skipped)) => {
                    st.wc_status = Some(SourceStatus::Ok {
                        at: crate::db::now(),
                        entries: images.len(),
                        skipped,
                    });
                    st.wc_images = images;
                }
                Err(e) => {
                    let since = match &st.wc_status {
                        Some(SourceStatus::Unreachable { since, .. }) => since.clone(),
                        _ => {
                            tracing::warn!("withcache unreachable: {e:#}");
                            crate::db::now()
                        }
                    };
                    st.wc_status = Some(SourceStatus::Unreachable {
                        since,
                        error: format!("{e:#}"),
                        entries: st.wc_images.len(),
                    });
                }
            }
        }
        // withcache first, so the operator's local file wins a name clash.
        let mut images = BTreeMap::new();
        for img in st.wc_images.iter().chain(st.static_images.iter()) {
            images.insert(img.entry.name.clone(), img.clone());
        }
        let snap = Snapshot {
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
        };
        match self.snap.write() {
            Ok(mut g) => *g = Arc::new(snap),
            Err(e) => *e.into_inner() = Arc::new(snap),
        }
    }

    async fn fetch_withcache(&self, base: &str) -> anyhow::Result<(Vec<Image>, usize)> {
        let url = format!("{}/catalog", base.trim_end_matches('/'));
        let resp = self
            .client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            anyhow::bail!("GET {url}: HTTP {status}");
        }
        let body: WithcacheCatalog = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: not a catalog"))?;
        let raw = match body {
            WithcacheCatalog::Wrapped { entries } | WithcacheCatalog::Bare(entries) => entries,
        };
        let total = raw.len();
        let entries: Vec<CatalogEntry> = raw
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let parse_skipped = total - entries.len();
        let (images, skipped) = usable(entries, Source::Withcache, Some(base));
        Ok((images, skipped + parse_skipped))
    }

    /// Spawn the background refresher; it stops when `stop` resolves.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        refresh_secs: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let cat = self.clone();
        tokio::spawn(async move {
            let wc_every = Duration::from_secs(refresh_secs.max(1));
            let mut last_wc = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
                let poll = last_wc.elapsed() >= wc_every;
                if poll {
                    last_wc = tokio::time::Instant::now();
                }
                cat.refresh(false, poll).await;
            }
        });
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
pub fn to_toml(snap: &Snapshot) -> String {
    let file = CatalogFile {
        version: 1,
        images: snap
            .images
            .values()
            .map(|i| CatalogEntry {
                src: i.url.clone(),
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
        let c = Catalog::new(Some(p.clone()), None);
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
        let c = Catalog::new(None, Some("http://127.0.0.1:9".into()));
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
        };
        let t = to_toml(&snap);
        let back: CatalogFile = toml::from_str(&t).unwrap();
        assert_eq!(
            back.images[0].src,
            bty_proto::catalog::blob_url("http://wc:3000", "https://o/a.img.gz")
        );
        assert_eq!(back.images[0].format, Some(ImageFormat::Gz));
    }
}
