//! How the domain's errors show on an HTML page ([`UiError`]).

use axum::http::StatusCode;

use super::render::UiError;
use crate::domain::DomainError;

/// The domain's errors on an HTML page: 404, 409, 400, 502 with their
/// message; a database failure or a bug as a 500 whose detail goes to the
/// log only.
impl From<DomainError> for UiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::NotFound(_) => StatusCode::NOT_FOUND,
            DomainError::StaleToken(_) | DomainError::Conflict(_) => StatusCode::CONFLICT,
            DomainError::Invalid { .. } => StatusCode::BAD_REQUEST,
            DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
            DomainError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            DomainError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            DomainError::Upstream(_) => StatusCode::BAD_GATEWAY,
            DomainError::Db(_) | DomainError::Gone | DomainError::Internal(_) => {
                return UiError::internal(e)
            }
        };
        UiError {
            status,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 500's message is for the log: the page shows a request id instead
    /// (`UiError::into_response`).
    #[test]
    fn domain_errors_map_to_a_status_and_message() {
        let cases = [
            (
                DomainError::NotFound("no machine".into()),
                404,
                "no machine",
            ),
            (
                DomainError::StaleToken("stale token".into()),
                409,
                "stale token",
            ),
            (DomainError::Conflict("closed".into()), 409, "closed"),
            (DomainError::invalid("name", "name: bad"), 400, "name: bad"),
            (
                DomainError::Upstream("withcache down".into()),
                502,
                "withcache down",
            ),
            (DomainError::Gone, 500, "the database thread has stopped"),
            (DomainError::Internal("bug".into()), 500, "bug"),
        ];
        for (e, status, message) in cases {
            let u = UiError::from(e);
            assert_eq!((u.status.as_u16(), u.message.as_str()), (status, message));
        }
    }
}
