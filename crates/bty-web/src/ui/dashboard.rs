//! `GET /ui/dashboard`: counts, open flashes, recent events and health.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use super::data::{self, ActiveFlash, Counts, EventQuery, EventView};
use super::health::{source_health, tftp_health, Health};
use super::is_htmx;
use super::render::{page_or_partial, Layout, UiError};
use crate::state::AppState;

#[derive(Serialize)]
struct DashboardView {
    layout: Layout,
    counts: Counts,
    flashes: Vec<ActiveFlash>,
    events: Vec<EventView>,
    health: Vec<Health>,
}

/// `GET /ui/dashboard`.
pub async fn show(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, UiError> {
    let (counts, flashes, events, unacked) = st
        .db
        .call(|c| -> rusqlite::Result<_> {
            Ok((
                data::counts(c)?,
                data::active_flashes(c, 50)?,
                data::events(
                    c,
                    &EventQuery {
                        limit: 10,
                        ..Default::default()
                    },
                )?,
                data::unacked_problems(c)?,
            ))
        })
        .await??;
    let snap = st.catalog.snapshot();
    let wc = st
        .catalog
        .withcache_url()
        .map(|u| format!("{u}/ui/catalog"));
    let mut health = vec![
        source_health("withcache", &snap.withcache, wc),
        source_health("Static catalog", &snap.static_file, None),
        tftp_health().await,
    ];
    health.push(Health {
        name: "Failures".into(),
        level: if unacked > 0 { "warn" } else { "ok" },
        text: if unacked > 0 {
            format!("{unacked} failure event(s) not acknowledged")
        } else {
            "no unacknowledged failures".into()
        },
        link: Some("/ui/events?only=failed".into()),
    });
    let view = DashboardView {
        layout: Layout::new(&st, "Dashboard", "dashboard"),
        counts,
        flashes,
        events,
        health,
    };
    page_or_partial(is_htmx(&headers), "dashboard.html", &view, None)
}
