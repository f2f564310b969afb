//! The one shared application state.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::Db;
use crate::ipxe::Templates;
use crate::metrics::Metrics;
use crate::sse::BusMsg;

/// Shared state; cheap to clone.
pub type AppState = Arc<Inner>;

/// What every handler can reach.
pub struct Inner {
    /// Configuration.
    pub cfg: Config,
    /// Database thread.
    pub db: Db,
    /// Image catalog.
    pub catalog: Arc<Catalog>,
    /// iPXE templates.
    pub templates: Templates,
    /// Counters.
    pub metrics: Metrics,
    /// Live updates.
    pub bus: broadcast::Sender<BusMsg>,
    /// The admin account and sessions.
    pub auth: Arc<bty_auth::Auth>,
    /// Flips to true when the server stops (ends SSE streams).
    pub stop: watch::Receiver<bool>,
    /// Start time.
    pub started: Instant,
}

impl Inner {
    /// Publish messages; nobody listening is fine.
    pub fn publish(&self, msgs: impl IntoIterator<Item = BusMsg>) {
        for m in msgs {
            let _ = self.bus.send(m);
        }
    }
}
