//! The SQLite index: catalog entries, cached blobs and the source URLs that
//! name them, misses and events.
//!
//! One connection behind a mutex, in WAL mode. Every statement here is a
//! short indexed lookup or write, so callers run them inline rather than in
//! a blocking pool; the serve path never touches the database (it reads the
//! in-memory index in `store`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Error;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Append, never edit: deployed databases already ran the old ones.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE entries (
    name        TEXT PRIMARY KEY,
    src         TEXT NOT NULL,
    sha256      TEXT,
    size        INTEGER,
    format      TEXT,
    arch        TEXT,
    description TEXT,
    pinned      INTEGER NOT NULL DEFAULT 0,
    added_by    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX entries_src ON entries(src);
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    last_access INTEGER NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sources (
    src        TEXT PRIMARY KEY,
    digest     TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
    fetched_at TEXT NOT NULL
);
CREATE INDEX sources_digest ON sources(digest);
CREATE TABLE misses (
    src        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL
);
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    actor     TEXT NOT NULL,
    source_ip TEXT,
    summary   TEXT NOT NULL
);
CREATE INDEX events_ts ON events(ts);
"#,
    // A blob keeps the misses its URL collected before it was cached.
    "ALTER TABLE blobs ADD COLUMN misses INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this build migrates to (`bty-lab restore` refuses a
/// backup whose catalog is newer).
#[allow(clippy::cast_possible_truncation)] // a handful of migrations
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Unauthenticated clients create misses and events; keep both bounded.
const MAX_MISSES: i64 = 1000;
const MAX_EVENTS: i64 = 10_000;

/// A catalog entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRow {
    /// The entry, in the wire shape.
    #[serde(flatten)]
    pub entry: bty_proto::catalog::CatalogEntry,
    /// Never evicted to make room.
    pub pinned: bool,
    /// `operator` (API or UI), `import` (merged from a catalog file) or
    /// `bty-web` (through the API with the service token).
    pub added_by: String,
}

/// A cached blob.
#[derive(Debug, Clone)]
pub struct BlobRow {
    /// sha256, lower-case hex.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
    /// Unix seconds of the last hit.
    pub last_access: u64,
    /// GET hits so far.
    pub hits: u64,
    /// Requests its URLs got as misses before they were cached.
    pub misses: u64,
}

/// `(src, digest)`: which blob an origin URL's bytes are.
pub type SourceRow = (String, String);

/// A recorded miss.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissRow {
    /// The URL clients asked for.
    pub src: String,
    /// How many times.
    pub count: u64,
    /// First and last time, RFC 3339.
    pub first_seen: String,
    /// Last time, RFC 3339.
    pub last_seen: String,
}

/// One event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    /// Increasing id.
    pub id: i64,
    /// RFC 3339.
    pub ts: String,
    /// Dotted kind, e.g. `download.completed`.
    pub kind: String,
    /// What it is about (entry name, URL, digest).
    pub subject: String,
    /// `operator`, `client` or `system`.
    pub actor: String,
    /// The client address, when a request caused it.
    pub source_ip: Option<String>,
    /// One line for humans.
    pub summary: String,
}

/// The database.
pub struct Db {
    conn: Mutex<Connection>,
}

/// RFC 3339 now, UTC, second precision.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    let format: Option<String> = r.get(4)?;
    Ok(EntryRow {
        entry: bty_proto::catalog::CatalogEntry {
            name: r.get(0)?,
            src: r.get(1)?,
            sha256: r.get(2)?,
            size: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
            // Stored values were validated on the way in.
            format: format.and_then(|f| f.parse().ok()),
            arch: r.get(5)?,
            description: r.get(6)?,
        },
        pinned: r.get(7)?,
        added_by: r.get(8)?,
    })
}

const ENTRY_COLS: &str = "name, src, sha256, size, format, arch, description, pinned, added_by";

impl Db {
    /// Open (creating if needed) and migrate `path`.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let db = Db {
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is one statement or one transaction), so keep going.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), Error> {
        let mut conn = self.conn();
        let done: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if done as usize > MIGRATIONS.len() {
            return Err(Error::Config(format!(
                "the database schema (version {done}) is newer than this withcache knows ({}); \
                 run a newer withcache or restore a backup",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- catalog entries ----

    /// All entries, by name.
    pub fn entries(&self) -> Result<Vec<EntryRow>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {ENTRY_COLS} FROM entries ORDER BY name"))?;
        let rows = st.query_map([], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One entry by name.
    pub fn entry(&self, name: &str) -> Result<Option<EntryRow>, Error> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {ENTRY_COLS} FROM entries WHERE name = ?1"),
                [name],
                entry_from_row,
            )
            .optional()?)
    }

    /// Entries whose origin is `src`.
    pub fn entries_by_src(&self, src: &str) -> Result<Vec<EntryRow>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {ENTRY_COLS} FROM entries WHERE src = ?1 ORDER BY name"
        ))?;
        let rows = st.query_map([src], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Insert a new entry; false if the name is taken.
    pub fn insert_entry(&self, e: &EntryRow) -> Result<bool, Error> {
        let now = now_rfc3339();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO entries (name, src, sha256, size, format, arch, description, \
             pinned, added_by, created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10)",
            params![
                e.entry.name,
                e.entry.src,
                e.entry.sha256,
                e.entry.size.map(|s| s as i64),
                e.entry.format.map(|f| f.as_str()),
                e.entry.arch,
                e.entry.description,
                e.pinned,
                e.added_by,
                now
            ],
        )?;
        Ok(n == 1)
    }

    /// Replace an existing entry's fields (keeps `added_by` unless given);
    /// false if there is no such entry.
    pub fn update_entry(&self, e: &EntryRow) -> Result<bool, Error> {
        let n = self.conn().execute(
            "UPDATE entries SET src=?2, sha256=?3, size=?4, format=?5, arch=?6, description=?7, \
             pinned=?8, added_by=?9, updated_at=?10 WHERE name=?1",
            params![
                e.entry.name,
                e.entry.src,
                e.entry.sha256,
                e.entry.size.map(|s| s as i64),
                e.entry.format.map(|f| f.as_str()),
                e.entry.arch,
                e.entry.description,
                e.pinned,
                e.added_by,
                now_rfc3339()
            ],
        )?;
        Ok(n == 1)
    }

    /// Delete an entry; false if there was none.
    pub fn delete_entry(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .conn()
            .execute("DELETE FROM entries WHERE name = ?1", [name])?
            == 1)
    }

    /// Digests of blobs that a pinned entry names.
    pub fn pinned_digests(&self) -> Result<Vec<String>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT DISTINCT s.digest FROM entries e JOIN sources s ON s.src = e.src \
             WHERE e.pinned = 1",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- blobs and sources ----

    /// Every blob and every source → digest mapping, for the in-memory index.
    pub fn load_index(&self) -> Result<(Vec<BlobRow>, Vec<SourceRow>), Error> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT digest, size, last_access, hits, misses FROM blobs")?;
        let blobs = st
            .query_map([], |r| {
                Ok(BlobRow {
                    digest: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    last_access: r.get::<_, i64>(2)? as u64,
                    hits: r.get::<_, i64>(3)? as u64,
                    misses: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT src, digest FROM sources")?;
        let sources = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((blobs, sources))
    }

    /// Record a verified blob and the source that produced it. The
    /// source's miss row is cleared and its count moves to the blob row;
    /// returns the blob's misses.
    pub fn add_blob(&self, src: &str, digest: &str, size: u64) -> Result<u64, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_rfc3339();
        let missed: i64 = tx
            .query_row("SELECT count FROM misses WHERE src = ?1", [src], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let misses: i64 = tx.query_row(
            "INSERT INTO blobs (digest, size, created_at, last_access, misses) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(digest) DO UPDATE SET last_access = excluded.last_access, \
             misses = blobs.misses + excluded.misses RETURNING misses",
            params![digest, size as i64, now, now_unix() as i64, missed],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO sources (src, digest, fetched_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(src) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at",
            params![src, digest, now],
        )?;
        tx.execute("DELETE FROM misses WHERE src = ?1", [src])?;
        tx.commit()?;
        Ok(misses as u64)
    }

    /// Forget a blob and every source that mapped to it.
    pub fn delete_blob(&self, digest: &str) -> Result<bool, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM sources WHERE digest = ?1", [digest])?;
        let n = tx.execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Forget one source mapping (the blob stays).
    pub fn delete_source(&self, src: &str) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM sources WHERE src = ?1", [src])?;
        Ok(())
    }

    /// Persist hit counters and access times collected in memory.
    pub fn flush_access(&self, rows: &[(String, u64, u64)]) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (digest, last_access, hits) in rows {
            tx.execute(
                "UPDATE blobs SET last_access = ?2, hits = ?3 WHERE digest = ?1",
                params![digest, *last_access as i64, *hits as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    // ---- misses ----

    /// Count a miss; true if it is the first for this URL.
    pub fn record_miss(&self, src: &str) -> Result<bool, Error> {
        let conn = self.conn();
        let now = now_rfc3339();
        let updated = conn.execute(
            "UPDATE misses SET count = count + 1, last_seen = ?2 WHERE src = ?1",
            params![src, now],
        )?;
        if updated == 1 {
            return Ok(false);
        }
        conn.execute(
            "INSERT INTO misses (src, count, first_seen, last_seen) VALUES (?1, 1, ?2, ?2)",
            params![src, now],
        )?;
        conn.execute(
            "DELETE FROM misses WHERE src IN (SELECT src FROM misses ORDER BY last_seen DESC \
             LIMIT -1 OFFSET ?1)",
            [MAX_MISSES],
        )?;
        Ok(true)
    }

    /// Misses, most recent first.
    pub fn misses(&self) -> Result<Vec<MissRow>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT src, count, first_seen, last_seen FROM misses ORDER BY last_seen DESC, src",
        )?;
        let rows = st.query_map([], |r| {
            Ok(MissRow {
                src: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
                first_seen: r.get(2)?,
                last_seen: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drop a miss row.
    pub fn dismiss_miss(&self, src: &str) -> Result<bool, Error> {
        Ok(self
            .conn()
            .execute("DELETE FROM misses WHERE src = ?1", [src])?
            == 1)
    }

    // ---- events ----

    /// Append an event (and trim the oldest past the cap).
    pub fn event(
        &self,
        kind: &str,
        subject: &str,
        actor: &str,
        source_ip: Option<&str>,
        summary: &str,
    ) -> Result<(), Error> {
        let conn = self.conn();
        let id = conn.query_row(
            "INSERT INTO events (ts, kind, subject, actor, source_ip, summary) \
             VALUES (?1,?2,?3,?4,?5,?6) RETURNING id",
            params![now_rfc3339(), kind, subject, actor, source_ip, summary],
            |r| r.get::<_, i64>(0),
        )?;
        if id % 100 == 0 {
            conn.execute("DELETE FROM events WHERE id <= ?1", [id - MAX_EVENTS])?;
        }
        Ok(())
    }

    /// The newest `limit` events, newest first, optionally only after `after`.
    pub fn events(&self, limit: u32, after: Option<i64>) -> Result<Vec<EventRow>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, ts, kind, subject, actor, source_ip, summary FROM events \
             WHERE id > ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![after.unwrap_or(0), limit], |r| {
            Ok(EventRow {
                id: r.get(0)?,
                ts: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                actor: r.get(4)?,
                source_ip: r.get(5)?,
                summary: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
