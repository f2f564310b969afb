//! SQLite storage: one connection owned by one thread.
//!
//! Every request hands that thread a closure and awaits its answer. One
//! owner means no lock convoys and no `SQLITE_BUSY` between our own
//! requests, and a read-decide-write sequence (the PXE decision) runs as
//! one transaction without interleaving. WAL keeps readers (the sqlite3
//! CLI, backups) from blocking it. A hand-written actor rather than a pool
//! crate: it is ~40 lines and gives exactly these semantics.

pub mod cycles;
pub mod events;
pub mod machines;
pub mod pg;
pub mod schema;
pub mod sql;
pub mod sticks;

use std::path::Path;
use std::sync::mpsc;

use anyhow::Context;
use rusqlite::Connection;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the database thread. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    tx: mpsc::Sender<Job>,
}

/// The database thread is gone (it panicked or the server is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the database thread has stopped")]
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

    /// Connect to PostgreSQL at `url` with `pool` connections (one database
    /// thread each) and migrate it.
    pub fn connect(url: &str, pool: u32) -> anyhow::Result<Db> {
        let _ = pool;
        sql::Conn::postgres(url).context("connecting to the PostgreSQL database")?;
        anyhow::bail!("the PostgreSQL store is not built yet")
    }

    /// Use an already open connection (tests use in-memory databases).
    pub fn from_connection(mut conn: Connection) -> anyhow::Result<Db> {
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bty-db".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .context("starting the database thread")?;
        Ok(Db { tx })
    }

    /// Run `f` on the database thread and return its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbGone>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = otx.send(f(c));
        });
        self.tx.send(job).map_err(|_| DbGone)?;
        orx.await.map_err(|_| DbGone)
    }

    /// [`Db::call`] for a fallible `f`: one `Result`, a stopped database
    /// thread becoming `E::from(DbGone)`.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbGone> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        self.call(f).await?
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
