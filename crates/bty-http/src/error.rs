//! The JSON error answer of `/api`-style routes: a status and
//! `bty_proto::ErrorBody` carrying the message and the request id.

use axum::response::{IntoResponse, Response};
use bty_proto::ErrorBody;
use http::{HeaderValue, StatusCode};

use crate::request_id;

/// An error for a JSON client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The status.
    pub status: StatusCode,
    /// What the client (and the operator) reads.
    pub message: String,
    /// `Retry-After` seconds (rate limits).
    pub retry_after: Option<u64>,
}

impl JsonError {
    /// `status` with `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> JsonError {
        JsonError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            request_id: request_id::current().map(|id| id.to_string()),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn body_carries_the_request_id_of_the_header() {
        let app = crate::request_id::layer(Router::new().route(
            "/",
            get(|| async {
                JsonError {
                    retry_after: Some(7),
                    ..JsonError::new(StatusCode::TOO_MANY_REQUESTS, "slow down")
                }
            }),
        ));
        let req = Request::builder()
            .uri("/")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-request-id"], "abc-123");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let b: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(b.error, "slow down");
        assert_eq!(b.request_id.as_deref(), Some("abc-123"));
    }
}
