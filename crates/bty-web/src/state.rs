//! The one shared application state.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::Db;
use crate::domain::bus::Bus;
use crate::domain::Domain;
use crate::ipxe::Templates;
use crate::metrics::Metrics;

/// Shared state; cheap to clone.
pub type AppState = Arc<Inner>;

/// What every handler can reach.
pub struct Inner {
    /// Configuration.
    pub cfg: Config,
    /// The domain: every change to machines, cycles and images.
    pub domain: Domain,
    /// Database thread (the UI's read queries; changes go through
    /// [`Inner::domain`]).
    pub db: Db,
    /// Image catalog.
    pub catalog: Arc<Catalog>,
    /// iPXE templates.
    pub templates: Templates,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Live updates (the domain publishes, SSE streams subscribe).
    pub bus: Bus,
    /// The admin account and sessions.
    pub auth: Arc<bty_auth::Auth>,
    /// Flips to true when the server stops (ends SSE streams).
    pub stop: watch::Receiver<bool>,
    /// Start time.
    pub started: Instant,
    /// Scheduled backups and the archives.
    pub backups: Arc<crate::backups::Backups>,
}
