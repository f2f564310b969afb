//! The domain layer: machines, flash cycles, images and what a PXE contact
//! gets. It knows nothing of HTTP: operations take parsed values (a
//! [`bty_proto::Mac`], a report, a settings struct) and return values or a
//! [`DomainError`]; the API and the UI map both to responses.
//!
//! - [`registry`]: machine CRUD and the validation of what an operator sets.
//! - [`cycle`]: the flash cycle (a PXE or plan contact as named steps, the
//!   boot-file fetch, progress / done / legacy status reports, inventory)
//!   and [`cycle::Answer`], what a contact gets, the one input of the iPXE
//!   script for both `GET /pxe/{mac}` and the UI's preview.
//! - [`decide`]: the pure boot decision the cycle applies.
//! - [`images`]: adding and removing images in withcache's catalog.
//! - [`bus`]: the live messages published after each change.
//!
//! Every write is one SQLite transaction on the database thread (a
//! decision and its effects never interleave with an operator change); its
//! live messages are published only once it has committed. [`Domain`] is
//! the handle the handlers call.

pub mod bus;
pub mod cycle;
pub mod decide;
mod error;
pub mod images;
mod journal;
pub mod registry;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use rusqlite::Connection;

use crate::catalog::Catalog;
use crate::db::Db;
use crate::metrics::Metrics;
use bus::{Bus, BusMsg};
pub use error::{DomainError, Result};

/// What the domain's operations run against; cheap to clone.
#[derive(Clone)]
pub struct Domain {
    db: Db,
    catalog: Arc<Catalog>,
    bus: Bus,
    metrics: Arc<Metrics>,
    max_attempts: u32,
}

impl Domain {
    /// The domain over these handles. `max_attempts` is
    /// `[flash] max_attempts`.
    pub fn new(
        db: Db,
        catalog: Arc<Catalog>,
        bus: Bus,
        metrics: Arc<Metrics>,
        max_attempts: u32,
    ) -> Domain {
        Domain {
            db,
            catalog,
            bus,
            metrics,
            max_attempts,
        }
    }

    /// Run a read on the database thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.db.run(f).await
    }

    /// Run a write on the database thread, then publish what it announced.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<(T, Vec<BusMsg>)> + Send + 'static,
    {
        let (v, msgs) = self.db.run(f).await?;
        self.bus.publish(msgs);
        Ok(v)
    }
}
