//! The operator UI under `/ui/`: server-rendered HTML (minijinja), htmx for
//! partial updates and one SSE stream per page (`/ui/live`) that sends
//! only what changed on that page (a table row, a progress bar), never
//! whole tables.
//!
//! Every form posts plain `application/x-www-form-urlencoded` (the
//! machines import: `multipart/form-data`, for its file) and answers
//! with a redirect (success) or the same page with the messages (failure),
//! so everything works without JavaScript. Templates and static assets
//! (CSS, htmx and its SSE extension, a small script) are compiled into the
//! binary; nothing is loaded from a CDN.
//!
//! This module owns no storage of its own (event acknowledgements are the
//! `acked_at` column of the registry's `events`); it reads the registry through its own
//! queries and changes machines and images through [`crate::domain`], the
//! same path as the REST API, so both validate alike.

mod dashboard;
mod data;
mod errors;
mod events;
mod health;
mod images;
mod import;
mod live;
mod machine;
mod machine_form;
mod machines;
mod render;
mod settings;

use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub use live::open_streams;
pub use render::UiError;

/// The guard and login flow of bty-web's UI and API (`bty-http`).
pub fn gate(st: &AppState) -> bty_http::Gate {
    bty_http::Gate::new(st.auth.clone(), &render::PAGES)
}

/// The UI routes, to be merged into the main router.
pub fn router(st: AppState) -> Router<AppState> {
    let gate = gate(&st);
    let guarded = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/dashboard") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/dashboard") }))
        .route("/ui/dashboard", get(dashboard::show))
        .route("/ui/machines", get(machines::list).post(machines::register))
        .route("/ui/machines/new", get(machines::new_form))
        .route("/ui/machines/bulk", post(machines::bulk))
        .route(
            "/ui/machines/import",
            get(import::form)
                .post(import::submit)
                .layer(axum::extract::DefaultBodyLimit::max(crate::IMPORT_LIMIT)),
        )
        .route("/ui/machines/{mac}", get(machine::show).post(machine::edit))
        .route("/ui/machines/{mac}/delete", post(machine::delete))
        .route("/ui/machines/{mac}/ipxe", get(machine::ipxe_preview))
        .route("/ui/machines/{mac}/grub", get(machine::grub_preview))
        .route("/ui/images", get(images::show).post(images::add))
        .route("/ui/images/{name}/delete", post(images::delete))
        .route("/ui/images/refresh", post(images::refresh))
        .route("/ui/events", get(events::list))
        .route("/ui/events/ack", post(events::ack))
        .route("/ui/settings", get(settings::show))
        .route(
            "/ui/settings/sticks/{id}/revoke",
            post(settings::revoke_stick),
        )
        .route("/ui/settings/backups", post(settings::back_up_now))
        .route("/ui/live", get(live::stream));
    gate.ui(guarded)
}

/// Whether a request was made by htmx (it sends `HX-Request: true`).
fn is_htmx(req_headers: &axum::http::HeaderMap) -> bool {
    req_headers.get("hx-request").is_some_and(|v| v == "true")
}
