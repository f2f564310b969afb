//! `GET /api/events/stream`: the domain's live bus ([`crate::domain::bus`])
//! as Server-Sent Events.
//!
//! A subscriber that falls behind gets a `lagged` message telling it to
//! re-read the REST API.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio_stream_shim::BroadcastStream;

use crate::state::AppState;

/// Keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
