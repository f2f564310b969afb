//! Live updates: a broadcast bus and `GET /api/events/stream` (SSE).
//!
//! Messages are small and per machine (an event row, a progress sample, a
//! machine's new state), never whole tables. A subscriber that falls
//! behind gets a `lagged` message telling it to re-read the REST API.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio_stream_shim::BroadcastStream;

use crate::db::events::Event;
use crate::state::AppState;

/// Keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One message on the bus.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum BusMsg {
    /// A new event-log row (SSE `event: event`).
    Event(Event),
    /// A progress report (SSE `event: progress`).
    Progress(ProgressMsg),
    /// A machine's state changed (SSE `event: machine`).
    Machine(MachineMsg),
}

impl BusMsg {
    fn name(&self) -> &'static str {
        match self {
            BusMsg::Event(_) => "event",
            BusMsg::Progress(_) => "progress",
            BusMsg::Machine(_) => "machine",
        }
    }
}

/// A progress sample of a cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressMsg {
    /// Machine.
    pub mac: String,
    /// Cycle id.
    pub cycle: i64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes total, when known.
    pub bytes_total: Option<u64>,
    /// Phase.
    pub phase: String,
    /// Bytes/s.
    pub rate: Option<f64>,
}

/// A machine's new state in a few fields.
#[derive(Debug, Clone, Serialize)]
pub struct MachineMsg {
    /// Machine.
    pub mac: String,
    /// Boot mode.
    pub boot_mode: String,
    /// Current cycle id and state, if any.
    pub cycle: Option<i64>,
    /// Current cycle state.
    pub cycle_state: Option<String>,
    /// Parked reason.
    pub parked: Option<String>,
    /// Deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// `GET /api/events/stream`.
pub async fn stream(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.bus.subscribe();
    let mut stop = st.stop.clone();
    let hello = futures::stream::once(async { Ok(SseEvent::default().event("hello").data("{}")) });
    let updates = BroadcastStream::new(rx).map(|m| {
        Ok(match m {
            Ok(msg) => SseEvent::default()
                .event(msg.name())
                .data(serde_json::to_string(&msg).unwrap_or_default()),
            Err(n) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
        })
    });
    let until_stop = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    Sse::new(hello.chain(updates).take_until(Box::pin(until_stop)))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// A `Stream` over a broadcast receiver. Hand-written (a dozen lines) to
/// avoid pulling tokio-stream for one adapter.
mod tokio_stream_shim {
    use futures::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::broadcast::{error::RecvError, Receiver};

    type Fut<T> =
        Pin<Box<dyn std::future::Future<Output = (Result<T, RecvError>, Receiver<T>)> + Send>>;

    pub struct BroadcastStream<T> {
        fut: Fut<T>,
    }

    async fn next<T: Clone>(mut rx: Receiver<T>) -> (Result<T, RecvError>, Receiver<T>) {
        let r = rx.recv().await;
        (r, rx)
    }

    impl<T: Clone + Send + 'static> BroadcastStream<T> {
        pub fn new(rx: Receiver<T>) -> Self {
            BroadcastStream {
                fut: Box::pin(next(rx)),
            }
        }
    }

    impl<T: Clone + Send + 'static> Stream for BroadcastStream<T> {
        /// `Err(n)`: n messages were missed.
        type Item = Result<T, u64>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let (r, rx) = match self.fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(v) => v,
            };
            self.fut = Box::pin(next(rx));
            match r {
                Ok(v) => Poll::Ready(Some(Ok(v))),
                Err(RecvError::Lagged(n)) => Poll::Ready(Some(Err(n))),
                Err(RecvError::Closed) => Poll::Ready(None),
            }
        }
    }
}
