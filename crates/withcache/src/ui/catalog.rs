//! The Catalog page (`/ui/catalog`): every entry with its state, the
//! forms to add an entry and import a catalog file, and the per-row
//! Download and Delete buttons.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::response::Response;
use bty_http::Layout;
use bty_proto::catalog::ImageFormat;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{broken, done, failure, page, DoneQuery};
use crate::app::App;
use crate::catalog::{EntryInput, EntryState, Started, Who};
use crate::error::Error;

/// One catalog row as the page shows it.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub(super) struct RowView {
    pub(super) name: String,
    src: String,
    format: Option<String>,
    arch: Option<String>,
    description: Option<String>,
    pinned: bool,
    state: &'static str,
    badge: &'static str,
    digest: Option<String>,
    size_text: String,
    /// A download is queued or running: show the bar.
    pub(super) live: bool,
    pct: Option<u64>,
    pct_text: String,
    bytes_text: String,
    pub(super) rate_text: String,
    pub(super) written: Option<u64>,
}

impl RowView {
    /// The same row apart from the rate (the rate alone changing is not
    /// worth sending a row).
    pub(super) fn same_but_rate(&self, other: &RowView) -> bool {
        let strip = |r: &RowView| RowView {
            rate_text: String::new(),
            ..r.clone()
        };
        strip(self) == strip(other)
    }

    pub(super) fn new(s: EntryState, rate: Option<f64>) -> RowView {
        let e = &s.row.entry;
        let known_size = s.total.or(e.size);
        let pct = match (s.written, known_size) {
            (Some(w), Some(t)) if t > 0 => Some((w.min(t) * 100) / t),
            _ => None,
        };
        let live = matches!(s.state, "downloading" | "queued");
        RowView {
            name: e.name.clone(),
            src: e.src.clone(),
            format: e.format.map(|f| f.to_string()),
            arch: e.arch.clone(),
            description: e.description.clone(),
            pinned: s.row.pinned,
            state: s.state,
            badge: badge(s.state),
            digest: s.digest.clone(),
            size_text: known_size
                .map(bty_ui_kit::human_bytes)
                .unwrap_or_else(|| "–".into()),
            live,
            pct,
            pct_text: pct.map(|p| format!("{p}%")).unwrap_or_else(|| "–".into()),
            bytes_text: bytes_text(s.written, known_size),
            rate_text: rate_text(rate.filter(|_| live)),
            written: s.written,
        }
    }
}

/// The UI kit's badge for an entry state.
fn badge(state: &str) -> &'static str {
    match state {
        "cached" => "done",
        "downloading" | "queued" => "flashing",
        _ => "discovered",
    }
}

/// "1.2 GiB of 3 GiB", or what is known of it.
fn bytes_text(written: Option<u64>, known_size: Option<u64>) -> String {
    match (written, known_size) {
        (Some(w), Some(t)) => format!(
            "{} of {}",
            bty_ui_kit::human_bytes(w),
            bty_ui_kit::human_bytes(t)
        ),
        (Some(w), None) => bty_ui_kit::human_bytes(w),
        _ => String::new(),
    }
}

/// The rate of a live row; nothing when it is stalled or unknown.
fn rate_text(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r > 0.0 => format!("{}/s", bty_ui_kit::human_bytes(r as u64)),
        _ => String::new(),
    }
}

/// The line above the table.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub(super) struct UsageView {
    used: u64,
    reserved: u64,
    max: Option<u64>,
    free: Option<u64>,
    active: usize,
}

impl UsageView {
    pub(super) fn of(app: &App) -> UsageView {
        let (used, reserved, max) = app.store.usage();
        UsageView {
            used,
            reserved,
            max,
            free: max.map(|m| m.saturating_sub(used + reserved)),
            active: app.store.downloads().len(),
        }
    }
}

/// What the add form showed; typed values come back after an error.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct AddForm {
    name: String,
    src: String,
    sha256: String,
    size: String,
    format: String,
    description: String,
    pinned: Option<String>,
    download: Option<String>,
}

#[derive(Serialize)]
struct CatalogCtx {
    layout: Layout,
    entries: Vec<RowView>,
    u: UsageView,
    formats: Vec<String>,
    form: AddForm,
    errors: BTreeMap<&'static str, String>,
    error: Option<String>,
    notice: Option<String>,
    import_url: String,
}

/// Every entry as a row.
pub(super) fn rows(app: &App) -> Result<Vec<RowView>, Error> {
    Ok(app
        .catalog
        .list()?
        .into_iter()
        .map(|s| RowView::new(s, None))
        .collect())
}

/// A form's failure: the status, the message and the field it is about.
type Fail = (StatusCode, String, Option<&'static str>);

/// The catalog page; `fail` = a form's error.
fn catalog_page(
    app: &App,
    form: AddForm,
    import_url: String,
    notice: Option<String>,
    fail: Option<Fail>,
) -> Response {
    let entries = match rows(app) {
        Ok(r) => r,
        Err(e) => return broken(&e),
    };
    let (status, error, field) = match fail {
        Some((s, m, f)) => (s, Some(m), f),
        None => (StatusCode::OK, None, None),
    };
    let mut errors = BTreeMap::new();
    if let (Some(f), Some(m)) = (field, &error) {
        errors.insert(f, m.clone());
    }
    let ctx = CatalogCtx {
        layout: Layout::new(app, "Catalog", "catalog"),
        entries,
        u: UsageView::of(app),
        formats: ImageFormat::ALL.iter().map(|f| f.to_string()).collect(),
        form,
        errors,
        error,
        notice,
        import_url,
    };
    page(status, "catalog.html", &ctx)
}

/// The page again with `e` (next to its field, if it names one).
fn with_error(app: &App, form: AddForm, import_url: String, e: &Error) -> Response {
    let (status, msg) = failure(e);
    catalog_page(app, form, import_url, None, Some((status, msg, e.field())))
}

/// `GET /ui/catalog`.
pub(super) async fn show(State(app): State<Arc<App>>, Query(q): Query<DoneQuery>) -> Response {
    catalog_page(&app, AddForm::default(), String::new(), q.notice(), None)
}

fn operator(peer: SocketAddr) -> Who<'static> {
    Who {
        actor: "operator",
        ip: Some(peer.ip()),
    }
}

/// The add form as a catalog entry, checked; the name is the entry's.
fn add_entry(app: &App, f: &AddForm, peer: SocketAddr) -> Result<String, Error> {
    let name = f.name.trim();
    if name.is_empty() {
        let msg = "name: required, e.g. debian-12 (letters, digits and . _ - +)";
        return Err(Error::invalid("name", msg));
    }
    if f.src.trim().is_empty() {
        let msg = "src: required: the http(s) URL withcache downloads the image from";
        return Err(Error::invalid("src", msg));
    }
    let size = match f.size.trim() {
        "" => None,
        s => Some(
            crate::options::parse_size(s)
                .map_err(|e| Error::invalid("size", format!("size: {e}")))?,
        ),
    };
    let input = EntryInput {
        name: Some(name.to_string()),
        src: f.src.trim().to_string(),
        sha256: Some(f.sha256.trim().to_string()),
        size,
        format: Some(f.format.trim().to_string()),
        arch: None,
        description: Some(f.description.trim().to_string()),
        pinned: Some(f.pinned.is_some()),
    };
    let row = input.into_row(name.to_string(), "operator")?;
    app.catalog.add(&row, operator(peer))?;
    Ok(name.to_string())
}

/// `POST /ui/catalog/add`.
pub(super) async fn add(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<AddForm>,
) -> Response {
    let name = match add_entry(&app, &f, peer) {
        Ok(name) => name,
        Err(Error::Conflict(_)) => {
            let msg = format!(
                "name: a catalog entry named {:?} exists already; pick another name or delete \
                 that entry first. Nothing was saved.",
                f.name.trim()
            );
            let fail = (StatusCode::CONFLICT, msg, Some("name"));
            return catalog_page(&app, f, String::new(), None, Some(fail));
        }
        Err(e) => return with_error(&app, f, String::new(), &e),
    };
    if f.download.is_none() {
        return done("/ui/catalog", &name, "added");
    }
    match app.catalog.download(&name, false, operator(peer)) {
        Ok(_) => done("/ui/catalog", &name, "added-download"),
        Err(e) => {
            let (status, msg) = failure(&e);
            let fail = (status, format!("Its download did not start: {msg}"), None);
            let notice = Some(format!("Added {name}."));
            catalog_page(&app, AddForm::default(), String::new(), notice, Some(fail))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct NameForm {
    #[serde(default)]
    name: String,
}

/// `POST /ui/catalog/download`: the button of a cached entry says
/// "Download again" and fetches anew.
pub(super) async fn download(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let name = f.name.trim();
    let force = app.catalog.get(name).is_ok_and(|s| s.state == "cached");
    match app.catalog.download(name, force, operator(peer)) {
        Ok(Started::Cached { .. } | Started::CachedJustNow) => done("/ui/catalog", name, "cached"),
        Ok(Started::Downloading { .. }) => done("/ui/catalog", name, "download"),
        Err(e) => with_error(&app, AddForm::default(), String::new(), &e),
    }
}

/// `POST /ui/catalog/delete`.
pub(super) async fn delete(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let name = f.name.trim();
    match app.catalog.delete(name, operator(peer), "deleted") {
        Ok(()) => done("/ui/catalog", name, "deleted"),
        Err(Error::NotFound(_)) => {
            let msg = format!("There is no catalog entry named {name:?}. Nothing was deleted.");
            let fail = (StatusCode::NOT_FOUND, msg, None);
            catalog_page(&app, AddForm::default(), String::new(), None, Some(fail))
        }
        Err(e) => with_error(&app, AddForm::default(), String::new(), &e),
    }
}

#[derive(Deserialize)]
pub(super) struct UrlForm {
    #[serde(default)]
    pub(super) url: String,
}

/// `POST /ui/catalog/import`: merge the catalog file at a URL.
pub(super) async fn import(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    let url = f.url.trim();
    let r = async {
        if url.is_empty() {
            let msg = "url: required: where withcache downloads the catalog file from";
            return Err(Error::invalid("url", msg));
        }
        let text = app.catalog.fetch_file(url).await?;
        app.catalog.import(&text, url, operator(peer))
    }
    .await;
    match r {
        Ok(report) => done("/ui/catalog", &report.summary(), "imported"),
        Err(e) => {
            // Whatever went wrong, the URL field is the one to change.
            let (status, msg) = failure(&e);
            let fail = (status, msg, Some("url"));
            catalog_page(&app, AddForm::default(), url.to_string(), None, Some(fail))
        }
    }
}
