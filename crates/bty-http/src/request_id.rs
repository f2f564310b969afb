//! A request id on every request: taken from the client's `X-Request-Id`
//! when it sends a usable one (a proxy's or another bty service's), made
//! up otherwise; echoed in the response's `X-Request-Id`, a field of the
//! request's tracing span (tower-http's `TraceLayer`), in JSON error
//! bodies and on error pages. An operator who quotes it finds every log
//! line of that request.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, HeaderName, HeaderValue};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

/// The header that carries the id, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client.
const MAX_LEN: usize = 64;

/// The id of one request (a request extension, and the task-local of the
/// request being handled, see [`current`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// 16 random hex digits.
    pub fn generate() -> RequestId {
        RequestId(hex::encode(rand::random::<[u8; 8]>()))
    }

    /// The client's id if it is 1–64 of `A-Z a-z 0-9 . _ - :` (so it is
    /// safe in a log line and a header), else a new one.
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_LEN
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
            })
            .map(|v| RequestId(v.to_string()))
            .unwrap_or_else(RequestId::generate)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        // Only the characters from_headers admits, or hex: always valid.
        HeaderValue::from_str(&self.0).unwrap_or(HeaderValue::from_static("-"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request being handled on this task, if any. Error types
/// use it when they turn into a response, which happens inside the
/// handler's task.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(RequestId::clone).ok()
}

/// The middleware: pick the id, keep it for the handler, echo it.
async fn set_request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId::from_headers(req.headers());
    req.extensions_mut().insert(id.clone());
    let mut resp = CURRENT.scope(id.clone(), next.run(req)).await;
    resp.headers_mut().insert(X_REQUEST_ID, id.header_value());
    resp
}

/// The span of one request: id, method and path (never the query, which
/// may carry URLs with signatures).
fn span(req: &Request) -> tracing::Span {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(RequestId::as_str)
        .unwrap_or("-");
    tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
}

/// Wrap every route of `router`: request ids outside, then a `TraceLayer`
/// span per request. 5xx answers are logged where they are made (with
/// their cause), so the layer's own failure line is only at debug.
pub fn layer<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(axum::middleware::from_fn(set_request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn echo() -> String {
        current().map(|id| id.to_string()).unwrap_or_default()
    }

    #[tokio::test]
    async fn taken_from_the_client_echoed_and_current_in_the_handler() {
        let app = layer(Router::new().route("/", get(echo)));
        let req = Request::builder()
            .uri("/")
            .header("x-request-id", "proxy-42:a.b_c")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "proxy-42:a.b_c");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"proxy-42:a.b_c");
    }

    #[tokio::test]
    async fn made_up_when_missing_or_unusable() {
        let app = layer(Router::new().route("/", get(echo)));
        for sent in [None, Some("has space"), Some(&*"x".repeat(65)), Some("")] {
            let mut b = Request::builder().uri("/");
            if let Some(v) = sent {
                b = b.header("x-request-id", v);
            }
            let resp = app
                .clone()
                .oneshot(b.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            assert_eq!(id.len(), 16, "{sent:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
            assert_eq!(body, id.as_bytes(), "the handler sees the same id");
        }
        assert_eq!(current(), None, "no id outside a request");
    }
}
