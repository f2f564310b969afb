//! Adding and removing images: the one operation behind
//! `POST /api/images`, `DELETE /api/images/{name}`, the Images page's form
//! and `bty-lab image`.
//!
//! An image is added to withcache's catalog (through its admin API with
//! the service token) and its download started there; bty-web's catalog
//! snapshot is then refreshed so the image can be assigned at once. bty-web
//! stores nothing of its own: withcache's catalog is the one place the
//! entry lives. Every field is checked before withcache is called, so a
//! refused request leaves both catalogs as they were.

use std::collections::BTreeMap;

use bty_proto::catalog::{blob_url, CatalogEntry};
use bty_proto::{text, ImageFormat};

use super::{Domain, DomainError};
use crate::catalog::{Catalog, Image, Source};
use crate::withcache::WcError;

/// An image as typed by the operator (JSON body or form), not checked yet.
#[derive(Debug, Default, Clone)]
pub struct NewImage {
    /// Catalog name.
    pub name: String,
    /// Origin URL.
    pub url: String,
    /// sha256 of the bytes at `url`, if known.
    pub sha256: Option<String>,
    /// Length of the bytes at `url`, if known.
    pub size: Option<u64>,
    /// Format name (`img.zst`, `zst`, ...); guessed from `url` when absent.
    pub format: Option<String>,
}

/// Problems by field (`name`, `url`, `sha256`, `size`, `format`); each
/// message starts with the field's name.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Why an image was not added. Nothing was saved in any of the cases.
#[derive(Debug)]
pub enum AddError {
    /// Bad input (400), by field.
    Fields(FieldErrors),
    /// No withcache is configured (409): images come from the static file.
    NoWithcache(String),
    /// withcache could not be reached, refused the token or failed (502).
    Withcache(String),
}

impl AddError {
    /// One line: every field's message, or the reason.
    pub fn reason(&self) -> String {
        match self {
            AddError::Fields(f) => f.values().cloned().collect::<Vec<_>>().join("; "),
            AddError::NoWithcache(m) | AddError::Withcache(m) => m.clone(),
        }
    }

    /// [`AddError::reason`] and that nothing was saved (the API's text).
    pub fn message(&self) -> String {
        format!("{}; nothing was saved", self.reason())
    }
}

/// Bad input is [`DomainError::Invalid`] (naming the first field), no
/// withcache a [`DomainError::Conflict`], a failing withcache
/// [`DomainError::Upstream`]; each with [`AddError::message`].
impl From<AddError> for DomainError {
    fn from(e: AddError) -> Self {
        let msg = e.message();
        match e {
            AddError::Fields(f) => DomainError::Invalid {
                field: f.keys().next().copied().unwrap_or("form"),
                msg,
            },
            AddError::NoWithcache(_) => DomainError::Conflict(msg),
            AddError::Withcache(_) => DomainError::Upstream(msg),
        }
    }
}

/// Why an image was not removed.
#[derive(Debug)]
pub enum RemoveError {
    /// No such image (404).
    NotFound(String),
    /// It comes from the static catalog file (409): edit the file.
    Static(String),
    /// withcache could not be reached or failed (502).
    Withcache(String),
}

impl RemoveError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            RemoveError::NotFound(m) | RemoveError::Static(m) | RemoveError::Withcache(m) => m,
        }
    }
}

impl From<RemoveError> for DomainError {
    fn from(e: RemoveError) -> Self {
        match e {
            RemoveError::NotFound(m) => DomainError::NotFound(m),
            RemoveError::Static(m) => DomainError::Conflict(m),
            RemoveError::Withcache(m) => DomainError::Upstream(m),
        }
    }
}

/// What to tell an operator who wants to add an image to a bty-web
/// without withcache.
fn no_withcache(catalog: &Catalog) -> String {
    let file = match catalog.file() {
        Some(p) => format!(
            "the static catalog file {} ([images] catalog); add an [[images]] entry there \
             (it is re-read within 2 s)",
            p.display()
        ),
        None => "a static catalog file: set [images] catalog to a version = 1 TOML file with \
                 [[images]] entries"
            .to_string(),
    };
    format!("no withcache is configured ([withcache] url), so images come from {file}")
}

/// Check every field against the catalog's rules and the names in use;
/// all problems at once. Returns the entry withcache is to get.
pub fn validate(catalog: &Catalog, n: &NewImage) -> Result<CatalogEntry, FieldErrors> {
    let mut errors = FieldErrors::new();
    let name = n.name.trim();
    check_name(catalog, name, &mut errors);
    let url = n.url.trim();
    if let Err(e) = text::validate_http_url("url", url) {
        errors.insert("url", e.to_string());
    }
    let sha256 = check_sha256(n.sha256.as_deref(), &mut errors);
    if n.size == Some(0) {
        errors.insert("size", "size: must be greater than 0 bytes".into());
    }
    let format = check_format(n.format.as_deref(), url, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CatalogEntry {
        name: name.to_string(),
        src: url.to_string(),
        sha256,
        size: n.size,
        format,
        arch: None,
        description: None,
    })
}

/// A valid name nobody uses yet.
fn check_name(catalog: &Catalog, name: &str, errors: &mut FieldErrors) {
    if let Err(e) = text::validate_image_name(name) {
        errors.insert("name", format!("name: {}", e.problem));
    } else if let Some(source) = name_in_use(catalog, name) {
        errors.insert(
            "name",
            format!("name: an image named {name:?} exists already ({source}); pick another name"),
        );
    }
}

/// 64 hex digits (any case; stored lower case), or none.
fn check_sha256(raw: Option<&str>, errors: &mut FieldErrors) -> Option<String> {
    let sha256 = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)?;
    if text::validate_sha256("sha256", &sha256).is_err() {
        let hex = sha256.bytes().all(|b| b.is_ascii_hexdigit());
        errors.insert(
            "sha256",
            format!(
                "sha256: must be exactly 64 hex digits (got {} characters{})",
                sha256.chars().count(),
                if hex { "" } else { ", not all hex" }
            ),
        );
    }
    Some(sha256)
}

/// The format given, or the one the URL's file name says.
fn check_format(raw: Option<&str>, url: &str, errors: &mut FieldErrors) -> Option<ImageFormat> {
    if let Some(f) = raw.map(str::trim).filter(|f| !f.is_empty()) {
        return f
            .parse::<ImageFormat>()
            .map_err(|e| errors.insert("format", format!("format: {e}")))
            .ok();
    }
    let guessed = ImageFormat::from_file_name(url.split(['?', '#']).next().unwrap_or(""));
    if guessed.is_none() && !errors.contains_key("url") {
        errors.insert(
            "format",
            "format: cannot be guessed from the URL's file name; give one of img, \
             img.gz, img.xz, img.zst, img.bz2, qcow2"
                .into(),
        );
    }
    guessed
}

/// Where `name` is taken already, if it is: the snapshot (both sources)
/// and withcache's own catalog as last read (entries bty-web cannot use
/// still hold their name there).
fn name_in_use(catalog: &Catalog, name: &str) -> Option<String> {
    let snap = catalog.snapshot();
    match snap.get(name).map(|i| i.source) {
        Some(Source::Static) => Some(match catalog.file() {
            Some(p) => format!("in the static catalog file {}", p.display()),
            None => "in the static catalog file".into(),
        }),
        Some(Source::Withcache) => Some("in withcache's catalog".into()),
        None => None,
    }
}

/// Add `n` to withcache's catalog, start its download, and refresh the
/// snapshot; returns the image as bty-web now offers it.
pub async fn add(catalog: &Catalog, n: &NewImage) -> Result<Image, AddError> {
    let Some(wc) = catalog.withcache() else {
        return Err(AddError::NoWithcache(no_withcache(catalog)));
    };
    let entry = validate(catalog, n).map_err(AddError::Fields)?;
    wc.add(&entry, true).await.map_err(|e| refused(&entry, e))?;
    tracing::info!(image = %entry.name, src = %entry.src, "image added to withcache's catalog");
    catalog.refresh(false, true).await;
    let listed = catalog.snapshot().get(&entry.name).cloned();
    Ok(listed.unwrap_or_else(|| Image {
        // withcache answered the add but not the read right after it:
        // what it will list at the next poll.
        url: blob_url(wc.base(), &entry.src),
        resolved_format: entry.format.unwrap_or(ImageFormat::Raw),
        source: Source::Withcache,
        cache: None,
        entry,
    }))
}

/// Why withcache did not take `entry`: a field when its message names one.
fn refused(entry: &CatalogEntry, e: WcError) -> AddError {
    let message = match e {
        WcError::Rejected { status: 409, .. } => {
            let why = format!(
                "name: withcache already has an entry named {:?}; pick another name",
                entry.name
            );
            return AddError::Fields(FieldErrors::from([("name", why)]));
        }
        WcError::Rejected { message, .. } => message,
        e => return AddError::Withcache(e.to_string()),
    };
    // withcache's validators name the field first, as ours do.
    let field = match message.split(':').next().unwrap_or("").trim() {
        "image" | "name" => Some("name"),
        "src" | "url" => Some("url"),
        "sha256" => Some("sha256"),
        "size" => Some("size"),
        "format" => Some("format"),
        _ => None,
    };
    AddError::Fields(FieldErrors::from([match field {
        Some(k) => (k, format!("{k}: withcache refused it: {message}")),
        None => ("form", format!("withcache refused it: {message}")),
    }]))
}

/// Remove a withcache-sourced image from withcache's catalog (its cached
/// bytes stay until evicted) and refresh the snapshot.
pub async fn remove(catalog: &Catalog, name: &str) -> Result<(), RemoveError> {
    let not_found = || RemoveError::NotFound(format!("no image named {name:?} is in the catalog"));
    let source = catalog.snapshot().get(name).map(|i| i.source);
    match source {
        None => return Err(not_found()),
        Some(Source::Static) => return Err(static_entry(catalog, name)),
        Some(Source::Withcache) => {}
    }
    let wc = catalog.withcache().ok_or_else(not_found)?;
    let found = wc
        .delete(name)
        .await
        .map_err(|e| RemoveError::Withcache(e.to_string()))?;
    catalog.refresh(false, true).await;
    if !found {
        return Err(RemoveError::NotFound(format!(
            "withcache has no entry named {name:?} (removed meanwhile?)"
        )));
    }
    tracing::info!(image = %name, "image removed from withcache's catalog");
    Ok(())
}

/// A static entry is removed from its file, not through bty-web.
fn static_entry(catalog: &Catalog, name: &str) -> RemoveError {
    let file = catalog
        .file()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "[images] catalog".into());
    RemoveError::Static(format!(
        "image {name:?} comes from the static catalog file {file}; remove its [[images]] \
         entry there (bty-web re-reads the file within 2 s)"
    ))
}

impl Domain {
    /// Check a new image's fields ([`validate`] against this catalog).
    pub fn validate_image(&self, n: &NewImage) -> Result<CatalogEntry, FieldErrors> {
        validate(&self.catalog, n)
    }

    /// Add an image to withcache's catalog ([`add`]).
    pub async fn add_image(&self, n: &NewImage) -> Result<Image, AddError> {
        add(&self.catalog, n).await
    }

    /// Remove a withcache-sourced image ([`remove`]).
    pub async fn remove_image(&self, name: &str) -> Result<(), RemoveError> {
        remove(&self.catalog, name).await
    }
}
