//! The Events page: the event log, filtered and paged, and the
//! acknowledgement of events.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::Mac;
use serde::{Deserialize, Serialize};

use super::data::{self, EventQuery, EventView};
use super::is_htmx;
use super::render::{page_or_partial, Layout, UiError};
use crate::state::AppState;

/// `GET /ui/events` query.
#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    only: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    acked: Option<String>,
}

#[derive(Serialize)]
struct EventsView {
    layout: Layout,
    events: Vec<EventView>,
    q: String,
    only: String,
    mac: String,
    before: Option<i64>,
    older: Option<i64>,
    error: Option<String>,
    notice: Option<String>,
    return_to: String,
}

/// Page size of the Events page.
const EVENTS_PAGE: u32 = 50;

/// `GET /ui/events`.
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(p): Query<EventsParams>,
) -> Result<Response, UiError> {
    let mut error = None;
    let mac = match p.mac.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => match m.parse::<Mac>() {
            Ok(m) => Some(m.to_string()),
            Err(e) => {
                error = Some(format!("MAC filter {m:?}: {e}; showing all machines"));
                None
            }
        },
    };
    let only = match p.only.as_deref() {
        Some(o @ ("failed" | "unacked")) => o.to_string(),
        _ => String::new(),
    };
    let query = EventQuery {
        q: p.q.clone().unwrap_or_default().chars().take(100).collect(),
        only: only.clone(),
        mac: mac.clone(),
        before_id: p.before,
        limit: EVENTS_PAGE + 1,
    };
    let mut evs = st.db.call(move |c| data::events(c, &query)).await??;
    let older = if evs.len() as u32 > EVENTS_PAGE {
        evs.truncate(EVENTS_PAGE as usize);
        evs.last().map(|e| e.event.id)
    } else {
        None
    };
    let notice = p
        .acked
        .as_deref()
        .and_then(|n| n.parse::<i64>().ok())
        .map(|n| format!("{} event(s) changed.", n.abs()));
    let view = EventsView {
        layout: Layout::new(&st, "Events", "events"),
        events: evs,
        q: p.q.unwrap_or_default(),
        only,
        mac: mac.unwrap_or_default(),
        before: p.before,
        older,
        error,
        notice,
        return_to: uri
            .path_and_query()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
    };
    page_or_partial(is_htmx(&headers), "events.html", &view, None)
}

/// `POST /ui/events/ack`: `id` repeated, `action` = `ack` or `unack`,
/// `return_to` (a local Events URL).
pub async fn ack(
    State(st): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(pairs) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let mut ids = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "id") {
        ids.push(v.parse::<i64>().map_err(|_| {
            UiError::bad_request(format!(
                "event id {v:?} is not a number; nothing was changed"
            ))
        })?);
    }
    if ids.is_empty() {
        return Err(UiError::bad_request(
            "Select at least one event (the check boxes in the first column); nothing was changed.",
        ));
    }
    let on = match pairs
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.as_str())
    {
        Some("ack") | None => true,
        Some("unack") => false,
        Some(other) => {
            return Err(UiError::bad_request(format!(
                "unknown action {other:?} (ack or unack); nothing was changed"
            )))
        }
    };
    let now = crate::db::now();
    let n = st.db.call(move |c| data::ack(c, &ids, on, &now)).await??;
    let back = pairs
        .iter()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.as_str())
        .filter(|v| v.starts_with("/ui/events") && !v.contains("//"))
        .unwrap_or("/ui/events");
    let back = strip_param(back, "acked");
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}acked={n}")).into_response())
}

fn strip_param(url: &str, name: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((path, q)) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| !kv.starts_with(&format!("{name}=")))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip() {
        assert_eq!(
            strip_param("/ui/events?q=a&acked=3", "acked"),
            "/ui/events?q=a"
        );
        assert_eq!(strip_param("/ui/events?acked=3", "acked"), "/ui/events");
    }
}
