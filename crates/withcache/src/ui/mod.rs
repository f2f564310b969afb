//! The operator UI under `/ui/`, in the same look as bty-web's: the page
//! shell, assets, login flow and error page come from the kit
//! (`bty-ui-kit`, `bty-http`), the pages are server-rendered minijinja
//! compiled into the binary (nothing from a CDN). One file per page:
//! [`catalog`] (with its live stream in [`live`]), [`misses`],
//! [`events`], [`settings`].
//!
//! Every form posts plain `application/x-www-form-urlencoded` and answers
//! with a redirect to the page with a notice (success) or the same page
//! with the message and the typed values (failure, nothing saved), so
//! everything works without JavaScript. A refusal that is about one field
//! (`Error::Invalid { field }`) is shown next to that field.

mod catalog;
mod events;
mod live;
mod misses;
mod settings;

use std::sync::{Arc, LazyLock};

use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bty_http::{Brand, Gate, Templates};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::Error;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../ui/templates/base.html")),
    (
        "notices.html",
        include_str!("../../ui/templates/notices.html"),
    ),
    ("usage.html", include_str!("../../ui/templates/usage.html")),
    (
        "catalog_row.html",
        include_str!("../../ui/templates/catalog_row.html"),
    ),
    (
        "catalog.html",
        include_str!("../../ui/templates/catalog.html"),
    ),
    (
        "misses.html",
        include_str!("../../ui/templates/misses.html"),
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

/// Who withcache is on its pages.
pub(crate) static BRAND: Brand = Brand {
    product: "withcache",
    product_long: "withcache",
    home: "/ui/catalog",
    home_label: "the catalog",
    nav: &[
        ("catalog", "Catalog"),
        ("misses", "Misses"),
        ("events", "Events"),
        ("settings", "Settings"),
    ],
    version: env!("CARGO_PKG_VERSION"),
    realm: "withcache",
};

/// withcache's template environment.
pub(crate) static PAGES: LazyLock<Templates> =
    LazyLock::new(|| Templates::new(&BRAND, TEMPLATES, |_| {}));

impl bty_http::Site for App {
    fn brand(&self) -> &'static Brand {
        &BRAND
    }
    fn credentials(&self) -> &bty_auth::Credentials {
        self.auth.credentials()
    }
}

pub(crate) fn routes(gate: &Gate) -> axum::Router<Arc<App>> {
    let guarded = axum::Router::new()
        .route("/ui/catalog", get(catalog::show))
        .route("/ui/catalog/live", get(live::stream))
        .route("/ui/catalog/add", post(catalog::add))
        .route("/ui/catalog/download", post(catalog::download))
        .route("/ui/catalog/delete", post(catalog::delete))
        .route("/ui/catalog/import", post(catalog::import))
        .route("/ui/misses", get(misses::show))
        .route("/ui/misses/fetch", post(misses::fetch))
        .route("/ui/misses/dismiss", post(misses::dismiss))
        .route("/ui/events", get(events::show))
        .route("/ui/settings", get(settings::show));
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/catalog") }))
        .merge(gate.ui(guarded))
}

/// A whole page (never cached).
fn page(status: StatusCode, name: &str, ctx: &impl Serialize) -> Response {
    PAGES.page(status, name, ctx)
}

/// The status and the operator's message for a failed form. Internal
/// failures are logged with their detail and shown as a pointer to the log.
fn failure(e: &Error) -> (StatusCode, String) {
    let status = e.status();
    let msg = match e {
        Error::Invalid { .. } | Error::BadRequest(_) => format!("{e}. Nothing was saved."),
        Error::NotFound(m) => format!("{m}. Nothing was changed."),
        _ if e.is_internal() => {
            tracing::error!(error = %e, "UI action failed");
            "withcache hit an internal error; its log has the details. Nothing was changed.".into()
        }
        _ => e.to_string(),
    };
    (status, msg)
}

/// A page that could not be built: the error page.
fn broken(e: &Error) -> Response {
    let (status, msg) = failure(e);
    PAGES.error_page(status, &msg)
}

#[derive(Deserialize, Default)]
pub(crate) struct DoneQuery {
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
        bty_http::encode::query_value(what)
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        // Building the environment parses every template, or panics.
        let kit = ["shell.html", "macros.html", "login.html", "error.html"];
        assert_eq!(PAGES.names().len(), TEMPLATES.len() + kit.len());
    }

    #[test]
    fn row_escapes_origin_text() {
        let html = PAGES
            .render(
                "catalog_row.html",
                &minijinja::context! { e => minijinja::context! { name => "a", src => "<script>x</script>", state => "absent" } },
                None,
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }

    #[test]
    fn failures_keep_internals_out() {
        let e = Error::Config("secret path /x".into());
        let (status, msg) = failure(&e);
        assert_eq!(status, 500);
        assert!(!msg.contains("secret"), "{msg}");
        let e = Error::invalid("src", "src: required");
        assert_eq!(failure(&e).1, "src: required. Nothing was saved.");
    }
}
