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
    let (mac, error) = mac_filter(p.mac.as_deref());
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
    let (events, older) = page(st.db.call(move |c| data::events(c, &query)).await??);
    let view = EventsView {
        layout: Layout::new(&st, "Events", "events"),
        events,
        q: p.q.unwrap_or_default(),
        only,
        mac: mac.unwrap_or_default(),
        before: p.before,
        older,
        error,
        notice: acked_notice(p.acked.as_deref()),
        return_to: uri
            .path_and_query()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
    };
    page_or_partial(is_htmx(&headers), "events.html", &view, None)
}

/// The MAC filter, or the reason a typed one is ignored.
fn mac_filter(raw: Option<&str>) -> (Option<String>, Option<String>) {
    match raw.filter(|m| !m.is_empty()).map(|m| (m, m.parse::<Mac>())) {
        None => (None, None),
        Some((_, Ok(m))) => (Some(m.to_string()), None),
        Some((m, Err(e))) => (
            None,
            Some(format!("MAC filter {m:?}: {e}; showing all machines")),
        ),
    }
}

/// One page of events (fetched one longer) and the cursor of the next.
fn page(mut evs: Vec<EventView>) -> (Vec<EventView>, Option<i64>) {
    if evs.len() as u32 <= EVENTS_PAGE {
        return (evs, None);
    }
    evs.truncate(EVENTS_PAGE as usize);
    let older = evs.last().map(|e| e.event.id);
    (evs, older)
}

/// The notice after an acknowledgement (`?acked=N`).
fn acked_notice(acked: Option<&str>) -> Option<String> {
    let n = acked?.parse::<i64>().ok()?;
    Some(format!("{} event(s) changed.", n.abs()))
}

/// `POST /ui/events/ack`: `id` repeated, `action` = `ack` or `unack`,
/// `return_to` (a local Events URL).
pub async fn ack(
    State(st): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(pairs) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let ids = ack_ids(&pairs)?;
    let on = match get("action") {
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
    let back = get("return_to")
        .filter(|v| v.starts_with("/ui/events") && !v.contains("//"))
        .unwrap_or("/ui/events");
    let back = strip_param(back, "acked");
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}acked={n}")).into_response())
}

/// The selected event ids: at least one, each a number.
fn ack_ids(pairs: &[(String, String)]) -> Result<Vec<i64>, UiError> {
    let ids = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| {
            v.parse::<i64>().map_err(|_| {
                UiError::bad_request(format!(
                    "event id {v:?} is not a number; nothing was changed"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(UiError::bad_request(
            "Select at least one event (the check boxes in the first column); nothing was changed.",
        ));
    }
    Ok(ids)
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
