//! The operator UI under `/ui/`, in the same look as bty-web's: the
//! stylesheet, scripts, htmx and page shell come from `bty-ui-kit`, the
//! pages are server-rendered minijinja compiled into the binary (nothing
//! from a CDN).
//!
//! Every form posts plain `application/x-www-form-urlencoded` and answers
//! with a redirect to the page with a notice (success) or the same page
//! with the message and the typed values (failure, nothing saved), so
//! everything works without JavaScript. With JavaScript the catalog page
//! opens one SSE stream (`/ui/catalog/live`) that sends only the rows
//! whose state or progress changed, and the usage line when it changed;
//! never the whole table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bty_proto::catalog::ImageFormat;
use futures::Stream;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, StatusCode};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::api::{self, EntryBody, EntryState};
use crate::{App, Error};

/// How often the catalog stream looks for changes. Half a second makes a
/// smooth bar; an unchanged catalog sends nothing.
const LIVE_TICK: Duration = Duration::from_millis(500);
/// Events the Events page searches (newest first) and shows per page.
const EVENTS_SCANNED: u32 = 2000;
const EVENTS_PAGE: usize = 50;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../ui/templates/base.html")),
    ("login.html", include_str!("../ui/templates/login.html")),
    ("notices.html", include_str!("../ui/templates/notices.html")),
    ("usage.html", include_str!("../ui/templates/usage.html")),
    (
        "catalog_row.html",
        include_str!("../ui/templates/catalog_row.html"),
    ),
    ("catalog.html", include_str!("../ui/templates/catalog.html")),
    ("misses.html", include_str!("../ui/templates/misses.html")),
    ("events.html", include_str!("../ui/templates/events.html")),
    (
        "settings.html",
        include_str!("../ui/templates/settings.html"),
    ),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        bty_ui_kit::install(&mut env);
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("built-in UI template {name} is broken: {e:#}"));
        }
        env
    })
}

/// withcache's navigation: `/ui/{id}` and the label.
const NAV: &[(&str, &str)] = &[
    ("catalog", "Catalog"),
    ("misses", "Misses"),
    ("events", "Events"),
    ("settings", "Settings"),
];

/// What the shared shell needs (see `bty_ui_kit`).
#[derive(Debug, Serialize)]
struct Layout {
    title: String,
    nav: &'static str,
    nav_items: &'static [(&'static str, &'static str)],
    user: String,
    open_mode: bool,
    default_password: bool,
    version: &'static str,
    product: &'static str,
    product_long: &'static str,
    home: &'static str,
}

impl Layout {
    fn new(app: &App, title: &str, nav: &'static str) -> Layout {
        let c = app.auth.credentials();
        Layout {
            title: title.to_string(),
            nav,
            nav_items: NAV,
            user: if c.is_open() {
                String::new()
            } else {
                c.user().to_string()
            },
            open_mode: c.is_open(),
            default_password: !c.is_open() && c.uses_default_password(),
            version: env!("CARGO_PKG_VERSION"),
            product: "withcache",
            product_long: "withcache",
            home: "/ui/catalog",
        }
    }
}

fn render(name: &str, ctx: &impl Serialize) -> Result<String, minijinja::Error> {
    env()
        .get_template(name)?
        .render(minijinja::Value::from_serialize(ctx))
}

/// A whole page with `status`; pages show live state, so never cached.
fn page(status: StatusCode, name: &str, ctx: &impl Serialize) -> Response {
    match render(name, ctx) {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, template = name, "UI rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "withcache could not render this page; its log has the details\n",
            )
                .into_response()
        }
    }
}

/// The status and the operator's message for a failed form. Internal
/// failures are logged with their detail and shown as a pointer to the log.
fn failure(e: &Error) -> (StatusCode, String) {
    match e {
        Error::BadRequest(m) => (StatusCode::BAD_REQUEST, format!("{m}. Nothing was saved.")),
        Error::NotFound(m) => (StatusCode::NOT_FOUND, format!("{m}. Nothing was changed.")),
        Error::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
        Error::Full(m) => (StatusCode::INSUFFICIENT_STORAGE, m.clone()),
        Error::Origin(m) => (StatusCode::BAD_GATEWAY, m.clone()),
        Error::Db(_) | Error::Io { .. } | Error::Config(_) => {
            tracing::error!(error = %e, "UI action failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "withcache hit an internal error; its log has the details. Nothing was changed."
                    .into(),
            )
        }
    }
}

pub(crate) fn routes(app: Arc<App>) -> axum::Router<Arc<App>> {
    let guarded = axum::Router::new()
        .route("/ui/catalog", get(catalog))
        .route("/ui/catalog/live", get(catalog_live))
        .route("/ui/catalog/add", post(catalog_add))
        .route("/ui/catalog/download", post(catalog_download))
        .route("/ui/catalog/delete", post(catalog_delete))
        .route("/ui/catalog/import", post(catalog_import))
        .route("/ui/misses", get(misses))
        .route("/ui/misses/fetch", post(misses_fetch))
        .route("/ui/misses/dismiss", post(misses_dismiss))
        .route("/ui/events", get(events))
        .route("/ui/settings", get(settings))
        .route("/ui/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(app, require_session));
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/static/{name}", get(static_file))
        .merge(guarded)
}

/// `GET /ui/static/{name}`: the assets shared with bty-web.
async fn static_file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match bty_ui_kit::asset(&name) {
        Some(a) => (
            [
                (CONTENT_TYPE, a.content_type),
                (CACHE_CONTROL, bty_ui_kit::ASSET_CACHE_CONTROL),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

async fn require_session(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "cross-origin request refused: submit the form from withcache's own pages\n",
        )
            .into_response();
    }
    match app.auth.authorize(peer.ip(), req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(_) => {
            // Come back to the page after logging in; a form post goes
            // back to its page instead (the post itself is not replayed).
            let target = if req.method() == http::Method::GET {
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/ui/catalog")
                    .to_string()
            } else {
                "/ui/catalog".to_string()
            };
            if target == "/ui/catalog" {
                // The page a login lands on anyway.
                return Redirect::to("/ui/login").into_response();
            }
            Redirect::to(&format!(
                "/ui/login?next={}",
                bty_ui_kit::url_encode(&target)
            ))
            .into_response()
        }
    }
}

/// Only a path of this UI may follow a login (no open redirect).
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/ui/")
        && !next.starts_with("/ui/login")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control());
    if ok {
        next
    } else {
        "/ui/catalog"
    }
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Serialize)]
struct LoginCtx<'a> {
    layout: Layout,
    user: &'a str,
    next: &'a str,
    error: Option<String>,
}

async fn login_page(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    if app.auth.credentials().is_open() {
        return Redirect::to(safe_next(&q.next)).into_response();
    }
    let ctx = LoginCtx {
        layout: Layout::new(&app, "Log in", "login"),
        user: app.auth.credentials().user(),
        next: safe_next(&q.next),
        error: None,
    };
    page(StatusCode::OK, "login.html", &ctx)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(&f.next);
    if app.auth.credentials().is_open() {
        return Redirect::to(next).into_response();
    }
    match app.auth.login(peer.ip(), &f.user, &f.password).await {
        Ok(cookie) => {
            app.event(
                "auth.login.succeeded",
                &f.user,
                "operator",
                Some(peer),
                "logged in to the UI",
            );
            ([(SET_COOKIE, cookie)], Redirect::to(next)).into_response()
        }
        Err(e) => {
            app.event(
                "auth.login.failed",
                &f.user,
                "client",
                Some(peer),
                &e.to_string(),
            );
            let status = match e {
                bty_auth::LoginError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                bty_auth::LoginError::Invalid => StatusCode::UNAUTHORIZED,
            };
            let ctx = LoginCtx {
                layout: Layout::new(&app, "Log in", "login"),
                user: &f.user,
                next,
                error: Some(format!("{e}.")),
            };
            page(status, "login.html", &ctx)
        }
    }
}

async fn logout(State(app): State<Arc<App>>) -> Response {
    (
        [(SET_COOKIE, app.auth.logout_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// The notice after a successful form (post/redirect/get).
#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    what: String,
}

impl DoneQuery {
    fn notice(&self) -> Option<String> {
        let w = self.what.chars().take(300).collect::<String>();
        Some(match self.done.as_str() {
            "added" => format!("Added {w}."),
            "added-download" => format!("Added {w}; its download started."),
            "download" => format!("The download of {w} started."),
            "cached" => format!("{w} is cached already."),
            "deleted" => format!("Deleted the catalog entry {w}."),
            "imported" => format!("Imported the catalog: {w}."),
            "promoted" => format!("Added {w} to the catalog; its download started."),
            "dismissed" => "Dismissed the miss.".to_string(),
            _ => return None,
        })
    }
}

fn done(page: &str, what: &str, code: &str) -> Response {
    Redirect::to(&format!(
        "{page}?done={code}&what={}",
        bty_ui_kit::url_encode(what)
    ))
    .into_response()
}

// ---------------------------------------------------------------- catalog

/// One catalog row as the page shows it.
#[derive(Debug, Serialize, Clone, PartialEq)]
struct RowView {
    name: String,
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
    live: bool,
    pct: Option<u64>,
    pct_text: String,
    bytes_text: String,
    rate_text: String,
    written: Option<u64>,
}

impl RowView {
    fn new(s: EntryState, rate: Option<f64>) -> RowView {
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
            badge: match s.state {
                "cached" => "done",
                "downloading" | "queued" => "flashing",
                _ => "discovered",
            },
            digest: s.digest.clone(),
            size_text: known_size
                .map(bty_ui_kit::human_bytes)
                .unwrap_or_else(|| "–".into()),
            live,
            pct,
            pct_text: pct.map(|p| format!("{p}%")).unwrap_or_else(|| "–".into()),
            bytes_text: match (s.written, known_size) {
                (Some(w), Some(t)) => format!(
                    "{} of {}",
                    bty_ui_kit::human_bytes(w),
                    bty_ui_kit::human_bytes(t)
                ),
                (Some(w), None) => bty_ui_kit::human_bytes(w),
                _ => String::new(),
            },
            rate_text: match rate {
                Some(r) if live && r > 0.0 => {
                    format!("{}/s", bty_ui_kit::human_bytes(r as u64))
                }
                _ => String::new(),
            },
            written: s.written,
        }
    }
}

/// The line above the table.
#[derive(Debug, Serialize, Clone, PartialEq)]
struct UsageView {
    used: u64,
    reserved: u64,
    max: Option<u64>,
    free: Option<u64>,
    active: usize,
}

impl UsageView {
    fn of(app: &App) -> UsageView {
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
struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    src: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    pinned: Option<String>,
    #[serde(default)]
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

fn rows(app: &App) -> Result<Vec<RowView>, Error> {
    Ok(app
        .db()
        .entries()?
        .into_iter()
        .map(|r| RowView::new(api::entry_state(app, r), None))
        .collect())
}

/// The catalog page; `fail` = a form's error (status and message).
fn catalog_page(
    app: &App,
    form: AddForm,
    import_url: String,
    notice: Option<String>,
    fail: Option<(StatusCode, String, Option<&'static str>)>,
) -> Response {
    let entries = match rows(app) {
        Ok(r) => r,
        Err(e) => {
            let (status, msg) = failure(&e);
            return (status, msg).into_response();
        }
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

async fn catalog(State(app): State<Arc<App>>, Query(q): Query<DoneQuery>) -> Response {
    catalog_page(&app, AddForm::default(), String::new(), q.notice(), None)
}

/// Which form field an error message is about (validators start their
/// message with the field's name).
fn field_of(msg: &str) -> Option<&'static str> {
    let head = msg.split(':').next().unwrap_or("").trim();
    Some(match head {
        "image" | "name" => "name",
        "src" => "src",
        "sha256" => "sha256",
        "size" => "size",
        "format" => "format",
        "description" => "description",
        "url" => "url",
        _ => return None,
    })
}

fn add_entry(app: &App, f: &AddForm, peer: SocketAddr) -> Result<(), Error> {
    let name = f.name.trim();
    if name.is_empty() {
        return Err(Error::BadRequest(
            "name: required, e.g. debian-12 (letters, digits and . _ - +)".into(),
        ));
    }
    if f.src.trim().is_empty() {
        return Err(Error::BadRequest(
            "src: required: the http(s) URL withcache downloads the image from".into(),
        ));
    }
    let size = match f.size.trim() {
        "" => None,
        s => Some(crate::parse_size(s).map_err(|e| Error::BadRequest(format!("size: {e}")))?),
    };
    let body = EntryBody {
        name: Some(name.to_string()),
        src: f.src.trim().to_string(),
        sha256: Some(f.sha256.trim().to_string()),
        size,
        format: Some(f.format.trim().to_string()),
        arch: None,
        description: Some(f.description.trim().to_string()),
        pinned: Some(f.pinned.is_some()),
    };
    let row = api::entry_from_body_pub(name.to_string(), body)?;
    api::add_entry(app, &row, peer).map_err(|e| match e {
        Error::Conflict(_) => Error::Conflict(format!(
            "name: a catalog entry named {name:?} exists already; pick another name or delete \
             that entry first. Nothing was saved."
        )),
        e => e,
    })
}

async fn catalog_add(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<AddForm>,
) -> Response {
    match add_entry(&app, &f, peer) {
        Ok(()) => {
            let name = f.name.trim().to_string();
            if f.download.is_some() {
                match api::download_by_name(&app, &name, false, peer) {
                    Ok(_) => done("/ui/catalog", &name, "added-download"),
                    Err(e) => {
                        let (status, msg) = failure(&e);
                        catalog_page(
                            &app,
                            AddForm::default(),
                            String::new(),
                            Some(format!("Added {name}.")),
                            Some((status, format!("Its download did not start: {msg}"), None)),
                        )
                    }
                }
            } else {
                done("/ui/catalog", &name, "added")
            }
        }
        Err(e) => {
            let (status, msg) = failure(&e);
            let field = field_of(&msg);
            catalog_page(&app, f, String::new(), None, Some((status, msg, field)))
        }
    }
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    name: String,
}

async fn catalog_download(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let name = f.name.trim();
    // The button of a cached entry says "Download again": fetch anew.
    let force =
        matches!(app.db().entry(name), Ok(Some(e)) if app.store.lookup(&e.entry.src).is_some());
    match api::download_by_name(&app, name, force, peer) {
        Ok((_, body)) if body["status"] == "cached" => done("/ui/catalog", name, "cached"),
        Ok(_) => done("/ui/catalog", name, "download"),
        Err(e) => {
            let (status, msg) = failure(&e);
            catalog_page(
                &app,
                AddForm::default(),
                String::new(),
                None,
                Some((status, msg, None)),
            )
        }
    }
}

async fn catalog_delete(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let name = f.name.trim();
    match app.db().delete_entry(name) {
        Ok(true) => {
            app.event(
                "catalog.entry.deleted",
                name,
                "operator",
                Some(peer),
                "deleted",
            );
            done("/ui/catalog", name, "deleted")
        }
        Ok(false) => catalog_page(
            &app,
            AddForm::default(),
            String::new(),
            None,
            Some((
                StatusCode::NOT_FOUND,
                format!("There is no catalog entry named {name:?}. Nothing was deleted."),
                None,
            )),
        ),
        Err(e) => {
            let (status, msg) = failure(&e);
            catalog_page(
                &app,
                AddForm::default(),
                String::new(),
                None,
                Some((status, msg, None)),
            )
        }
    }
}

#[derive(Deserialize)]
struct UrlForm {
    #[serde(default)]
    url: String,
}

async fn catalog_import(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    let url = f.url.trim();
    let r = async {
        if url.is_empty() {
            return Err(Error::BadRequest(
                "url: required: where withcache downloads the catalog file from".into(),
            ));
        }
        let text = api::fetch_catalog(&app, url).await?;
        let report = api::merge_catalog(&app, &text)?;
        let summary = format!(
            "{} added, {} updated, {} operator entries kept, {} rejected",
            report.added.len(),
            report.updated.len(),
            report.kept_operator.len(),
            report.rejected.len()
        );
        app.event("catalog.imported", url, "operator", Some(peer), &summary);
        Ok(summary)
    }
    .await;
    match r {
        Ok(summary) => done("/ui/catalog", &summary, "imported"),
        Err(e) => {
            let (status, msg) = failure(&e);
            let field = field_of(&msg).filter(|f| *f == "url").or(Some("url"));
            catalog_page(
                &app,
                AddForm::default(),
                url.to_string(),
                None,
                Some((status, msg, field)),
            )
        }
    }
}

/// Per-stream memory of what the page shows now.
struct LiveWatch {
    /// Row HTML input per entry name, as last sent (or rendered).
    rows: HashMap<String, RowView>,
    names: BTreeSet<String>,
    usage: UsageView,
    /// Last (bytes, when) per entry, for the rate.
    samples: HashMap<String, (u64, Instant)>,
    told_reload: bool,
}

impl LiveWatch {
    fn new(app: &App) -> LiveWatch {
        let mut w = LiveWatch {
            rows: HashMap::new(),
            names: BTreeSet::new(),
            usage: UsageView::of(app),
            samples: HashMap::new(),
            told_reload: false,
        };
        if let Ok(rows) = rows(app) {
            for r in rows {
                w.names.insert(r.name.clone());
                // Rows that move are sent on the first tick anyway: the
                // page may have been rendered a moment before the stream.
                if !r.live {
                    w.rows.insert(r.name.clone(), r);
                }
            }
        }
        w
    }

    /// The fragments to send now: changed rows, the usage line, and one
    /// notice when entries were added or deleted elsewhere.
    fn step(&mut self, app: &App) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let states: Vec<EntryState> = match app.db().entries() {
            Ok(rows) => rows.into_iter().map(|r| api::entry_state(app, r)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "catalog stream could not read the catalog");
                return out;
            }
        };
        let now = Instant::now();
        let names: BTreeSet<String> = states.iter().map(|s| s.row.entry.name.clone()).collect();
        for s in states {
            let name = s.row.entry.name.clone();
            let rate = match (s.written, self.samples.get(&name)) {
                (Some(w), Some((w0, t0))) if w >= *w0 => {
                    let dt = now.duration_since(*t0).as_secs_f64();
                    (dt > 0.0).then(|| (w - w0) as f64 / dt)
                }
                _ => None,
            };
            let view = RowView::new(s, rate);
            match view.written {
                Some(w) if view.live => {
                    self.samples.insert(name.clone(), (w, now));
                }
                _ => {
                    self.samples.remove(&name);
                }
            }
            if !self.names.contains(&name) {
                continue; // not on the page; covered by the notice
            }
            // The rate alone changing is not worth a row.
            let same = self.rows.get(&name).is_some_and(|old| {
                RowView {
                    rate_text: String::new(),
                    ..old.clone()
                } == RowView {
                    rate_text: String::new(),
                    ..view.clone()
                }
            });
            if !same {
                match render("catalog_row.html", &minijinja::context! { e => &view }) {
                    Ok(html) => {
                        out.push(SseEvent::default().event(format!("row-{name}")).data(html))
                    }
                    Err(e) => tracing::error!(error = %e, "rendering a catalog row failed"),
                }
                self.rows.insert(name, view);
            }
        }
        if names != self.names && !self.told_reload {
            self.told_reload = true;
            out.push(SseEvent::default().event("notice").data(
                "Entries were added or deleted since this page was loaded: \
                 <a href=\"/ui/catalog\">reload</a> to see them.",
            ));
        }
        let usage = UsageView::of(app);
        if usage != self.usage {
            match render("usage.html", &minijinja::context! { u => &usage }) {
                Ok(html) => out.push(SseEvent::default().event("usage").data(html)),
                Err(e) => tracing::error!(error = %e, "rendering the usage line failed"),
            }
            self.usage = usage;
        }
        out
    }
}

/// `GET /ui/catalog/live`: the catalog page's SSE stream.
async fn catalog_live(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    use futures::StreamExt;
    let watch = LiveWatch::new(&app);
    let mut tick = tokio::time::interval(LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((app, watch, tick), |(app, mut w, mut tick)| async move {
        tick.tick().await;
        let events = w.step(&app);
        Some((
            futures::stream::iter(events.into_iter().map(Ok)),
            (app, w, tick),
        ))
    })
    .flatten();
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ----------------------------------------------------------------- misses

#[derive(Serialize)]
struct MissesCtx {
    layout: Layout,
    misses: Vec<crate::db::MissRow>,
    error: Option<String>,
    notice: Option<String>,
}

fn misses_page(app: &App, notice: Option<String>, fail: Option<(StatusCode, String)>) -> Response {
    let misses = match app.db().misses() {
        Ok(m) => m,
        Err(e) => {
            let (status, msg) = failure(&e);
            return (status, msg).into_response();
        }
    };
    let (status, error) = match fail {
        Some((s, m)) => (s, Some(m)),
        None => (StatusCode::OK, None),
    };
    let ctx = MissesCtx {
        layout: Layout::new(app, "Misses", "misses"),
        misses,
        error,
        notice,
    };
    page(status, "misses.html", &ctx)
}

async fn misses(State(app): State<Arc<App>>, Query(q): Query<DoneQuery>) -> Response {
    misses_page(&app, q.notice(), None)
}

async fn misses_fetch(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    match api::promote_miss(&app, f.url.trim(), peer) {
        Ok(name) => done("/ui/catalog", &name, "promoted"),
        Err(e) => misses_page(&app, None, Some(failure(&e))),
    }
}

async fn misses_dismiss(State(app): State<Arc<App>>, Form(f): Form<UrlForm>) -> Response {
    match app.db().dismiss_miss(f.url.trim()) {
        Ok(true) => done("/ui/misses", "", "dismissed"),
        Ok(false) => misses_page(
            &app,
            None,
            Some((
                StatusCode::NOT_FOUND,
                format!(
                    "No miss is recorded for {:?}. Nothing was changed.",
                    f.url.trim()
                ),
            )),
        ),
        Err(e) => misses_page(&app, None, Some(failure(&e))),
    }
}

// ----------------------------------------------------------------- events

#[derive(Deserialize, Default)]
struct EventsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Serialize)]
struct EventView {
    #[serde(flatten)]
    e: crate::db::EventRow,
    problem: bool,
}

#[derive(Serialize)]
struct EventsCtx {
    layout: Layout,
    events: Vec<EventView>,
    q: String,
    before: Option<i64>,
    older: Option<i64>,
    error: Option<String>,
    notice: Option<String>,
}

async fn events(State(app): State<Arc<App>>, Query(q): Query<EventsQuery>) -> Response {
    let mut error = None;
    let before = match q.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => match b.parse::<i64>() {
            Ok(v) => Some(v),
            Err(_) => {
                error = Some(format!(
                    "The page cursor {b:?} is not a number; showing the newest events."
                ));
                None
            }
        },
    };
    let all = match app.db().events(EVENTS_SCANNED, None) {
        Ok(e) => e,
        Err(e) => {
            let (status, msg) = failure(&e);
            return (status, msg).into_response();
        }
    };
    let needle = q.q.trim().to_lowercase();
    let mut matching = all.into_iter().filter(|e| {
        before.is_none_or(|b| e.id < b)
            && (needle.is_empty()
                || [
                    e.kind.as_str(),
                    e.subject.as_str(),
                    e.actor.as_str(),
                    e.source_ip.as_deref().unwrap_or(""),
                    e.summary.as_str(),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(&needle)))
    });
    let events: Vec<EventView> = matching
        .by_ref()
        .take(EVENTS_PAGE)
        .map(|e| EventView {
            problem: e.kind.contains("fail")
                || e.kind.contains("refused")
                || e.kind.contains("error"),
            e,
        })
        .collect();
    let older = if matching.next().is_some() {
        events.last().map(|e| e.e.id)
    } else {
        None
    };
    let ctx = EventsCtx {
        layout: Layout::new(&app, "Events", "events"),
        events,
        q: q.q.trim().to_string(),
        before,
        older,
        error,
        notice: None,
    };
    page(StatusCode::OK, "events.html", &ctx)
}

// --------------------------------------------------------------- settings

#[derive(Serialize)]
struct SettingsView {
    data_dir: String,
    max: Option<u64>,
    used: u64,
    reserved: u64,
    quota_free: Option<u64>,
    fs_free: Option<u64>,
    fs_total: Option<u64>,
    entries: usize,
    max_downloads: usize,
    max_attempts: u32,
    retry_base: String,
    read_timeout: String,
    connect_timeout: String,
    sendfile: bool,
    admin: String,
    auth: &'static str,
}

/// Free and total bytes of the file system holding `path`. `statvfs(3)`
/// through libc (already a dependency for sendfile) rather than a crate
/// for one call.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable
    // memory of the right type; statvfs fills it completely on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so statvfs initialised `st`.
    let st = unsafe { st.assume_init() };
    // The field types are narrower than u64 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let (unit, avail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Some((avail * unit, blocks * unit))
}

fn secs(d: Duration) -> String {
    bty_ui_kit::human_duration(d.as_secs_f64())
}

async fn settings(State(app): State<Arc<App>>) -> Response {
    let (used, reserved, max) = app.store.usage();
    let creds = app.auth.credentials();
    let auth = if creds.is_open() {
        "open: no password set (set WITHCACHE_ADMIN_PASSWORD_HASH)"
    } else if creds.uses_default_password() {
        "password set, but it is the well-known default: change it"
    } else {
        "password set"
    };
    let fs = fs_space(&app.opts.data_dir);
    let f = &app.opts.fetch;
    let s = SettingsView {
        data_dir: app.opts.data_dir.display().to_string(),
        max,
        used,
        reserved,
        quota_free: max.map(|m| m.saturating_sub(used + reserved)),
        fs_free: fs.map(|x| x.0),
        fs_total: fs.map(|x| x.1),
        entries: app.db().entries().map(|e| e.len()).unwrap_or(0),
        max_downloads: f.max_downloads,
        max_attempts: f.max_attempts,
        retry_base: secs(f.retry_base_delay),
        read_timeout: secs(f.read_timeout),
        connect_timeout: secs(f.connect_timeout),
        sendfile: app.opts.sendfile,
        admin: creds.user().to_string(),
        auth,
    };
    page(
        StatusCode::OK,
        "settings.html",
        &minijinja::context! { layout => Layout::new(&app, "Settings", "settings"), s },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(env().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn next_is_only_a_local_ui_path() {
        assert_eq!(safe_next("/ui/misses?x=1"), "/ui/misses?x=1");
        for bad in [
            "",
            "//evil.example/ui/",
            "https://evil.example/",
            "/ui/login",
            "/api/x",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(bad), "/ui/catalog", "{bad}");
        }
    }

    #[test]
    fn fields_are_found_from_messages() {
        assert_eq!(field_of("image: must start with a letter"), Some("name"));
        assert_eq!(field_of("src: not an http(s) URL"), Some("src"));
        assert_eq!(field_of("something else"), None);
    }

    #[test]
    fn row_escapes_origin_text() {
        let html = render(
            "catalog_row.html",
            &minijinja::context! { e => minijinja::context! { name => "a", src => "<script>x</script>", state => "absent" } },
        )
        .unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
