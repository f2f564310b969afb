//! The domain's one error type: what went wrong in terms a caller acts on,
//! with the message an operator (or an agent's log) is shown. No status
//! codes here; `ApiError` and `UiError` map each variant to one.

use bty_proto::text::TextError;

use crate::db::{sql, DbGone};

/// Why a domain operation did not happen. Nothing was changed in any case
/// (every operation is one transaction).
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The machine (or image, or cycle) asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A report's token is missing, stale (an older cycle) or foreign
    /// (another machine's); the message says which.
    #[error("{0}")]
    StaleToken(String),
    /// Input that breaks a rule. `msg` is the whole message and starts
    /// with the field's name, as `bty_proto::text` errors do.
    #[error("{msg}")]
    Invalid {
        /// The field at fault (`boot_mode`, `labels`, `sha256`, ...).
        field: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// A valid request the current state refuses (a report for a closed
    /// cycle, a static image that only its file can remove).
    #[error("{0}")]
    Conflict(String),
    /// A request the PXE surface does not take from this caller: a report
    /// from another address than the one that booted the cycle, a tokenless
    /// report path that is off, a browser. The message says which.
    #[error("{0}")]
    Forbidden(String),
    /// A credential the request needs is missing, unknown or revoked (a
    /// stick key); the message says what to do.
    #[error("{0}")]
    Unauthorized(String),
    /// Too many requests of a kind from one address; try again later.
    #[error("{0}")]
    TooMany(String),
    /// withcache could not be reached, or failed the change.
    #[error("{0}")]
    Upstream(String),
    /// The database failed; the detail is for the log, not for clients.
    #[error("database: {0}")]
    Db(#[from] sql::Error),
    /// The database thread has stopped (the server is going down).
    #[error("{}", DbGone)]
    Gone,
    /// A rule of the domain itself was broken: a bug, for the log.
    #[error("{0}")]
    Internal(String),
}

impl DomainError {
    /// [`DomainError::Invalid`] from a field and a message.
    pub fn invalid(field: &'static str, msg: impl Into<String>) -> DomainError {
        DomainError::Invalid {
            field,
            msg: msg.into(),
        }
    }
}

impl From<DbGone> for DomainError {
    fn from(_: DbGone) -> Self {
        DomainError::Gone
    }
}

impl From<TextError> for DomainError {
    fn from(e: TextError) -> Self {
        DomainError::Invalid {
            field: e.field,
            msg: e.to_string(),
        }
    }
}

/// Result of a domain operation.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;
