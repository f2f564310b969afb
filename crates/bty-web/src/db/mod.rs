//! Storage: SQLite on one connection owned by one thread, or PostgreSQL
//! on a pool of connections, one thread each (see [`sql`]).
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
// The PostgreSQL backend lives under the seam it implements (`sql::pg`,
// so that the two do not import each other as siblings); `db::pg` is it.
pub use sql::pg;
pub mod schema;
pub mod sql;
pub mod sticks;

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use anyhow::Context;

type Job = Box<dyn FnOnce(&mut sql::Conn) + Send>;

/// Handle to the database thread(s). Cheap to clone.
#[derive(Clone)]
pub struct Db {
    tx: mpsc::Sender<Job>,
    dialect: sql::Dialect,
}

/// The database thread is gone (it panicked or the server is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the database thread has stopped")]
pub struct DbGone;

impl Db {
    /// Open (creating if needed) and migrate the SQLite database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state directory {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        Self::from_connection(sql::Conn::sqlite(conn))
            .with_context(|| format!("database {}", path.display()))
    }

    /// Connect to PostgreSQL at `url` with `pool` connections (one database
    /// thread each, all taking jobs from one queue) and migrate it.
    pub fn connect(url: &str, pool: u32) -> anyhow::Result<Db> {
        let open = || {
            sql::Conn::postgres(url).context(
                "connecting to the PostgreSQL database ([server] database); check that it \
                 runs, is reachable and the user and password are right",
            )
        };
        let mut first = open()?;
        schema::migrate(&mut first).context("migrating the PostgreSQL database")?;
        let mut conns = vec![first];
        for _ in 1..pool {
            conns.push(open()?);
        }
        Self::spawn(conns)
    }

    /// Use an already open connection (tests use in-memory databases):
    /// configure it (SQLite) and migrate it.
    pub fn from_connection(mut conn: sql::Conn) -> anyhow::Result<Db> {
        if let Some(c) = conn.as_sqlite() {
            configure(c)?;
        }
        schema::migrate(&mut conn)?;
        Self::spawn(vec![conn])
    }

    /// One thread per connection. They share one receiver: a `Mutex`
    /// around std's `mpsc::Receiver` is enough, as a thread holds it only
    /// while waiting for the next job, never while running one.
    fn spawn(conns: Vec<sql::Conn>) -> anyhow::Result<Db> {
        let dialect = conns
            .first()
            .map(sql::Conn::dialect)
            .context("no database connection")?;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for (i, mut conn) in conns.into_iter().enumerate() {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("bty-db-{i}"))
                .spawn(move || loop {
                    // A poisoned lock means another database thread
                    // panicked while waiting; the queue itself is intact.
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    };
                    job(&mut conn);
                })
                .context("starting a database thread")?;
        }
        Ok(Db { tx, dialect })
    }

    /// The engine behind this store.
    pub fn dialect(&self) -> sql::Dialect {
        self.dialect
    }

    /// Run `f` on a database thread and return its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbGone>
    where
        T: Send + 'static,
        F: FnOnce(&mut sql::Conn) -> T + Send + 'static,
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
        F: FnOnce(&mut sql::Conn) -> Result<T, E> + Send + 'static,
    {
        self.call(f).await?
    }
}

/// WAL, no fsync per commit (WAL + NORMAL is still crash-safe: a power cut
/// may lose the last commits, never corrupt), foreign keys on.
pub fn configure(conn: &rusqlite::Connection) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> sql::Conn {
        sql::Conn::sqlite(rusqlite::Connection::open_in_memory().unwrap())
    }

    // The pool PostgreSQL uses, run here on SQLite connections (there is
    // no PostgreSQL server in unit tests): every thread takes jobs from the
    // one queue, so slow jobs run side by side.
    #[tokio::test]
    async fn pooled_threads_share_one_queue() {
        let conns = (0..3)
            .map(|_| {
                let mut c = memory();
                schema::migrate(&mut c).unwrap();
                c
            })
            .collect();
        let db = Db::spawn(conns).unwrap();
        assert_eq!(db.dialect(), sql::Dialect::Sqlite);
        let started = std::time::Instant::now();
        let jobs = (0..6).map(|_| {
            db.call(|c| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let one: i64 = c.query_row("SELECT 1", (), |r| r.get(0)).unwrap();
                (std::thread::current().name().unwrap().to_string(), one)
            })
        });
        let out = futures::future::join_all(jobs).await;
        let names: std::collections::BTreeSet<String> = out
            .into_iter()
            .map(|r| r.unwrap())
            .map(|(n, one)| {
                assert_eq!(one, 1);
                n
            })
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // 6 jobs of 200 ms on 3 threads: about 400 ms, not 1200.
        assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    }

    #[test]
    fn an_unreachable_postgres_says_what_failed() {
        // Port 1 on loopback: nothing listens there.
        let e = Db::connect("postgres://bty:bty@127.0.0.1:1/bty", 2)
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("connecting to the PostgreSQL database"),
            "{e:#}"
        );
    }
}
