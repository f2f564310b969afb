//! The event log: what happened to which machine, newest first.

use crate::db::sql::{self, params, Conn, Row};
use serde::{Deserialize, Serialize};

/// Events kept; older rows are pruned as new ones arrive.
pub const RETAIN: i64 = 200_000;

/// One logged event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Increasing id (the paging cursor).
    pub id: i64,
    /// RFC 3339 UTC.
    pub ts: String,
    /// Dotted kind such as `flash.done`.
    pub kind: String,
    /// Machine it concerns.
    pub mac: Option<String>,
    /// One line for humans.
    pub summary: String,
    /// Structured details.
    pub details: Option<serde_json::Value>,
}

fn from_row(r: &Row) -> sql::Result<Event> {
    let details: Option<String> = r.get(5)?;
    Ok(Event {
        id: r.get(0)?,
        ts: r.get(1)?,
        kind: r.get(2)?,
        mac: r.get(3)?,
        summary: r.get(4)?,
        details: details.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

/// Append an event and return it as stored.
pub fn insert(
    conn: &Conn,
    kind: &str,
    mac: Option<&str>,
    summary: &str,
    details: Option<&serde_json::Value>,
    now: &str,
) -> sql::Result<Event> {
    let details_text = details.map(|d| d.to_string());
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO events (ts, kind, mac, summary, details) VALUES (?1, ?2, ?3, ?4, ?5) \
             RETURNING id",
        )?
        .query_row(params![now, kind, mac, summary, details_text], |r| r.get(0))?;
    if id % 1000 == 0 {
        conn.prepare_cached("DELETE FROM events WHERE id <= ?1")?
            .execute([id - RETAIN])?;
    }
    Ok(Event {
        id,
        ts: now.to_string(),
        kind: kind.to_string(),
        mac: mac.map(str::to_string),
        summary: summary.to_string(),
        details: details.cloned(),
    })
}

/// Filter and cursor for [`list`].
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Only this machine.
    pub mac: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only ids below this (the next page).
    pub before_id: Option<i64>,
    /// Page size, clamped to 1..=500.
    pub limit: u32,
}

/// A page of events, newest first.
pub fn list(conn: &Conn, q: &Query) -> sql::Result<Vec<Event>> {
    let mut st = conn.prepare_cached(
        "SELECT id, ts, kind, mac, summary, details FROM events \
         WHERE (CAST(?1 AS TEXT) IS NULL OR mac = ?1) AND (CAST(?2 AS TEXT) IS NULL OR kind = ?2) \
         AND (CAST(?3 AS BIGINT) IS NULL OR id < ?3) \
         ORDER BY id DESC LIMIT ?4",
    )?;
    let rows = st.query_map(
        params![q.mac, q.kind, q.before_id, q.limit.clamp(1, 500)],
        from_row,
    )?;
    rows.collect()
}
