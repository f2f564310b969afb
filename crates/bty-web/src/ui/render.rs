//! bty-web's templates and brand on the shared kit (`bty-http`: the
//! environment, the page shell's layout, the error page), human
//! formatting and the HTML error type.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::db::sql;
use crate::state::Inner;

pub use bty_http::ui::no_store;
pub use bty_http::Layout;
pub use bty_ui_kit::{human_bytes, human_duration};

/// Every template of bty-web, compiled in. `.html` names turn on HTML
/// auto-escaping. The shell, the macros and the login and error pages
/// come from `bty-ui-kit`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../ui/templates/base.html")),
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
    (
        "machines_import.html",
        include_str!("../../ui/templates/machines_import.html"),
    ),
];

/// Who bty-web is on its pages.
pub static BRAND: bty_http::Brand = bty_http::Brand {
    product: "bty",
    product_long: "bty-web",
    home: "/ui/dashboard",
    home_label: "the dashboard",
    nav: &[
        ("dashboard", "Dashboard"),
        ("machines", "Machines"),
        ("images", "Images"),
        ("events", "Events"),
        ("settings", "Settings"),
    ],
    version: env!("CARGO_PKG_VERSION"),
    realm: "bty-web",
};

/// bty-web's template environment.
pub static PAGES: LazyLock<bty_http::Templates> = LazyLock::new(|| {
    bty_http::Templates::new(&BRAND, TEMPLATES, |env| {
        env.add_filter("hexmac", |s: String| s.replace([':', '-'], ""));
        env.add_filter("short", |s: Option<String>, n: usize| {
            s.map(|s| s.chars().take(n).collect::<String>())
                .unwrap_or_default()
        });
    })
});

impl bty_http::Site for Inner {
    fn brand(&self) -> &'static bty_http::Brand {
        &BRAND
    }
    fn credentials(&self) -> &bty_auth::Credentials {
        self.auth.credentials()
    }
}

/// Render `name` with `ctx`; `block` renders only that block.
pub fn render(name: &str, ctx: &impl Serialize, block: Option<&str>) -> Result<String, UiError> {
    PAGES.render(name, ctx, block).map_err(UiError::internal)
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

impl From<sql::Error> for UiError {
    fn from(e: sql::Error) -> Self {
        UiError::internal(format!("database: {e}"))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        PAGES.error_page(self.status, &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bty_ui_kit::utc_text;

    #[test]
    fn every_template_compiles() {
        // Templates are compiled when the environment is built.
        let names = PAGES.names();
        for (name, _) in TEMPLATES {
            assert!(names.contains(name), "{name}");
        }
        assert!(names.contains(&"login.html") && names.contains(&"error.html"));
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
