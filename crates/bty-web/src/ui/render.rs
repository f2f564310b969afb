//! Templates, the page shell, human formatting and the HTML error type.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::state::AppState;

pub use bty_ui_kit::{human_bytes, human_duration};

/// Every template, compiled in. `.html` names turn on HTML auto-escaping.
/// The shell (`shell.html`) and `macros.html` come from `bty-ui-kit`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../ui/templates/base.html")),
    ("login.html", include_str!("../../ui/templates/login.html")),
    ("error.html", include_str!("../../ui/templates/error.html")),
    (
        "dashboard.html",
        include_str!("../../ui/templates/dashboard.html"),
    ),
    (
        "machines.html",
        include_str!("../../ui/templates/machines.html"),
    ),
    (
        "machine_row.html",
        include_str!("../../ui/templates/machine_row.html"),
    ),
    (
        "machine_form.html",
        include_str!("../../ui/templates/machine_form.html"),
    ),
    (
        "machine_new.html",
        include_str!("../../ui/templates/machine_new.html"),
    ),
    (
        "machine.html",
        include_str!("../../ui/templates/machine.html"),
    ),
    (
        "machine_status.html",
        include_str!("../../ui/templates/machine_status.html"),
    ),
    (
        "progress.html",
        include_str!("../../ui/templates/progress.html"),
    ),
    (
        "event_row.html",
        include_str!("../../ui/templates/event_row.html"),
    ),
    (
        "flashes.html",
        include_str!("../../ui/templates/flashes.html"),
    ),
    (
        "counts.html",
        include_str!("../../ui/templates/counts.html"),
    ),
    (
        "images.html",
        include_str!("../../ui/templates/images.html"),
    ),
    (
        "events.html",
        include_str!("../../ui/templates/events.html"),
    ),
    (
        "settings.html",
        include_str!("../../ui/templates/settings.html"),
    ),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        bty_ui_kit::install(&mut env);
        env.add_filter("hexmac", |s: String| s.replace([':', '-'], ""));
        env.add_filter("short", |s: Option<String>, n: usize| {
            s.map(|s| s.chars().take(n).collect::<String>())
                .unwrap_or_default()
        });
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("built-in UI template {name} is broken: {e:#}"));
        }
        env
    })
}

/// What the page shell needs; every page context carries it as `layout`.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// `<title>` and the heading.
    pub title: String,
    /// Which nav entry is current.
    pub nav: &'static str,
    /// The logged-in user (empty in open mode).
    pub user: String,
    /// No password is configured: the UI is open to everybody.
    pub open_mode: bool,
    /// The well-known default password is in use.
    pub default_password: bool,
    /// bty-web's version.
    pub version: &'static str,
    /// Brand and `<title>` suffix (the shared shell's `product`).
    pub product: &'static str,
    /// The brand's link.
    pub home: &'static str,
    /// The navigation entries: `/ui/{id}` and their labels.
    pub nav_items: &'static [(&'static str, &'static str)],
    /// The footer's name.
    pub product_long: &'static str,
}

/// bty-web's navigation.
const NAV: &[(&str, &str)] = &[
    ("dashboard", "Dashboard"),
    ("machines", "Machines"),
    ("images", "Images"),
    ("events", "Events"),
    ("settings", "Settings"),
];

impl Layout {
    /// The shell for a page of `st`.
    pub fn new(st: &AppState, title: impl Into<String>, nav: &'static str) -> Layout {
        let c = st.auth.credentials();
        let mut l = Layout::bare(title, nav);
        if !c.is_open() {
            l.user = c.user().to_string();
        }
        l.open_mode = c.is_open();
        l.default_password = !c.is_open() && c.uses_default_password();
        l
    }

    /// The shell without a user (error pages).
    pub fn bare(title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            user: String::new(),
            open_mode: false,
            default_password: false,
            version: env!("CARGO_PKG_VERSION"),
            product: "bty",
            home: "/ui/dashboard",
            nav_items: NAV,
            product_long: "bty-web",
        }
    }
}

/// Render `name` with `ctx`; `block` renders only that block.
pub fn render(name: &str, ctx: &impl Serialize, block: Option<&str>) -> Result<String, UiError> {
    let t = env().get_template(name).map_err(UiError::internal)?;
    let value = Value::from_serialize(ctx);
    match block {
        None => t.render(value).map_err(UiError::internal),
        Some(b) => t
            .render_captured_to(value, std::io::sink())
            .and_then(|mut c| c.with_state_mut(|s| s.render_block(b)))
            .map_err(UiError::internal),
    }
}

/// A full page for a normal request; only the `main` block for an htmx
/// request (kanidm's pattern), with `HX-Push-Url` so the address bar,
/// reloads and bookmarks follow.
pub fn page_or_partial(
    hx: bool,
    name: &str,
    ctx: &impl Serialize,
    push_url: Option<&str>,
) -> Result<Response, UiError> {
    let html = render(name, ctx, hx.then_some("main"))?;
    let mut r = Html(html).into_response();
    if let Some(u) = push_url.filter(|_| hx) {
        if let Ok(v) = HeaderValue::from_str(u) {
            r.headers_mut().insert("hx-push-url", v);
        }
    }
    no_store(&mut r);
    Ok(r)
}

/// Pages show live state: never from a cache.
pub fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTML error page with the status, the message and a request id that
/// is also in the log.
#[derive(Debug)]
pub struct UiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What the operator sees.
    pub message: String,
}

impl UiError {
    /// 404.
    pub fn not_found(m: impl Into<String>) -> UiError {
        UiError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> UiError {
        UiError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> UiError {
        UiError {
            status: StatusCode::FORBIDDEN,
            message: m.into(),
        }
    }
    /// 500; the detail goes to the log only.
    pub fn internal(e: impl std::fmt::Display) -> UiError {
        UiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{e:#}"),
        }
    }
}

impl From<crate::db::DbGone> for UiError {
    fn from(e: crate::db::DbGone) -> Self {
        UiError::internal(e)
    }
}

impl From<rusqlite::Error> for UiError {
    fn from(e: rusqlite::Error) -> Self {
        UiError::internal(format!("database: {e}"))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let id = hex::encode(rand::random::<[u8; 4]>());
        let shown = if self.status.is_server_error() {
            tracing::error!(request_id = %id, "UI error: {}", self.message);
            format!("bty-web hit an internal error. Its log has the details under request id {id}.")
        } else {
            tracing::debug!(request_id = %id, "UI refused: {}", self.message);
            self.message.clone()
        };
        #[derive(Serialize)]
        struct Ctx<'a> {
            layout: Layout,
            status: u16,
            reason: &'a str,
            message: &'a str,
            request_id: &'a str,
        }
        let ctx = Ctx {
            layout: Layout::bare(format!("Error {}", self.status.as_u16()), ""),
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or(""),
            message: &shown,
            request_id: &id,
        };
        let body = render("error.html", &ctx, None)
            .unwrap_or_else(|_| format!("<h1>{}</h1><p>request id {id}</p>", self.status));
        (self.status, Html(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bty_ui_kit::utc_text;

    #[test]
    fn every_template_compiles() {
        let e = env();
        for (name, _) in TEMPLATES {
            assert!(e.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_duration(95.0), "1m 35s");
        assert_eq!(human_duration(7300.0), "2h 01m");
        assert_eq!(utc_text("2026-05-17T20:21:09Z"), "2026-05-17 20:21:09 UTC");
        assert_eq!(
            utc_text("2026-05-17T22:21:09+02:00"),
            "2026-05-17 20:21:09 UTC"
        );
    }
}
