//! Downloads in progress as the store keeps them: the single-flight
//! [`Download`] everyone who asked for a URL shares, and the [`DlState`]
//! readers watch on it ([`Phase`], bytes written, generation, verified).
//! Running them is `fetch`'s job; this module only holds their state.

use std::path::PathBuf;

use tokio::sync::watch;

/// Where a download is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a download slot.
    Queued,
    /// Asking the origin.
    Connecting,
    /// Bytes are landing in the temp file.
    Running,
    /// Verified and stored.
    Done {
        /// sha256 hex.
        digest: String,
        /// Length.
        size: u64,
    },
    /// Gave up; nothing was stored.
    Failed(String),
}

/// What readers of a download in progress watch.
#[derive(Debug, Clone)]
pub struct DlState {
    /// Where it is.
    pub phase: Phase,
    /// Bumped whenever the download restarts from byte 0 (the origin
    /// changed, or ignored a resume): bytes a reader got from an earlier
    /// generation are void, so readers abort on a bump.
    pub generation: u32,
    /// The temp file of this generation.
    pub path: Option<PathBuf>,
    /// Bytes written to `path` and readable.
    pub written: u64,
    /// The length the origin (or the catalog) declared.
    pub total: Option<u64>,
    /// All bytes are in and their sha256 (and size) checked: readers may
    /// finish, even before the file is synced and renamed into the store.
    pub verified: bool,
    /// The sha256 the upstream withcache vouches for (its
    /// `x-withcache-sha256`), passed on to readers while the bytes flow.
    pub upstream_sha: Option<String>,
}

impl DlState {
    /// How many bytes of the temp file a reader may send now, and whether
    /// that is all of them: the last byte waits for verification, so a
    /// download that fails its check never reaches a client complete.
    /// `Err` is why the download failed.
    pub(crate) fn readable(&self) -> Result<(u64, bool), &str> {
        match &self.phase {
            Phase::Failed(msg) => Err(msg),
            Phase::Done { size, .. } => Ok((*size, true)),
            _ if self.verified => Ok((self.written, true)),
            _ => match self.total {
                Some(t) => Ok((self.written.min(t.saturating_sub(1)), false)),
                None => Ok((self.written, false)),
            },
        }
    }
}

/// Wait until the origin answered: the state once the download runs or is
/// over; `None` if it vanished.
pub(crate) async fn settled(rx: &mut watch::Receiver<DlState>) -> Option<DlState> {
    loop {
        let st = rx.borrow_and_update().clone();
        if !matches!(st.phase, Phase::Queued | Phase::Connecting) {
            return Some(st);
        }
        rx.changed().await.ok()?;
    }
}

/// One download; shared by everyone who asked for it (single flight).
#[derive(Debug)]
pub struct Download {
    /// Origin URL.
    pub src: String,
    /// sha256 the catalog promises, checked before the blob is kept.
    pub expected_sha: Option<String>,
    /// Length the catalog promises.
    pub expected_size: Option<u64>,
    /// Progress.
    pub state: watch::Sender<DlState>,
    /// Set to ask the downloader to stop.
    pub cancelled: std::sync::atomic::AtomicBool,
}

impl Download {
    /// A snapshot of the state.
    pub fn snapshot(&self) -> DlState {
        self.state.borrow().clone()
    }
}

/// A download not started yet.
pub(super) fn queued(
    src: &str,
    expected_sha: Option<String>,
    expected_size: Option<u64>,
) -> Download {
    let (tx, _) = watch::channel(DlState {
        phase: Phase::Queued,
        generation: 0,
        path: None,
        written: 0,
        total: expected_size,
        verified: false,
        upstream_sha: None,
    });
    Download {
        src: src.to_string(),
        expected_sha,
        expected_size,
        state: tx,
        cancelled: Default::default(),
    }
}
