//! The catalog page's live stream (`/ui/catalog/live`): every half second
//! the rows whose state or progress changed and the usage line when it
//! changed; never the whole table.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;

use super::catalog::{rows, RowView, UsageView};
use super::PAGES;
use crate::app::App;
use crate::catalog::EntryState;

/// How often the catalog stream looks for changes. Half a second makes a
/// smooth bar; an unchanged catalog sends nothing.
const LIVE_TICK: Duration = Duration::from_millis(500);

/// Per-stream memory of what the page shows now.
struct LiveWatch {
    /// Row HTML input per entry name, as last sent (or rendered).
    rows: HashMap<String, RowView>,
    names: BTreeSet<String>,
    usage: UsageView,
    /// Last (bytes, when) per entry, for the rate.
    samples: HashMap<String, (u64, Instant)>,
    told_reload: bool,
}

impl LiveWatch {
    fn new(app: &App) -> LiveWatch {
        let mut w = LiveWatch {
            rows: HashMap::new(),
            names: BTreeSet::new(),
            usage: UsageView::of(app),
            samples: HashMap::new(),
            told_reload: false,
        };
        if let Ok(rows) = rows(app) {
            for r in rows {
                w.names.insert(r.name.clone());
                // Rows that move are sent on the first tick anyway: the
                // page may have been rendered a moment before the stream.
                if !r.live {
                    w.rows.insert(r.name.clone(), r);
                }
            }
        }
        w
    }

    /// The fragments to send now: changed rows, the usage line, and one
    /// notice when entries were added or deleted elsewhere.
    fn step(&mut self, app: &App) -> Vec<SseEvent> {
        let states: Vec<EntryState> = match app.catalog.list() {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(error = %e, "catalog stream could not read the catalog");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let names: BTreeSet<String> = states.iter().map(|s| s.row.entry.name.clone()).collect();
        let mut out: Vec<SseEvent> = states
            .into_iter()
            .filter_map(|s| self.row(s, now))
            .collect();
        out.extend(self.notice(&names));
        out.extend(self.usage(app));
        out
    }

    /// The row of one entry, when it changed on the page.
    fn row(&mut self, s: EntryState, now: Instant) -> Option<SseEvent> {
        let name = s.row.entry.name.clone();
        let rate = self.rate(&name, s.written, now);
        let view = RowView::new(s, rate);
        match view.written {
            Some(w) if view.live => {
                self.samples.insert(name.clone(), (w, now));
            }
            _ => {
                self.samples.remove(&name);
            }
        }
        if !self.names.contains(&name) {
            return None; // not on the page; covered by the notice
        }
        // The rate alone changing is not worth a row.
        if self
            .rows
            .get(&name)
            .is_some_and(|old| old.same_but_rate(&view))
        {
            return None;
        }
        let event = fragment(
            format!("row-{name}"),
            "catalog_row.html",
            minijinja::context! { e => &view },
            "a catalog row",
        );
        self.rows.insert(name, view);
        event
    }

    /// Bytes per second since the last sample of `name`.
    fn rate(&self, name: &str, written: Option<u64>, now: Instant) -> Option<f64> {
        match (written, self.samples.get(name)) {
            (Some(w), Some((w0, t0))) if w >= *w0 => {
                let dt = now.duration_since(*t0).as_secs_f64();
                (dt > 0.0).then(|| (w - w0) as f64 / dt)
            }
            _ => None,
        }
    }

    /// Once per stream: entries came or went, which rows cannot show.
    fn notice(&mut self, names: &BTreeSet<String>) -> Option<SseEvent> {
        if *names == self.names || self.told_reload {
            return None;
        }
        self.told_reload = true;
        Some(SseEvent::default().event("notice").data(
            "Entries were added or deleted since this page was loaded: \
             <a href=\"/ui/catalog\">reload</a> to see them.",
        ))
    }

    /// The usage line, when it changed.
    fn usage(&mut self, app: &App) -> Option<SseEvent> {
        let usage = UsageView::of(app);
        if usage == self.usage {
            return None;
        }
        let event = fragment(
            "usage".into(),
            "usage.html",
            minijinja::context! { u => &usage },
            "the usage line",
        );
        self.usage = usage;
        event
    }
}

/// `event` with `template` rendered; a template that fails is logged and
/// the fragment skipped, so one bad row does not end the stream.
fn fragment(event: String, template: &str, ctx: minijinja::Value, what: &str) -> Option<SseEvent> {
    match PAGES.render(template, &ctx, None) {
        Ok(html) => Some(SseEvent::default().event(event).data(html)),
        Err(e) => {
            tracing::error!(error = %e, "rendering {what} failed");
            None
        }
    }
}

/// `GET /ui/catalog/live`: the catalog page's SSE stream.
pub(super) async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    use futures::StreamExt;
    let watch = LiveWatch::new(&app);
    let mut tick = tokio::time::interval(LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((app, watch, tick), |(app, mut w, mut tick)| async move {
        tick.tick().await;
        let events = w.step(&app);
        Some((
            futures::stream::iter(events.into_iter().map(Ok)),
            (app, w, tick),
        ))
    })
    .flatten();
    Sse::new(stream).keep_alive(KeepAlive::default())
}
