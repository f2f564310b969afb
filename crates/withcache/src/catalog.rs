//! The catalog's rules, whoever asks (the JSON API, the UI, a client's
//! request for bytes): what makes an entry valid, adding, replacing and
//! deleting entries, starting their downloads, merging catalog files,
//! turning a miss into an entry. Every change is recorded as an event.
//!
//! Nothing here knows HTTP: callers say who they are with [`Who`] and get
//! [`Error`]s, whose `Invalid { field }` tells a form where the message
//! goes.

use std::net::IpAddr;
use std::sync::Arc;

use bty_proto::catalog::{CatalogEntry, CatalogFile, ImageFormat};
use bty_proto::text;
use serde::{Deserialize, Serialize};

use crate::db::{EntryRow, MissRow};
use crate::error::Error;
use crate::fetch;
use crate::origin::Refused;
use crate::store::{Download, Phase, Store};

/// Largest catalog file accepted by an import from a URL.
const MAX_CATALOG: usize = 4 << 20;

/// Who asks, for the event log: `operator`, `bty-web` or `client`, and
/// from where.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// `operator` (API or UI login), `bty-web` (service token), `client`
    /// (a request for bytes) or `system`.
    pub actor: &'a str,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

/// A catalog entry as a caller gives it (the API's JSON body; the UI's
/// form builds one). Unknown keys are refused so typos do not silently
/// drop data.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// The name (the API's PUT takes it from the path).
    pub name: Option<String>,
    /// The origin URL.
    pub src: String,
    /// The sha256 the bytes must have.
    pub sha256: Option<String>,
    /// The length the bytes must have.
    #[serde(alias = "size_bytes")]
    pub size: Option<u64>,
    /// `img`, `img.zst`, …; guessed from `src` when missing.
    pub format: Option<String>,
    /// The architecture.
    pub arch: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Never evicted.
    pub pinned: Option<bool>,
}

/// One entry with its cache state, for the admin list and the UI.
#[derive(Debug, Serialize)]
pub struct EntryState {
    /// The entry.
    #[serde(flatten)]
    pub row: EntryRow,
    /// `cached`, `downloading`, `queued` or `absent`.
    pub state: &'static str,
    /// Digest of the cached bytes.
    pub digest: Option<String>,
    /// Bytes downloaded so far.
    pub written: Option<u64>,
    /// Expected length.
    pub total: Option<u64>,
}

/// What asking for an entry's download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Its bytes are cached already.
    Cached {
        /// sha256 hex.
        digest: String,
        /// Length.
        size: u64,
    },
    /// A download finished just as it was asked for.
    CachedJustNow,
    /// A download runs: started now, or joined.
    Downloading {
        /// Started by this call (not joined).
        started: bool,
    },
}

/// Result of merging a catalog file.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    /// New names.
    pub added: Vec<String>,
    /// Names from an earlier import, changed.
    pub updated: Vec<String>,
    /// Names an operator added by hand; the file's version was ignored.
    pub kept_operator: Vec<String>,
    /// `{name, reason}` of every image refused.
    pub rejected: Vec<serde_json::Value>,
}

impl ImportReport {
    /// One line for the event log and the UI's notice.
    pub fn summary(&self) -> String {
        format!(
            "{} added, {} updated, {} operator entries kept, {} rejected",
            self.added.len(),
            self.updated.len(),
            self.kept_operator.len(),
            self.rejected.len()
        )
    }
}

/// The catalog over the store (and its database).
pub struct Catalog {
    store: Arc<Store>,
}

impl Catalog {
    /// The catalog of `store`.
    pub fn new(store: Arc<Store>) -> Catalog {
        Catalog { store }
    }

    /// Record an event; failures are logged, never fatal.
    pub fn event(&self, kind: &str, subject: &str, who: Who<'_>, summary: &str) {
        let ip = who.ip.map(|a| a.to_canonical().to_string());
        if let Err(e) = self
            .store
            .db()
            .event(kind, subject, who.actor, ip.as_deref(), summary)
        {
            tracing::warn!(error = %e, kind, "could not record event");
        }
    }

    /// An entry with the state of its bytes.
    pub fn state(&self, row: EntryRow) -> EntryState {
        if let Some(hit) = self.store.lookup(&row.entry.src) {
            return EntryState {
                row,
                state: "cached",
                digest: Some(hit.digest),
                written: Some(hit.size),
                total: Some(hit.size),
            };
        }
        if let Some(dl) = self.store.download(&row.entry.src) {
            let st = dl.snapshot();
            let state = match st.phase {
                Phase::Queued | Phase::Connecting => "queued",
                _ => "downloading",
            };
            return EntryState {
                row,
                state,
                digest: None,
                written: Some(st.written),
                total: st.total,
            };
        }
        EntryState {
            row,
            state: "absent",
            digest: None,
            written: None,
            total: None,
        }
    }

    /// Every entry with its state, by name.
    pub fn list(&self) -> Result<Vec<EntryState>, Error> {
        let rows = self.store.db().entries()?;
        Ok(rows.into_iter().map(|r| self.state(r)).collect())
    }

    /// One entry with its state.
    pub fn get(&self, name: &str) -> Result<EntryState, Error> {
        Ok(self.state(self.row(name)?))
    }

    fn row(&self, name: &str) -> Result<EntryRow, Error> {
        self.store
            .db()
            .entry(name)?
            .ok_or_else(|| Error::NotFound(format!("no catalog entry named {name:?}")))
    }

    /// The entries whose bytes are cached and verified, with the measured
    /// sha256 and size (what the fleet may use).
    pub fn cached(&self) -> Result<Vec<CatalogEntry>, Error> {
        let mut entries = Vec::new();
        for row in self.store.db().entries()? {
            if let Some(hit) = self.store.lookup(&row.entry.src) {
                let mut e = row.entry;
                e.sha256 = Some(hit.digest);
                e.size = Some(hit.size);
                entries.push(e);
            }
        }
        Ok(entries)
    }

    /// Refuse an origin withcache will not connect to (see `origin`),
    /// as an error on `field`: the entry is not stored and nothing is
    /// fetched.
    fn check_origin(&self, field: &'static str, src: &str) -> Result<(), Error> {
        if field == "src" && self.store.upstream.is_some() {
            // With an upstream this cache never connects to an entry's
            // src: the upstream does, under its own rule.
            return Ok(());
        }
        self.store
            .origins
            .check_new(src)
            .map_err(|r| Error::invalid(field, format!("{field}: {r}")))
    }

    /// Add a new entry; a taken name is a conflict.
    pub fn add(&self, row: &EntryRow, who: Who<'_>) -> Result<(), Error> {
        self.check_origin("src", &row.entry.src)?;
        if !self.store.db().insert_entry(row)? {
            return Err(Error::Conflict(format!(
                "a catalog entry named {:?} exists; PUT /catalog/entries/{} to change it",
                row.entry.name, row.entry.name
            )));
        }
        let summary = format!("added {}", row.entry.src);
        self.event("catalog.entry.added", &row.entry.name, who, &summary);
        Ok(())
    }

    /// Create or replace the entry `row` names; `true` = created.
    pub fn put(&self, row: &EntryRow, who: Who<'_>) -> Result<bool, Error> {
        self.check_origin("src", &row.entry.src)?;
        let name = &row.entry.name;
        let db = self.store.db();
        let created = match db.entry(name)? {
            Some(old) => {
                if old.entry.src != row.entry.src {
                    // The old URL's bytes stay cached for other entries/clients.
                    tracing::info!(name, "entry now points at a new origin");
                }
                db.update_entry(row)?;
                false
            }
            None => db.insert_entry(row)?,
        };
        let kind = if created {
            "catalog.entry.added"
        } else {
            "catalog.entry.updated"
        };
        self.event(kind, name, who, &format!("src {}", row.entry.src));
        Ok(created)
    }

    /// Delete an entry (its cached bytes stay until evicted or deleted).
    pub fn delete(&self, name: &str, who: Who<'_>, summary: &str) -> Result<(), Error> {
        if !self.store.db().delete_entry(name)? {
            return Err(Error::NotFound(format!("no catalog entry named {name:?}")));
        }
        self.event("catalog.entry.deleted", name, who, summary);
        Ok(())
    }

    /// Start (or join) the download of an entry; `force` drops the cached
    /// copy first.
    pub fn download(&self, name: &str, force: bool, who: Who<'_>) -> Result<Started, Error> {
        let row = self.row(name)?;
        let src = &row.entry.src;
        if force {
            self.store.forget_source(src)?;
        } else if let Some(hit) = self.store.lookup(src) {
            return Ok(Started::Cached {
                digest: hit.digest,
                size: hit.size,
            });
        }
        let Some((_, started)) =
            fetch::start(&self.store, src, row.entry.sha256.clone(), row.entry.size)
        else {
            return Ok(Started::CachedJustNow);
        };
        if started {
            let summary = format!("download of {src} requested");
            self.event("download.requested", name, who, &summary);
        }
        Ok(Started::Downloading { started })
    }

    /// If `src` is a catalog entry's origin, start (or join) its download
    /// for a client that asked for its bytes.
    pub fn download_for_client(
        &self,
        src: &str,
        who: Who<'_>,
    ) -> Result<Option<Arc<Download>>, Error> {
        let entries = self.store.db().entries_by_src(src)?;
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let sha = entries.iter().find_map(|e| e.entry.sha256.clone());
        let size = entries.iter().find_map(|e| e.entry.size);
        let Some((dl, started)) = fetch::start(&self.store, src, sha, size) else {
            // Cached a moment ago; the caller looks it up again.
            return Ok(None);
        };
        if started {
            self.event(
                "download.requested",
                &first.entry.name,
                who,
                "a client asked for a catalog entry that was not cached yet",
            );
        }
        Ok(Some(dl))
    }

    /// Merge a `version = 1` catalog (TOML or JSON): new names are added,
    /// names that came from an earlier import are updated, names an
    /// operator added are left alone, and nothing is ever deleted.
    pub fn import(&self, text_body: &str, from: &str, who: Who<'_>) -> Result<ImportReport, Error> {
        let file: CatalogFile = toml::from_str(text_body)
            .or_else(|_| serde_json::from_str(text_body))
            .map_err(|e| Error::BadRequest(format!("not a catalog file: {e}")))?;
        if file.version != 1 {
            return Err(Error::BadRequest(format!(
                "catalog version {} is not supported; expected version = 1",
                file.version
            )));
        }
        let mut report = ImportReport::default();
        for e in file.images {
            self.merge_one(e, &mut report)?;
        }
        self.event("catalog.imported", from, who, &report.summary());
        Ok(report)
    }

    fn merge_one(&self, mut e: CatalogEntry, report: &mut ImportReport) -> Result<(), Error> {
        if let Some(s) = &mut e.sha256 {
            *s = s.to_ascii_lowercase();
        }
        if e.format.is_none() {
            e.format = format_of(&e.src);
        }
        let checked = validate(&e).and_then(|()| self.check_origin("src", &e.src));
        if let Err(err) = checked {
            let rejected = serde_json::json!({"name": e.name, "reason": err.to_string()});
            report.rejected.push(rejected);
            return Ok(());
        }
        let name = e.name.clone();
        let db = self.store.db();
        match db.entry(&name)? {
            Some(old) if old.added_by != "import" => report.kept_operator.push(name),
            Some(old) => {
                if old.entry != e {
                    let pinned = old.pinned;
                    db.update_entry(&EntryRow::imported(e, pinned))?;
                    report.updated.push(name);
                }
            }
            None => {
                db.insert_entry(&EntryRow::imported(e, false))?;
                report.added.push(name);
            }
        }
        Ok(())
    }

    /// Fetch a catalog file from an http(s) URL, at most 4 MiB.
    pub async fn fetch_file(&self, url: &str) -> Result<String, Error> {
        text::validate_http_url("url", url).map_err(|e| invalid("url", e))?;
        self.check_origin("url", url)?;
        let mut resp = self
            .store
            .client
            .get(url)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| match Refused::find(&e) {
                Some(r) => Error::invalid("url", format!("url: {r}")),
                None => Error::Origin(format!("fetching the catalog from {url}: {e}")),
            })?;
        if !resp.status().is_success() {
            return Err(Error::Origin(format!(
                "fetching the catalog from {url}: the server answered {}",
                resp.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Origin(format!("reading the catalog from {url}: {e}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CATALOG {
                return Err(Error::BadRequest(format!(
                    "the catalog at {url} is larger than {MAX_CATALOG} bytes"
                )));
            }
        }
        String::from_utf8(body)
            .map_err(|_| Error::BadRequest(format!("the catalog at {url} is not UTF-8")))
    }

    /// The recorded misses, most recent first.
    pub fn misses(&self) -> Result<Vec<MissRow>, Error> {
        self.store.db().misses()
    }

    /// Forget a miss.
    pub fn dismiss_miss(&self, url: &str) -> Result<(), Error> {
        if self.store.db().dismiss_miss(url)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no miss is recorded for {url:?}")))
        }
    }

    /// Turn a missed URL into a catalog entry (or use the one that has it)
    /// and start its download; the entry's name.
    pub fn promote_miss(&self, url: &str, who: Who<'_>) -> Result<String, Error> {
        text::validate_http_url("url", url).map_err(|e| invalid("url", e))?;
        let existing = self.store.db().entries_by_src(url)?;
        let name = match existing.first() {
            Some(e) => e.entry.name.clone(),
            None => {
                let name = self.name_for_url(url)?;
                let entry = CatalogEntry {
                    name: name.clone(),
                    src: url.to_string(),
                    sha256: None,
                    size: None,
                    format: format_of(url),
                    arch: None,
                    description: None,
                };
                self.add(&EntryRow::by(entry, false, "operator"), who)?;
                name
            }
        };
        self.download(&name, false, who)?;
        Ok(name)
    }

    /// A catalog name for a URL: its file name with anything outside the
    /// name rules replaced, made unique with `-2`, `-3`, …
    fn name_for_url(&self, url: &str) -> Result<String, Error> {
        let path = url.split(['?', '#']).next().unwrap_or("");
        let last = path.rsplit('/').next().unwrap_or("");
        let base: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .chars()
            .take(100)
            .collect();
        let base = if base.is_empty() {
            "download".to_string()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.store.db().entry(&name)?.is_some() {
            name = format!("{base}-{n}");
            n += 1;
        }
        Ok(name)
    }
}

impl EntryRow {
    fn by(entry: CatalogEntry, pinned: bool, added_by: &str) -> EntryRow {
        EntryRow {
            entry,
            pinned,
            added_by: added_by.to_string(),
        }
    }

    fn imported(entry: CatalogEntry, pinned: bool) -> EntryRow {
        EntryRow::by(entry, pinned, "import")
    }
}

impl EntryInput {
    /// The entry `name` as stored, after every field's check; `added_by`
    /// is `operator`, `bty-web` or `import`.
    pub fn into_row(self, name: String, added_by: &str) -> Result<EntryRow, Error> {
        let format = match self.format.as_deref() {
            None | Some("") => None,
            Some(f) => Some(
                f.parse::<ImageFormat>()
                    .map_err(|e| Error::invalid("format", format!("format: {e}")))?,
            ),
        };
        let entry = CatalogEntry {
            name,
            format: format.or_else(|| format_of(&self.src)),
            src: self.src,
            sha256: self
                .sha256
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase()),
            size: self.size,
            arch: self.arch.filter(|s| !s.is_empty()),
            description: self.description.filter(|s| !s.is_empty()),
        };
        validate(&entry)?;
        Ok(EntryRow::by(entry, self.pinned.unwrap_or(false), added_by))
    }
}

/// The format a URL's file name says, ignoring the query.
fn format_of(src: &str) -> Option<ImageFormat> {
    ImageFormat::from_file_name(src.split(['?', '#']).next().unwrap_or(""))
}

fn invalid(field: &'static str, e: text::TextError) -> Error {
    Error::invalid(field, e.to_string())
}

/// Check every field of an entry; the error names the field and the rule.
fn validate(e: &CatalogEntry) -> Result<(), Error> {
    text::validate_image_name(&e.name).map_err(|err| invalid("name", err))?;
    text::validate_http_url("src", &e.src).map_err(|err| invalid("src", err))?;
    if let Some(s) = &e.sha256 {
        text::validate_sha256("sha256", s).map_err(|err| invalid("sha256", err))?;
    }
    if let Some(a) = &e.arch {
        text::validate_name("arch", a).map_err(|err| invalid("arch", err))?;
    }
    if let Some(d) = &e.description {
        if d.chars().count() > 500 || d.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(
                "description",
                "description: at most 500 characters, no control characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, src: &str) -> EntryInput {
        EntryInput {
            name: Some(name.into()),
            src: src.into(),
            ..EntryInput::default()
        }
    }

    #[test]
    fn each_refusal_names_its_field() {
        let ok = "http://127.0.0.1:9/a.img.zst";
        let field = |i: EntryInput| {
            let name = i.name.clone().unwrap_or_default();
            i.into_row(name, "operator").unwrap_err().field()
        };
        assert_eq!(field(input("two words", ok)), Some("name"));
        assert_eq!(field(input("a", "ftp://h/a.img")), Some("src"));
        let sha = EntryInput {
            sha256: Some("abc".into()),
            ..input("a", ok)
        };
        assert_eq!(field(sha), Some("sha256"));
        let fmt = EntryInput {
            format: Some("tar".into()),
            ..input("a", ok)
        };
        assert_eq!(field(fmt), Some("format"));
        let desc = EntryInput {
            description: Some("a\nb".into()),
            ..input("a", ok)
        };
        assert_eq!(field(desc), Some("description"));
        let row = input("a", ok).into_row("a".into(), "bty-web").unwrap();
        assert_eq!(row.entry.format, Some(ImageFormat::Zst));
        assert_eq!(row.added_by, "bty-web");
    }
}
