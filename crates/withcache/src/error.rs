//! withcache's error type: what went wrong, in terms a caller can act on.
//! The HTTP surfaces map it to answers (`api` to `ErrorBody`, `blob` to
//! text, `ui` to the form's message); [`Error::status`] is the one table
//! of statuses they share.

use std::path::{Path, PathBuf};

use http::StatusCode;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// One field of the input breaks its rule; `msg` names the field and
    /// the rule (`src: required …`), `field` is the form field it belongs
    /// to, so a form can put the message next to it.
    #[error("{msg}")]
    Invalid {
        /// The field: `name`, `src`, `sha256`, `size`, `format`, `arch`,
        /// `description` or `url`.
        field: &'static str,
        /// What to fix.
        msg: String,
    },
    /// The request is malformed as a whole; the text says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The quota cannot make room.
    #[error("{0}")]
    Full(String),
    /// The origin failed.
    #[error("{0}")]
    Origin(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, msg: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            msg: msg.into(),
        }
    }

    /// The input field this error is about, if it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether this is withcache's own fault (logged in full, shown only
    /// as a pointer to the log).
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Db(_) | Error::Io { .. } | Error::Config(_))
    }

    /// The HTTP status for this error on every surface.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid { .. } | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Origin(_) => StatusCode::BAD_GATEWAY,
            Error::Db(_) | Error::Io { .. } | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
