//! `GET /ui/live`: the one SSE stream of a UI page, scoped to what that
//! page shows, sending ready-to-swap HTML fragments.
//!
//! The page says what it shows (`view=machines&keys=<rows on this page>`,
//! `view=machine&mac=...`, `view=dashboard`) and gets only those
//! fragments: a list row for a machine on the page (never a row that is
//! not, so paging, sorting and filters stay put), a progress bar, an event
//! row. Progress is coalesced per machine and sent at most once per tick,
//! so twenty machines reporting several times a second cost a few KB/s per
//! browser. Changes elsewhere become one "reload to see" notice.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bty_proto::Mac;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::data::{self, EventView, ProgressView};
use super::machine::{status_view, StatusView};
use super::machines::row_html;
use super::render::{render, UiError};
use crate::db::{machines, sql};
use crate::domain::bus::{BusMsg, ProgressMsg};
use crate::state::AppState;

/// Most rows one list stream watches (the largest page size).
const MAX_KEYS: usize = 100;
/// Coalescing period of the list and the dashboard.
const TICK_LIST: Duration = Duration::from_millis(1000);
/// Coalescing period of the detail page (its bar should look smooth).
const TICK_DETAIL: Duration = Duration::from_millis(500);

/// Live streams open right now (shown on the Settings page).
static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many `/ui/live` streams are open.
pub fn open_streams() -> usize {
    OPEN.load(std::sync::atomic::Ordering::Relaxed)
}

struct OpenGuard;

impl OpenGuard {
    fn new() -> OpenGuard {
        OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenGuard
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `GET /ui/live` query.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    view: String,
    #[serde(default)]
    keys: Option<String>,
    #[serde(default)]
    mac: Option<String>,
}

enum View {
    /// Machine list rows, by `aa:bb:..`.
    Machines(BTreeSet<String>),
    /// One machine's detail page.
    Machine(Mac),
    Dashboard,
}

fn parse_view(q: &LiveQuery) -> Result<View, UiError> {
    match q.view.as_str() {
        "machines" => row_keys(q.keys.as_deref().unwrap_or("")).map(View::Machines),
        "machine" => {
            let raw = q.mac.as_deref().unwrap_or("");
            raw.parse()
                .map(View::Machine)
                .map_err(|e| UiError::bad_request(format!("live: mac {raw:?}: {e}")))
        }
        "dashboard" => Ok(View::Dashboard),
        other => Err(UiError::bad_request(format!(
            "live: unknown view {other:?} (machines, machine or dashboard)"
        ))),
    }
}

/// The list rows a page shows (`aabb..,ccdd..`), at most [`MAX_KEYS`].
fn row_keys(keys: &str) -> Result<BTreeSet<String>, UiError> {
    let mut set = BTreeSet::new();
    for k in keys.split(',').filter(|k| !k.is_empty()) {
        let mac: Mac = k
            .parse()
            .map_err(|e| UiError::bad_request(format!("live: key {k:?}: {e}")))?;
        set.insert(mac.to_string());
        if set.len() > MAX_KEYS {
            return Err(UiError::bad_request(format!(
                "live: at most {MAX_KEYS} rows"
            )));
        }
    }
    Ok(set)
}

/// Render the progress fragment listening on `swap`.
pub fn progress_html(p: &ProgressView, swap: &str, compact: bool) -> Result<String, UiError> {
    #[derive(Serialize)]
    struct Ctx<'a> {
        p: &'a ProgressView,
        swap: &'a str,
        compact: bool,
    }
    render("progress.html", &Ctx { p, swap, compact }, None).map(|s| s.trim().to_string())
}

/// Render one event row.
pub fn event_html(e: &EventView) -> Result<String, UiError> {
    #[derive(Serialize)]
    struct Ctx<'a> {
        e: &'a EventView,
    }
    render("event_row.html", &Ctx { e }, None).map(|s| s.trim().to_string())
}

/// `GET /ui/live`.
pub async fn stream(
    State(st): State<AppState>,
    Query(q): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    let view = parse_view(&q)?;
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    tokio::spawn(pump(st, view, tx));
    let s = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    );
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(crate::sse::KEEP_ALIVE)))
}

fn ev(name: &str, html: String) -> SseEvent {
    // SSE splits data on line ends; a stray CR would end a line early.
    SseEvent::default().event(name).data(html.replace('\r', ""))
}

#[derive(Default)]
struct Pending {
    progress: BTreeMap<String, ProgressMsg>,
    machines: BTreeSet<String>,
    elsewhere: BTreeSet<String>,
    dashboard: bool,
}

/// Read the bus, keep what the page shows, send fragments until the
/// browser goes away or the server stops.
async fn pump(st: AppState, view: View, tx: mpsc::Sender<SseEvent>) {
    let _open = OpenGuard::new();
    let mut bus = st.bus.subscribe();
    let mut stop = st.stop.clone();
    let mut tick = tokio::time::interval(match view {
        View::Machine(_) => TICK_DETAIL,
        _ => TICK_LIST,
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut p = Pending::default();
    if tx
        .send(SseEvent::default().event("hello").data("live"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            _ = tx.closed() => break,
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            m = bus.recv() => match m {
                Ok(msg) => {
                    for e in take(&view, msg, &mut p) {
                        if tx.send(e).await.is_err() { return; }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let html = notice(&format!(
                        "{n} live updates were missed (this browser fell behind). Reload the page for the current state."
                    ));
                    if tx.send(ev("notice", html)).await.is_err() { return; }
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                for e in flush(&st, &view, &mut p).await {
                    if tx.send(e).await.is_err() { return; }
                }
            }
        }
    }
}

fn notice(text: &str) -> String {
    // Server-made text (MACs and counts), escaped all the same.
    let text = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    format!(
        "<div id=\"live-notice\" class=\"notice info\" sse-swap=\"notice\" hx-swap=\"outerHTML\" \
         role=\"status\">{text} <a href=\"\">Reload</a></div>"
    )
}

/// Note a bus message; returns what must go out at once (event rows).
fn take(view: &View, msg: BusMsg, p: &mut Pending) -> Vec<SseEvent> {
    let mut out = Vec::new();
    match (view, msg) {
        (View::Machines(keys), BusMsg::Machine(m)) => {
            if keys.contains(&m.mac) {
                p.progress.remove(&m.mac);
                p.machines.insert(m.mac);
            } else {
                p.elsewhere.insert(m.mac);
            }
        }
        (View::Machines(keys), BusMsg::Progress(g))
            if keys.contains(&g.mac) && !p.machines.contains(&g.mac) =>
        {
            p.progress.insert(g.mac.clone(), g);
        }
        (View::Machine(mac), BusMsg::Machine(m)) if m.mac == mac.to_string() => {
            p.progress.clear();
            p.machines.insert(m.mac);
        }
        (View::Machine(mac), BusMsg::Progress(g))
            if g.mac == mac.to_string() && p.machines.is_empty() =>
        {
            p.progress.insert(g.mac.clone(), g);
        }
        (View::Machine(mac), BusMsg::Event(e)) if e.mac.as_deref() == Some(&mac.to_string()) => {
            if let Ok(h) = event_html(&EventView::new(e, false)) {
                out.push(ev("event", h));
            }
        }
        (View::Dashboard, BusMsg::Machine(_)) => p.dashboard = true,
        (View::Dashboard, BusMsg::Progress(g)) => {
            p.progress.insert(g.mac.clone(), g);
        }
        (View::Dashboard, BusMsg::Event(e)) => {
            if let Ok(h) = event_html(&EventView::new(e, false)) {
                out.push(ev("event", h));
            }
        }
        _ => {}
    }
    out
}

/// Send what accumulated since the last tick.
async fn flush(st: &AppState, view: &View, p: &mut Pending) -> Vec<SseEvent> {
    match view {
        View::Machines(_) => flush_rows(st, p).await,
        View::Machine(mac) => flush_status(st, *mac, p).await,
        View::Dashboard => flush_dashboard(st, p).await,
    }
}

/// The list: changed rows, progress bars, a notice for changes elsewhere.
async fn flush_rows(st: &AppState, p: &mut Pending) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let macs: Vec<String> = std::mem::take(&mut p.machines).into_iter().collect();
    if !macs.is_empty() {
        let rows = st
            .db
            .call(
                move |c| -> sql::Result<Vec<(String, Option<data::RowView>)>> {
                    macs.into_iter()
                        .map(|m| Ok((m.clone(), data::row_of(c, &m)?)))
                        .collect()
                },
            )
            .await;
        if let Ok(Ok(rows)) = rows {
            out.extend(rows.into_iter().map(|(mac, row)| row_event(&mac, row)));
        }
    }
    for (mac, g) in std::mem::take(&mut p.progress) {
        let swap = format!("prog-{}", mac.replace(':', ""));
        if let Ok(h) = progress_html(&ProgressView::from_msg(&g), &swap, true) {
            out.push(ev(&swap, h));
        }
    }
    out.extend(elsewhere(p));
    out
}

/// A list row again, or a note that its machine was deleted.
fn row_event(mac: &str, row: Option<data::RowView>) -> SseEvent {
    let key = mac.replace(':', "");
    let html = match row {
        Some(r) => row_html(&r).unwrap_or_default(),
        None => format!(
            "<tr id=\"m-{key}\" class=\"gone\"><td colspan=\"9\">{mac} was deleted.</td></tr>"
        ),
    };
    ev(&format!("row-{key}"), html)
}

/// One notice for the machines that changed but are not on this page.
fn elsewhere(p: &mut Pending) -> Option<SseEvent> {
    let n = p.elsewhere.len();
    let first = std::mem::take(&mut p.elsewhere).into_iter().next()?;
    let text = if n == 1 {
        format!("Machine {first} changed outside this page (new, or not shown by this filter).")
    } else {
        format!("{n} machines changed outside this page (new, or not shown by this filter).")
    };
    Some(ev("notice", notice(&text)))
}

/// The detail page: its status fragment again, or its progress bar.
async fn flush_status(st: &AppState, mac: Mac, p: &mut Pending) -> Vec<SseEvent> {
    let mut out = Vec::new();
    if !p.machines.is_empty() {
        p.machines.clear();
        out.extend(status_event(st, mac).await);
    }
    for (_, g) in std::mem::take(&mut p.progress) {
        if let Ok(h) = progress_html(&ProgressView::from_msg(&g), "progress", false) {
            out.push(ev("progress", h));
        }
    }
    out
}

/// The machine's status fragment, or a note that it was deleted (none
/// when the database could not be read).
async fn status_event(st: &AppState, mac: Mac) -> Option<SseEvent> {
    let sv = st
        .db
        .call(move |c| -> sql::Result<_> {
            match machines::get(c, mac)? {
                Some(m) => Ok(Some(status_view(c, &m)?)),
                None => Ok(None),
            }
        })
        .await;
    let html = match sv.ok()?.ok()? {
        Some(s) => render("machine_status.html", &StatusCtx { status: &s }, None).unwrap_or_default(),
        None => format!(
            "<section id=\"status\" class=\"card\"><p class=\"notice error\">{mac} was deleted.</p></section>"
        ),
    };
    Some(ev("status", html))
}

/// The dashboard: counts and open flashes again, or progress bars.
async fn flush_dashboard(st: &AppState, p: &mut Pending) -> Vec<SseEvent> {
    let mut out = Vec::new();
    if std::mem::take(&mut p.dashboard) {
        if let Some(fragments) = dashboard_fragments(st).await {
            out = fragments;
            // The list was re-rendered with the stored progress.
            p.progress.clear();
        }
    }
    for (mac, g) in std::mem::take(&mut p.progress) {
        let swap = format!("dprog-{}", mac.replace(':', ""));
        if let Ok(h) = progress_html(&ProgressView::from_msg(&g), &swap, false) {
            out.push(ev(&swap, h));
        }
    }
    out
}

/// The dashboard's counts and flashes fragments (none when the database
/// could not be read).
async fn dashboard_fragments(st: &AppState) -> Option<Vec<SseEvent>> {
    let r = st
        .db
        .call(|c| -> sql::Result<_> { Ok((data::counts(c)?, data::active_flashes(c, 50)?)) })
        .await;
    let Ok(Ok((counts, flashes))) = r else {
        return None;
    };
    #[derive(Serialize)]
    struct C<'a> {
        counts: &'a data::Counts,
        flashes: &'a [data::ActiveFlash],
    }
    let ctx = C {
        counts: &counts,
        flashes: &flashes,
    };
    let fragments = ["counts", "flashes"].into_iter().filter_map(|name| {
        let h = render(&format!("{name}.html"), &ctx, None).ok()?;
        Some(ev(name, h))
    });
    Some(fragments.collect())
}

#[derive(Serialize)]
struct StatusCtx<'a> {
    status: &'a StatusView,
}
