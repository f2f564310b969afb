//! SQLite storage: one connection behind a mutex.
//!
//! Every database operation is a short closure (a handful of indexed
//! statements in one transaction) run under the lock, on the calling task's
//! thread. One connection means no `SQLITE_BUSY` between our own requests and
//! a read-decide-write sequence (the PXE decision) runs as one transaction
//! without interleaving; running it in place (no hop to a database thread)
//! keeps the PXE and plan paths at a few tens of microseconds. WAL keeps
//! readers (the sqlite3 CLI, backups) from blocking it.

pub mod cycles;
pub mod events;
pub mod machines;
pub mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// The database can no longer be used.
#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable")]
pub struct DbGone;

impl Db {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        Self::from_connection(conn).with_context(|| format!("database {}", path.display()))
    }

    /// Use an already open connection (tests use in-memory databases).
    pub fn from_connection(mut conn: Connection) -> anyhow::Result<Db> {
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` with the connection and return its result. `f` must be
    /// short: it holds the only connection.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbGone>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        // A panic inside a closure leaves no open transaction behind (the
        // Transaction guard rolls back on unwind), so a poisoned lock is
        // still a usable connection.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut conn))
    }
}

/// WAL, no fsync per commit (WAL + NORMAL is still crash-safe: a power cut
/// may lose the last commits, never corrupt), foreign keys on.
pub fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("enabling WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Now as RFC 3339 UTC text, the format of every stored timestamp.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
