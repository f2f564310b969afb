//! The domain layer: machines, flash cycles, images and what a PXE contact
//! gets. It knows nothing of HTTP: operations take parsed values (a
//! [`bty_proto::Mac`], a report, a settings struct) and return values or a
//! [`DomainError`]; the API and the UI map both to responses.
//!
//! - [`registry`]: machine CRUD and the validation of what an operator sets.
//! - [`bulk`]: importing and exporting many machines at once (CSV, JSON).
//! - [`cycle`]: the flash cycle (a PXE or plan contact as named steps, the
//!   boot-file fetch, progress / done / legacy status reports, inventory)
//!   and [`cycle::Answer`], what a contact gets, the one input of the iPXE
//!   script for both `GET /pxe/{mac}` and the UI's preview.
//! - [`decide`]: the pure boot decision the cycle applies.
//! - [`images`]: adding and removing images in withcache's catalog.
//! - [`sticks`]: USB-stick keys, the stick's catalog and stick cycles.
//! - [`bus`]: the live messages published after each change.
//!
//! Every write is one transaction on a database thread, holding the
//! [`crate::db::sql::Lock`] of what it touches (one machine, or everything
//! when it counts or changes across machines), so a decision and its
//! effects never interleave with an operator change, on SQLite or on
//! PostgreSQL replicas; its live messages are published only once it has
//! committed. [`Domain`] is
//! the handle the handlers call.

pub mod bulk;
pub mod bus;
pub mod cycle;
pub mod decide;
mod error;
pub mod images;
mod journal;
pub mod registry;
pub mod sticks;
#[cfg(test)]
mod test_support;

use std::sync::Arc;
use std::time::Duration;

use crate::db::sql::Conn;

use crate::catalog::Catalog;
use crate::db::Db;
use crate::metrics::Metrics;
use bus::{Bus, BusMsg};
pub use error::{DomainError, Result};

/// The rules the configuration sets for the domain.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `[flash] max_attempts`.
    pub max_attempts: u32,
    /// `[pxe] legacy_status`: the tokenless status report is accepted (it
    /// can only fail a cycle).
    pub legacy_status: bool,
    /// `[pxe] repeat_window_secs`: a repeated PXE contact from the same
    /// address within it, with nothing changed, is the same contact.
    pub repeat_window: Duration,
    /// `[discovery] max_unassigned`.
    pub max_unassigned: u32,
    /// `[discovery] per_ip_per_minute`.
    pub per_ip_per_minute: u32,
}

impl Policy {
    /// The policy of a configuration.
    pub fn of(cfg: &crate::config::Config) -> Policy {
        Policy {
            max_attempts: cfg.flash.max_attempts,
            legacy_status: cfg.pxe.legacy_status,
            repeat_window: Duration::from_secs(cfg.pxe.repeat_window_secs),
            max_unassigned: cfg.discovery.max_unassigned,
            per_ip_per_minute: cfg.discovery.per_ip_per_minute,
        }
    }
}

/// What the domain's operations run against; cheap to clone.
#[derive(Clone)]
pub struct Domain {
    db: Db,
    catalog: Arc<Catalog>,
    bus: Bus,
    metrics: Arc<Metrics>,
    max_attempts: u32,
    policy: Arc<Policy>,
    recent: Arc<cycle::repeat::Recent>,
    gate: Arc<cycle::discovery::Gate>,
}

impl Domain {
    /// The domain over these handles, with the rules of `policy`.
    pub fn new(
        db: Db,
        catalog: Arc<Catalog>,
        bus: Bus,
        metrics: Arc<Metrics>,
        policy: Policy,
    ) -> Domain {
        Domain {
            db,
            catalog,
            bus,
            metrics,
            max_attempts: policy.max_attempts,
            gate: Arc::new(cycle::discovery::Gate::new(
                policy.per_ip_per_minute,
                policy.max_unassigned,
            )),
            policy: Arc::new(policy),
            recent: Arc::default(),
        }
    }

    /// Run a read on the database thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T> + Send + 'static,
    {
        self.db.run(f).await
    }

    /// Run a write on the database thread, then publish what it announced.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<(T, Vec<BusMsg>)> + Send + 'static,
    {
        let (v, msgs) = self.db.run(f).await?;
        self.bus.publish(msgs);
        Ok(v)
    }
}
