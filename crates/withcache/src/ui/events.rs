//! The Events page (`/ui/events`): what happened, newest first,
//! searchable, 50 per page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use bty_http::Layout;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{broken, page};
use crate::app::App;
use crate::db::EventRow;

/// Events the page searches (newest first) and shows per page.
const EVENTS_SCANNED: u32 = 2000;
const EVENTS_PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub(super) struct EventsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Serialize)]
struct EventView {
    #[serde(flatten)]
    e: EventRow,
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

pub(super) async fn show(State(app): State<Arc<App>>, Query(q): Query<EventsQuery>) -> Response {
    let (before, error) = cursor(q.before.as_deref());
    let all = match app.db().events(EVENTS_SCANNED, None) {
        Ok(e) => e,
        Err(e) => return broken(&e),
    };
    let needle = q.q.trim().to_lowercase();
    let mut matching = all
        .into_iter()
        .filter(|e| before.is_none_or(|b| e.id < b) && mentions(e, &needle));
    let events: Vec<EventView> = matching
        .by_ref()
        .take(EVENTS_PAGE)
        .map(EventView::of)
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

/// The page cursor, or none and why when it is not a number.
fn cursor(before: Option<&str>) -> (Option<i64>, Option<String>) {
    match before.map(str::trim) {
        None | Some("") => (None, None),
        Some(b) => match b.parse::<i64>() {
            Ok(v) => (Some(v), None),
            Err(_) => (
                None,
                Some(format!(
                    "The page cursor {b:?} is not a number; showing the newest events."
                )),
            ),
        },
    }
}

/// Whether any field of `e` contains `needle` (lowercase; empty matches).
fn mentions(e: &EventRow, needle: &str) -> bool {
    needle.is_empty()
        || [
            e.kind.as_str(),
            e.subject.as_str(),
            e.actor.as_str(),
            e.source_ip.as_deref().unwrap_or(""),
            e.summary.as_str(),
        ]
        .iter()
        .any(|f| f.to_lowercase().contains(needle))
}

impl EventView {
    fn of(e: EventRow) -> EventView {
        EventView {
            problem: e.kind.contains("fail")
                || e.kind.contains("refused")
                || e.kind.contains("error"),
            e,
        }
    }
}
