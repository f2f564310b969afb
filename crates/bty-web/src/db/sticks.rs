//! USB-stick keys: one row per key minted with `POST /api/sticks`. Only
//! the key's sha256 is stored, so the database (or a backup of it) never
//! holds a key that works.

use crate::db::sql::{self, params, Conn, OptionalExtension, Row};
use serde::Serialize;

/// One stick key, as the admin API lists it (never the key itself).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stick {
    /// Row id (`DELETE /api/sticks/{id}`).
    pub id: i64,
    /// What the operator called it.
    pub label: String,
    /// When it was minted.
    pub created_at: String,
    /// When a stick last used it.
    pub last_used_at: Option<String>,
    /// The address that last used it.
    pub last_ip: Option<String>,
    /// When it was revoked (it then opens nothing).
    pub revoked_at: Option<String>,
}

const COLUMNS: &str = "id, label, created_at, last_used_at, last_ip, revoked_at";

fn from_row(r: &Row) -> sql::Result<Stick> {
    Ok(Stick {
        id: r.get(0)?,
        label: r.get(1)?,
        created_at: r.get(2)?,
        last_used_at: r.get(3)?,
        last_ip: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// Store a new key by its sha256 (lowercase hex).
pub fn insert(conn: &Conn, label: &str, key_sha256: &str, now: &str) -> sql::Result<Stick> {
    conn.prepare_cached(&format!(
        "INSERT INTO sticks (label, key_sha256, created_at) VALUES (?1, ?2, ?3) RETURNING {COLUMNS}"
    ))?
    .query_row(params![label, key_sha256, now], from_row)
}

/// Every key, oldest first.
pub fn list(conn: &Conn) -> sql::Result<Vec<Stick>> {
    let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM sticks ORDER BY id"))?;
    let rows = st.query_map((), from_row)?;
    rows.collect()
}

/// The key whose sha256 is `key_sha256`.
pub fn by_hash(conn: &Conn, key_sha256: &str) -> sql::Result<Option<Stick>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sticks WHERE key_sha256 = ?1"
    ))?
    .query_row([key_sha256], from_row)
    .optional()
}

/// A key by id.
pub fn get(conn: &Conn, id: i64) -> sql::Result<Option<Stick>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM sticks WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// A stick used key `id` from `ip`.
pub fn touch(conn: &Conn, id: i64, ip: &str, now: &str) -> sql::Result<()> {
    conn.prepare_cached("UPDATE sticks SET last_used_at = ?2, last_ip = ?3 WHERE id = ?1")?
        .execute(params![id, now, ip])?;
    Ok(())
}

/// Revoke key `id` (the first revocation's time is kept).
pub fn revoke(conn: &Conn, id: i64, now: &str) -> sql::Result<()> {
    conn.prepare_cached("UPDATE sticks SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}
