//! The agent's error type. Every variant says what failed and, where the
//! operator can do something about it, what.

use std::path::PathBuf;

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a flash (or a step of it) failed. The `Display` text is what lands in
/// `done.reason`, so it is written for the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest did not match.
    #[error("{what} sha256 mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// Which bytes were hashed ("download", "read-back").
        what: &'static str,
        /// The digest we were told to expect.
        expected: String,
        /// The digest we computed.
        actual: String,
    },
    /// The target disk is in use.
    #[error("target {device} is in use ({holders}); refusing to write to it")]
    TargetBusy {
        /// Device path.
        device: String,
        /// What holds it: mounts, holders, swap.
        holders: String,
    },
    /// No disk carries the plan's serial.
    #[error("no disk with serial {serial:?} (disks seen: {seen}); check the machine's target disk serial")]
    NoTarget {
        /// Serial from the plan.
        serial: String,
        /// `name=serial` of every disk seen.
        seen: String,
    },
    /// More than one disk carries the plan's serial.
    #[error("serial {serial:?} matches several disks ({devices}); refusing to guess")]
    AmbiguousTarget {
        /// Serial from the plan.
        serial: String,
        /// The matching devices.
        devices: String,
    },
    /// The image does not fit.
    #[error("image needs {need} bytes but {device} has {have}")]
    TargetTooSmall {
        /// Device path.
        device: String,
        /// Bytes the image needs (at least).
        need: u64,
        /// Bytes the device has.
        have: u64,
    },
    /// The plan's format and the stream's magic bytes disagree.
    #[error(
        "plan says format {plan} but the image starts like {found}; fix the catalog entry's format"
    )]
    FormatMismatch {
        /// Format from the plan.
        plan: String,
        /// What the magic bytes say.
        found: String,
    },
    /// The origin's bytes changed between two requests of one download.
    #[error("origin changed during the download ({0}); will retry the whole flash")]
    OriginChanged(String),
    /// HTTP failed after all retries.
    #[error("HTTP {url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The plan cannot be carried out.
    #[error("invalid plan: {0}")]
    BadPlan(String),
    /// The image uses something this agent does not implement.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The image is corrupt or truncated.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// A system call on a path failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("opening", "writing to", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The decompressor or the pipeline failed.
    #[error("{0}")]
    Stream(std::io::Error),
}

impl Error {
    /// Wrap an I/O error with what we were doing to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // Errors raised inside a Read chain (source, decompressor) travel as
        // io::Error; unwrap ours back out so the reason stays precise.
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::Stream(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(ours)) => *ours,
            // Not reached: checked above.
            Some(Err(other)) => Error::Stream(std::io::Error::new(kind, other)),
            None => Error::Stream(kind.into()),
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}
