//! Versioned, in-place schema migrations.
//!
//! PostgreSQL has its own migrations (same tables and meaning) in
//! [`super::pg`]; this module dispatches to them. On SQLite the version is
//! SQLite's `PRAGMA user_version`. Each migration runs in its
//! own transaction together with the bump of `user_version`, so a crash
//! leaves the database at the previous version, never half-migrated. The
//! database file is never renamed, discarded or recreated.

use super::sql::{Conn, Dialect, Lock};
use anyhow::{bail, Context};

/// Migration `i` (0-based) takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: machines, labels, events.
    "CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        name TEXT,
        boot_mode TEXT NOT NULL,
        image TEXT,
        target_disk_serial TEXT,
        sanboot_drive TEXT,
        discovered_at TEXT,
        last_seen_at TEXT,
        last_seen_ip TEXT,
        inventory TEXT,
        inventory_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE machine_labels (
        mac TEXT NOT NULL REFERENCES machines(mac) ON DELETE CASCADE,
        label TEXT NOT NULL,
        PRIMARY KEY (mac, label)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        mac TEXT,
        summary TEXT NOT NULL,
        details TEXT
    );
    CREATE INDEX events_mac_idx ON events(mac, id);",
    // 2: flash cycles, arming generations, parking, inventory alternation.
    "ALTER TABLE machines ADD COLUMN arm_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE machines ADD COLUMN parked_reason TEXT;
    ALTER TABLE machines ADD COLUMN parked_at TEXT;
    ALTER TABLE machines ADD COLUMN inventory_local_next INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL,
        arm_gen INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        token TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        boot_mode TEXT NOT NULL,
        image_name TEXT NOT NULL,
        image_url TEXT NOT NULL,
        image_sha256 TEXT,
        image_size INTEGER,
        image_format TEXT NOT NULL,
        target_serial TEXT NOT NULL,
        local_served INTEGER NOT NULL DEFAULT 0,
        offered_at TEXT NOT NULL,
        booted_at TEXT,
        flashing_at TEXT,
        finished_at TEXT,
        bytes_done INTEGER,
        bytes_total INTEGER,
        phase TEXT,
        rate REAL,
        progress_at TEXT,
        ok INTEGER,
        reason TEXT,
        disk_sha256 TEXT,
        duration_s REAL
    );
    CREATE INDEX cycles_mac_idx ON cycles(mac, arm_gen, id);
    CREATE INDEX events_kind_idx ON events(kind, id);",
    // 3: event acknowledgements become a column of the event. Releases up
    // to 2 kept them in a side table `ui_event_acks` that the UI created on
    // first use, so it may or may not exist: create it empty when missing,
    // carry every ack (with its time) over, then drop it.
    "ALTER TABLE events ADD COLUMN acked_at TEXT;
    CREATE TABLE IF NOT EXISTS ui_event_acks (event_id INTEGER PRIMARY KEY, at TEXT NOT NULL);
    UPDATE events SET acked_at = (SELECT a.at FROM ui_event_acks a WHERE a.event_id = events.id)
        WHERE id IN (SELECT event_id FROM ui_event_acks);
    DROP TABLE ui_event_acks;",
    // 4: the address that booted a cycle (its plan and reports are taken
    // from that address only).
    "ALTER TABLE cycles ADD COLUMN booted_ip TEXT;",
    // 5: the address a cycle was offered to (only it can boot the cycle).
    "ALTER TABLE cycles ADD COLUMN offered_ip TEXT;",
    // 6: USB-stick keys (only their sha256) and stick cycles. A stick
    // cycle (`via = 'stick'`) is history and live progress only: the PXE
    // decision never reads it. `image_source` says where a stick flash
    // took its bytes (`stick` or `server`; NULL for PXE cycles).
    "CREATE TABLE sticks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        label TEXT NOT NULL,
        key_sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        last_ip TEXT,
        revoked_at TEXT
    );
    ALTER TABLE cycles ADD COLUMN via TEXT NOT NULL DEFAULT 'pxe';
    ALTER TABLE cycles ADD COLUMN image_source TEXT;
    CREATE INDEX cycles_via_idx ON cycles(mac, via, id);",
];

/// The schema version this build writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Bring the database to [`LATEST`].
pub fn migrate(conn: &mut Conn) -> anyhow::Result<()> {
    migrate_to(conn, LATEST)
}

/// Bring the database to `target` (tests build old databases with this).
pub fn migrate_to(conn: &mut Conn, target: u32) -> anyhow::Result<()> {
    if conn.dialect() == Dialect::Postgres {
        return super::pg::migrate(conn, target);
    }
    let current = version(conn)?;
    if current > LATEST {
        bail!(
            "the database has schema version {current} but this bty-web knows only up to \
             {LATEST}: it was written by a newer bty-web. Run that version (or newer); the \
             database was left untouched"
        );
    }
    if current == 0 {
        let foreign: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            (),
            |r| r.get(0),
        )?;
        if foreign > 0 {
            bail!(
                "the database already holds {foreign} table(s) but no bty-web schema version \
                 (it may be a Python bty-web state.db). It was left untouched; point \
                 [server] state_dir at a fresh directory"
            );
        }
    }
    for v in current..target {
        let Some(sql) = MIGRATIONS.get(v as usize) else {
            bail!(
                "no migration to schema version {} (this build knows {LATEST})",
                v + 1
            );
        };
        let tx = conn.transaction(Lock::Global)?;
        tx.execute_batch(sql)
            .with_context(|| format!("migrating the database to schema version {}", v + 1))?;
        // PRAGMA takes no parameters; v + 1 is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))?;
        tx.commit()?;
        if v > 0 || current > 0 {
            tracing::info!("database migrated to schema version {}", v + 1);
        }
    }
    Ok(())
}

/// The schema version of an open database.
pub fn version(conn: &Conn) -> anyhow::Result<u32> {
    match conn.dialect() {
        Dialect::Sqlite => Ok(conn.query_row("PRAGMA user_version", (), |r| r.get(0))?),
        Dialect::Postgres => super::pg::version(conn),
    }
}
