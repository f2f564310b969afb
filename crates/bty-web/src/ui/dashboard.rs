//! `GET /ui/dashboard`: counts, open flashes, recent events and health.

use crate::db::sql::{self, Conn, Lock};
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
    let (counts, flashes, events, unacked) = st.db.call(load).await??;
    let view = DashboardView {
        layout: Layout::new(&st, "Dashboard", "dashboard"),
        counts,
        flashes,
        events,
        health: health(&st, unacked).await,
    };
    page_or_partial(is_htmx(&headers), "dashboard.html", &view, None)
}

/// The counts, open flashes, last 10 events and unacknowledged failures.
fn load(c: &mut Conn) -> sql::Result<(Counts, Vec<ActiveFlash>, Vec<EventView>, u64)> {
    let recent = EventQuery {
        limit: 10,
        ..Default::default()
    };
    // One snapshot: the counts and the lists agree with each other.
    let tx = c.transaction(Lock::Read)?;
    let out = (
        data::counts(&tx)?,
        data::active_flashes(&tx, 50)?,
        data::events(&tx, &recent)?,
        data::unacked_problems(&tx)?,
    );
    tx.commit()?;
    Ok(out)
}

/// withcache, the static catalog, the TFTP sidecar and failures.
async fn health(st: &AppState, unacked: u64) -> Vec<Health> {
    let snap = st.catalog.snapshot();
    let wc = st
        .catalog
        .withcache_url()
        .map(|u| format!("{u}/ui/catalog"));
    let failures = Health {
        name: "Failures".into(),
        level: if unacked > 0 { "warn" } else { "ok" },
        text: if unacked > 0 {
            format!("{unacked} failure event(s) not acknowledged")
        } else {
            "no unacknowledged failures".into()
        },
        link: Some("/ui/events?only=failed".into()),
    };
    vec![
        source_health("withcache", &snap.withcache, wc),
        source_health("Static catalog", &snap.static_file, None),
        tftp_health().await,
        failures,
    ]
}
