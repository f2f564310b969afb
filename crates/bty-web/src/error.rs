//! One error type for every JSON handler: `bty_proto::ErrorBody` with a
//! status and the request id. Domain errors become one through
//! `From<DomainError>`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::DomainError;

/// An HTTP error with its message.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Message for the client (and the operator).
    pub message: String,
    /// Extra `Retry-After` seconds (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    /// 500; the detail goes to the log, not to the client.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the bty-web log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `ErrorBody` with the request id, as the kit writes it.
        bty_http::JsonError {
            status: self.status,
            message: self.message,
            retry_after: self.retry_after,
        }
        .into_response()
    }
}

/// The domain's errors as the API has always answered them: 404, 409 for
/// a refused token or state, 401 for a refused stick key, 400 naming the field, 502 for withcache, 503
/// while the database thread is gone, and 500 with the detail only in the
/// log.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(m) => ApiError::not_found(m),
            DomainError::StaleToken(m) | DomainError::Conflict(m) => ApiError::conflict(m),
            DomainError::Invalid { msg, .. } => ApiError::bad_request(msg),
            DomainError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            DomainError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            DomainError::TooMany(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
            DomainError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
            DomainError::Gone => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            DomainError::Db(_) | DomainError::Internal(_) => ApiError::internal(e),
        }
    }
}

impl From<bty_proto::MacError> for ApiError {
    fn from(e: bty_proto::MacError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<bty_proto::text::TextError> for ApiError {
    fn from(e: bty_proto::text::TextError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_string()
        } else {
            format!("bad JSON body: {}", r.body_text())
        };
        ApiError::new(status, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", r.body_text()))
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s (JSON bodies, 413 kept).
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(v))
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: DomainError) -> (u16, serde_json::Value) {
        let r = ApiError::from(e).into_response();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Each domain error answers the status and `ErrorBody` the handlers
    /// answered before the domain layer existed.
    #[tokio::test]
    async fn domain_errors_answer_as_before() {
        let internal = "internal error; see the bty-web log";
        let cases = [
            (
                DomainError::NotFound("no machine 52:54:00:12:34:56 is registered".into()),
                404,
                "no machine 52:54:00:12:34:56 is registered",
            ),
            (
                DomainError::StaleToken("stale token: cycle 1 is no longer current".into()),
                409,
                "stale token: cycle 1 is no longer current",
            ),
            (
                DomainError::Conflict("cycle 1 is already done".into()),
                409,
                "cycle 1 is already done",
            ),
            (
                DomainError::invalid("labels", "labels: at most 32 labels"),
                400,
                "labels: at most 32 labels",
            ),
            (
                DomainError::Upstream("withcache: connection refused".into()),
                502,
                "withcache: connection refused",
            ),
            (
                DomainError::Db(crate::db::sql::Error::Other("disk I/O error".into())),
                500,
                internal,
            ),
            (DomainError::Internal("a bug".into()), 500, internal),
            (DomainError::Gone, 503, "the database thread has stopped"),
        ];
        for (e, status, message) in cases {
            // Outside a request there is no request id to carry.
            let want = serde_json::to_value(bty_proto::ErrorBody::new(message)).unwrap();
            assert_eq!(answer(e).await, (status, want));
        }
    }

    /// A text rule's error keeps its field and its whole message.
    #[tokio::test]
    async fn text_errors_become_invalid_with_their_field() {
        let e = DomainError::from(bty_proto::text::validate_serial("a;b").unwrap_err());
        assert!(
            matches!(&e, DomainError::Invalid { field: "target_disk_serial", msg }
            if msg.starts_with("target_disk_serial: "))
        );
        assert_eq!(answer(e).await.0, 400);
    }
}
