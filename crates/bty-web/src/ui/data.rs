//! The UI's read queries (one SQL statement per view, so a 500-machine
//! list costs one round trip to the database thread) and the event
//! acknowledgements (the `acked_at` column of `events`, migration 3).

use crate::db::sql::{self, params, Conn, Dialect, Row};
use serde::Serialize;

use super::render::{human_bytes, human_duration};
use crate::db::events::Event;
use crate::domain::bus::ProgressMsg;

/// Which machines the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Every machine.
    All,
    /// No image assigned yet (found by PXE, or registered without one).
    Discovered,
    /// An image is assigned.
    Assigned,
    /// A flash cycle is open right now.
    Flashing,
    /// The current cycle failed, or the machine is parked.
    Failed,
}

impl Filter {
    /// From the query string; unknown values mean "all".
    pub fn parse(s: Option<&str>) -> Filter {
        match s {
            Some("discovered") => Filter::Discovered,
            Some("assigned") => Filter::Assigned,
            Some("flashing") => Filter::Flashing,
            Some("failed") => Filter::Failed,
            _ => Filter::All,
        }
    }

    /// Spelling in URLs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Discovered => "discovered",
            Filter::Assigned => "assigned",
            Filter::Flashing => "flashing",
            Filter::Failed => "failed",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Filter::All => "1 = 1",
            Filter::Discovered => "m.image IS NULL",
            Filter::Assigned => "m.image IS NOT NULL",
            // An open cycle is always its arming's newest, so this index
            // probe matches "the current cycle is open" without first
            // finding every machine's current cycle.
            Filter::Flashing => {
                "EXISTS (SELECT 1 FROM cycles o WHERE o.mac = m.mac AND o.arm_gen = m.arm_gen \
                 AND o.state IN ('offered', 'booted', 'flashing'))"
            }
            Filter::Failed => "(m.parked_reason IS NOT NULL OR c.state = 'failed')",
        }
    }
}

/// Sortable columns (an allow-list: the name never reaches SQL).
pub const SORTS: &[(&str, &str)] = &[
    ("mac", "m.mac"),
    ("name", "m.name"),
    ("image", "m.image"),
    ("mode", "m.boot_mode"),
    ("state", "c.state"),
    ("seen", "m.last_seen_at"),
    ("flashed", "last_flashed_at"),
];

/// List parameters after validation.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Free text.
    pub q: String,
    /// Filter.
    pub filter: Filter,
    /// Key of [`SORTS`].
    pub sort: &'static str,
    /// Descending.
    pub desc: bool,
    /// 1-based page.
    pub page: u32,
    /// Rows per page.
    pub per_page: u32,
}

/// A progress bar's numbers, ready to show.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProgressView {
    /// Cycle id.
    pub cycle: i64,
    /// 0..=100 when the total is known.
    pub pct: Option<f64>,
    /// `42%`.
    pub pct_text: String,
    /// `1.2 GiB of 4.0 GiB`.
    pub bytes_text: String,
    /// `110.0 MiB/s`.
    pub rate_text: String,
    /// `2m 05s`.
    pub eta_text: String,
    /// Agent phase.
    pub phase: String,
    /// Cycle state.
    pub state: String,
}

impl ProgressView {
    /// From stored or reported numbers.
    pub fn new(
        cycle: i64,
        state: &str,
        phase: Option<&str>,
        done: Option<u64>,
        total: Option<u64>,
        rate: Option<f64>,
    ) -> ProgressView {
        let pct = match (done, total) {
            (Some(d), Some(t)) if t > 0 => Some((d as f64 * 100.0 / t as f64).min(100.0)),
            _ => None,
        };
        let eta = match (done, total, rate) {
            (Some(d), Some(t), Some(r)) if r > 0.0 && t >= d => human_duration((t - d) as f64 / r),
            _ => "–".into(),
        };
        ProgressView {
            cycle,
            pct,
            pct_text: pct
                .map(|p| format!("{p:.0}%"))
                .unwrap_or_else(|| "–".into()),
            bytes_text: match (done, total) {
                (Some(d), Some(t)) => format!("{} of {}", human_bytes(d), human_bytes(t)),
                (Some(d), None) => human_bytes(d),
                _ => "waiting for the first report".into(),
            },
            rate_text: rate
                .filter(|r| r.is_finite() && *r >= 0.0)
                .map(|r| format!("{}/s", human_bytes(r as u64)))
                .unwrap_or_else(|| "–".into()),
            eta_text: eta,
            phase: phase.unwrap_or("").to_string(),
            state: state.to_string(),
        }
    }

    /// From a live report.
    pub fn from_msg(p: &ProgressMsg) -> ProgressView {
        ProgressView::new(
            p.cycle,
            "flashing",
            Some(&p.phase),
            Some(p.bytes_done),
            p.bytes_total,
            p.rate,
        )
    }
}

/// One row of the machines list.
#[derive(Debug, Clone, Serialize)]
pub struct RowView {
    /// `aa:bb:...`.
    pub mac: String,
    /// `aabb...` (element ids, SSE event names).
    pub key: String,
    /// Name.
    pub name: Option<String>,
    /// Mode.
    pub boot_mode: String,
    /// Image.
    pub image: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Latest contact.
    pub last_seen_at: Option<String>,
    /// Its address.
    pub last_seen_ip: Option<String>,
    /// Latest successful flash.
    pub last_flashed_at: Option<String>,
    /// Parked reason.
    pub parked: Option<String>,
    /// `discovered` / `assigned` / `flashing` / `failed` / `parked` / `flashed`.
    pub state: String,
    /// The current cycle's state.
    pub cycle_state: Option<String>,
    /// Progress of an open cycle.
    pub progress: Option<ProgressView>,
}

/// The list's row query; only the labels' aggregate differs by engine
/// (each joins them, in order, with U+001F).
fn row_sql(dialect: Dialect) -> String {
    let labels = match dialect {
        Dialect::Sqlite => {
            "(SELECT group_concat(label, char(31)) FROM
             (SELECT label FROM machine_labels l WHERE l.mac = m.mac ORDER BY label))"
        }
        Dialect::Postgres => {
            "(SELECT string_agg(label, chr(31) ORDER BY label) FROM machine_labels l
              WHERE l.mac = m.mac)"
        }
    };
    format!(
        "WITH cur AS (
    SELECT m.*, (SELECT x.id FROM cycles x WHERE x.mac = m.mac AND x.arm_gen = m.arm_gen
                 ORDER BY x.id DESC LIMIT 1) AS cid,
           (SELECT d.finished_at FROM cycles d WHERE d.mac = m.mac AND d.state = 'done'
                 ORDER BY d.id DESC LIMIT 1) AS last_flashed_at
    FROM machines m)
  SELECT m.mac, m.name, m.boot_mode, m.image, m.last_seen_at, m.last_seen_ip, m.last_flashed_at,
         m.parked_reason, c.id, c.state, c.phase, c.bytes_done, c.bytes_total, c.rate,
         {labels} AS labels
  FROM cur m LEFT JOIN cycles c ON c.id = m.cid"
    )
}

fn row(r: &Row) -> sql::Result<RowView> {
    let mac: String = r.get(0)?;
    let image: Option<String> = r.get(3)?;
    let parked: Option<String> = r.get(7)?;
    let cid: Option<i64> = r.get(8)?;
    let cstate: Option<String> = r.get(9)?;
    let labels: Option<String> = r.get(14)?;
    let open = matches!(cstate.as_deref(), Some("offered" | "booted" | "flashing"));
    let state = if parked.is_some() {
        "parked"
    } else if cstate.as_deref() == Some("failed") {
        "failed"
    } else if open {
        "flashing"
    } else if cstate.as_deref() == Some("done") {
        "flashed"
    } else if image.is_some() {
        "assigned"
    } else {
        "discovered"
    };
    let progress = match (cid, open) {
        (Some(id), true) => Some(ProgressView::new(
            id,
            cstate.as_deref().unwrap_or(""),
            r.get::<_, Option<String>>(10)?.as_deref(),
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
        )),
        _ => None,
    };
    Ok(RowView {
        key: mac.replace(':', ""),
        mac,
        name: r.get(1)?,
        boot_mode: r.get(2)?,
        image,
        labels: labels
            .map(|l| l.split('\u{1f}').map(str::to_string).collect())
            .unwrap_or_default(),
        last_seen_at: r.get(4)?,
        last_seen_ip: r.get(5)?,
        last_flashed_at: r.get(6)?,
        parked,
        state: state.into(),
        cycle_state: cstate,
        progress,
    })
}

/// Escape `%`, `_` and `\` for `LIKE ... ESCAPE '\'`.
fn like(q: &str) -> String {
    let mut s = String::from("%");
    for ch in q.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('%');
    s
}

// lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's
// does not.
const SEARCH_SQL: &str = "(CAST(?1 AS TEXT) IS NULL \
    OR lower(m.mac) LIKE lower(?2) ESCAPE '\\' OR lower(m.mac) LIKE lower(?1) ESCAPE '\\' \
    OR lower(m.name) LIKE lower(?1) ESCAPE '\\' OR lower(m.image) LIKE lower(?1) ESCAPE '\\' \
    OR lower(m.last_seen_ip) LIKE lower(?1) ESCAPE '\\' \
    OR EXISTS (SELECT 1 FROM machine_labels l WHERE l.mac = m.mac \
               AND lower(l.label) LIKE lower(?1) ESCAPE '\\'))";

/// A page of the machines list and the number of matching machines.
pub fn list(conn: &Conn, q: &ListQuery) -> sql::Result<(Vec<RowView>, u64)> {
    let text = q.q.trim();
    let (p1, p2) = if text.is_empty() {
        (None, None)
    } else {
        // A MAC typed with hyphens or in capitals still matches.
        (
            Some(like(text)),
            Some(like(&text.to_ascii_lowercase().replace('-', ":"))),
        )
    };
    let col = SORTS
        .iter()
        .find(|(k, _)| *k == q.sort)
        .map(|(_, c)| *c)
        .unwrap_or("m.mac");
    let dir = if q.desc { "DESC" } else { "ASC" };
    // SQLite's NULL order (first ascending, last descending), spelled out
    // so that PostgreSQL (the other way round) sorts the same.
    let nulls = if q.desc { "NULLS LAST" } else { "NULLS FIRST" };
    let filter = q.filter.sql();
    // Only the cycle filters need each machine's current cycle.
    let count_sql = if q.filter == Filter::Failed {
        format!(
            "WITH cur AS (SELECT m.*, (SELECT x.id FROM cycles x WHERE x.mac = m.mac AND \
             x.arm_gen = m.arm_gen ORDER BY x.id DESC LIMIT 1) AS cid FROM machines m) \
             SELECT count(*) FROM cur m LEFT JOIN cycles c ON c.id = m.cid \
             WHERE {filter} AND {SEARCH_SQL}"
        )
    } else {
        format!("SELECT count(*) FROM machines m WHERE {filter} AND {SEARCH_SQL}")
    };
    let total: u64 = conn
        .prepare_cached(&count_sql)?
        .query_row(params![p1, p2], |r| r.get(0))?;
    let offset = u64::from(q.page.saturating_sub(1)) * u64::from(q.per_page);
    let mut st = conn.prepare_cached(&format!(
        "{} WHERE {filter} AND {SEARCH_SQL} ORDER BY {col} {dir} {nulls}, m.mac {dir} \
         LIMIT ?3 OFFSET ?4",
        row_sql(conn.dialect())
    ))?;
    let rows = st
        .query_map(params![p1, p2, q.per_page, offset], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, total))
}

/// One machine's row (live updates of the list).
pub fn row_of(conn: &Conn, mac: &str) -> sql::Result<Option<RowView>> {
    use crate::db::sql::OptionalExtension;
    conn.prepare_cached(&format!("{} WHERE m.mac = ?1", row_sql(conn.dialect())))?
        .query_row([mac], row)
        .optional()
}

/// The dashboard's numbers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Counts {
    /// All machines.
    pub total: u64,
    /// No image.
    pub discovered: u64,
    /// With an image.
    pub assigned: u64,
    /// Open cycles now.
    pub flashing: u64,
    /// Cycles that failed in the last 24 hours.
    pub failed_day: u64,
    /// Parked machines.
    pub parked: u64,
    /// Flashes done in the last 24 hours.
    pub done_day: u64,
}

/// Count machines and recent cycles.
pub fn counts(conn: &Conn) -> sql::Result<Counts> {
    let day_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (total, discovered, parked): (u64, u64, u64) = conn.query_row(
        "SELECT count(*), \
         CAST(coalesce(sum(CASE WHEN image IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(coalesce(sum(CASE WHEN parked_reason IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM machines",
        (),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let flashing: u64 = conn.query_row(
        "SELECT count(*) FROM cycles c JOIN machines m ON m.mac = c.mac AND m.arm_gen = c.arm_gen \
         WHERE c.state IN ('offered', 'booted', 'flashing')",
        (),
        |r| r.get(0),
    )?;
    let (failed_day, done_day): (u64, u64) = conn.query_row(
        "SELECT CAST(coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(coalesce(sum(CASE WHEN state = 'done' THEN 1 ELSE 0 END), 0) AS BIGINT) FROM cycles \
         WHERE finished_at >= ?1",
        [&day_ago],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Counts {
        total,
        discovered,
        assigned: total - discovered,
        flashing,
        failed_day,
        parked,
        done_day,
    })
}

/// An open flash for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFlash {
    /// Machine.
    pub mac: String,
    /// `aabb...`.
    pub key: String,
    /// Its name.
    pub name: Option<String>,
    /// Image.
    pub image: String,
    /// Attempt.
    pub attempt: u32,
    /// Progress.
    pub progress: ProgressView,
}

/// Open flashes of current armings, oldest first.
pub fn active_flashes(conn: &Conn, limit: u32) -> sql::Result<Vec<ActiveFlash>> {
    let mut st = conn.prepare_cached(
        "SELECT c.mac, m.name, c.image_name, c.attempt, c.id, c.state, c.phase, c.bytes_done, \
         c.bytes_total, c.rate FROM cycles c JOIN machines m ON m.mac = c.mac AND m.arm_gen = c.arm_gen \
         WHERE c.state IN ('offered', 'booted', 'flashing') ORDER BY c.id LIMIT ?1",
    )?;
    let rows = st.query_map([limit], |r| {
        let mac: String = r.get(0)?;
        let state: String = r.get(5)?;
        Ok(ActiveFlash {
            key: mac.replace(':', ""),
            mac,
            name: r.get(1)?,
            image: r.get(2)?,
            attempt: r.get(3)?,
            progress: ProgressView::new(
                r.get(4)?,
                &state,
                r.get::<_, Option<String>>(6)?.as_deref(),
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ),
        })
    })?;
    rows.collect()
}

/// An event with its acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Acknowledged by an operator.
    pub acked: bool,
    /// `failed` kinds are shown as problems.
    pub problem: bool,
}

impl EventView {
    /// A fresh (unacknowledged) event.
    pub fn new(event: Event, acked: bool) -> EventView {
        let problem = event.kind.ends_with("failed")
            || event.kind.contains("park")
            || event.kind.ends_with("orphan");
        EventView {
            event,
            acked,
            problem,
        }
    }
}

/// Event filters of the Events page.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Substring of kind, MAC or summary.
    pub q: String,
    /// `failed` / `unacked` / `` (all).
    pub only: String,
    /// Exact MAC.
    pub mac: Option<String>,
    /// Cursor: ids below this.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// A page of events, newest first.
pub fn events(conn: &Conn, q: &EventQuery) -> sql::Result<Vec<EventView>> {
    let text = q.q.trim();
    let pat = (!text.is_empty()).then(|| like(text));
    let only = match q.only.as_str() {
        "failed" => "lower(e.kind) LIKE '%failed'",
        "unacked" => "e.acked_at IS NULL",
        _ => "1 = 1",
    };
    let mut st = conn.prepare_cached(&format!(
        "SELECT e.id, e.ts, e.kind, e.mac, e.summary, e.details, \
         CASE WHEN e.acked_at IS NULL THEN 0 ELSE 1 END \
         FROM events e \
         WHERE {only} AND (CAST(?1 AS TEXT) IS NULL OR e.mac = ?1) \
         AND (CAST(?2 AS BIGINT) IS NULL OR e.id < ?2) \
         AND (CAST(?3 AS TEXT) IS NULL OR lower(e.kind) LIKE lower(?3) ESCAPE '\\' \
              OR lower(e.mac) LIKE lower(?3) ESCAPE '\\' \
              OR lower(e.summary) LIKE lower(?3) ESCAPE '\\') \
         ORDER BY e.id DESC LIMIT ?4"
    ))?;
    let rows = st.query_map(
        params![q.mac, q.before_id, pat, q.limit.clamp(1, 500)],
        |r| {
            let details: Option<String> = r.get(5)?;
            Ok(EventView::new(
                Event {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    kind: r.get(2)?,
                    mac: r.get(3)?,
                    summary: r.get(4)?,
                    details: details.and_then(|d| serde_json::from_str(&d).ok()),
                },
                r.get(6)?,
            ))
        },
    )?;
    rows.collect()
}

/// Acknowledge (or un-acknowledge) events; returns how many changed.
/// Acknowledging keeps the time of the first acknowledgement.
pub fn ack(conn: &Conn, ids: &[i64], on: bool, now: &str) -> sql::Result<usize> {
    let mut n = 0;
    for id in ids {
        n += if on {
            conn.prepare_cached(
                "UPDATE events SET acked_at = ?2 WHERE id = ?1 AND acked_at IS NULL",
            )?
            .execute(params![id, now])?
        } else {
            conn.prepare_cached(
                "UPDATE events SET acked_at = NULL WHERE id = ?1 AND acked_at IS NOT NULL",
            )?
            .execute([id])?
        };
    }
    Ok(n)
}

/// Unacknowledged problem events (dashboard health).
pub fn unacked_problems(conn: &Conn) -> sql::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM (SELECT acked_at FROM events WHERE lower(kind) LIKE '%failed' \
         ORDER BY id DESC LIMIT 1000) AS recent WHERE acked_at IS NULL",
        (),
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_numbers() {
        let p = ProgressView::new(
            1,
            "flashing",
            Some("writing"),
            Some(512 << 20),
            Some(1 << 30),
            Some(64.0 * 1048576.0),
        );
        assert_eq!(p.pct_text, "50%");
        assert_eq!(p.bytes_text, "512.0 MiB of 1.0 GiB");
        assert_eq!(p.rate_text, "64.0 MiB/s");
        assert_eq!(p.eta_text, "8s");
        let none = ProgressView::new(1, "offered", None, None, None, None);
        assert_eq!(none.pct, None);
        assert_eq!(none.eta_text, "–");
    }

    #[test]
    fn like_escapes() {
        assert_eq!(like("a_b%"), "%a\\_b\\%%");
    }

    fn conn() -> Conn {
        let raw = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::configure(&raw).unwrap();
        let mut c = Conn::sqlite(raw);
        crate::db::schema::migrate(&mut c).unwrap();
        c
    }

    fn put(c: &Conn, mac: &str, name: Option<&str>, labels: &[&str]) {
        let s = crate::db::machines::Settings {
            name: name.map(str::to_string),
            boot_mode: bty_proto::BootMode::Inventory,
            image: None,
            target_disk_serial: None,
            sanboot_drive: None,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        crate::db::machines::upsert(c, mac.parse().unwrap(), &s, 0, "t0").unwrap();
    }

    fn query(q: &str, sort: &'static str, desc: bool) -> ListQuery {
        ListQuery {
            q: q.into(),
            filter: Filter::All,
            sort,
            desc,
            page: 1,
            per_page: 50,
        }
    }

    fn macs(rows: &[RowView]) -> Vec<&str> {
        rows.iter().map(|r| r.mac.as_str()).collect()
    }

    // The portable spellings of the list query (explicit NULLS FIRST/LAST,
    // lower() LIKE, the labels' aggregate, CAST sums) keep SQLite's answers.
    #[test]
    fn the_list_sorts_nulls_searches_without_case_and_joins_labels() {
        let c = conn();
        put(
            &c,
            "52:54:00:00:00:01",
            Some("runner-b"),
            &["rack2", "rack1"],
        );
        // Text sorts by byte (SQLite's BINARY); names here sort the same
        // under any collation.
        put(&c, "52:54:00:00:00:02", None, &["Shelf3"]);
        put(&c, "52:54:00:00:00:03", Some("runner-a"), &[]);
        let (rows, total) = list(&c, &query("", "name", false)).unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            macs(&rows),
            [
                "52:54:00:00:00:02",
                "52:54:00:00:00:03",
                "52:54:00:00:00:01"
            ],
            "no name first ascending"
        );
        assert_eq!(rows[2].labels, ["rack1", "rack2"], "labels in order");
        assert!(rows[1].labels.is_empty());
        let (rows, _) = list(&c, &query("", "name", true)).unwrap();
        assert_eq!(
            macs(&rows),
            [
                "52:54:00:00:00:01",
                "52:54:00:00:00:03",
                "52:54:00:00:00:02"
            ],
            "no name last descending"
        );
        let (rows, total) = list(&c, &query("RUNNER", "mac", false)).unwrap();
        assert_eq!(
            (macs(&rows), total),
            (vec!["52:54:00:00:00:01", "52:54:00:00:00:03"], 2)
        );
        let (rows, _) = list(&c, &query("RACK2", "mac", false)).unwrap();
        assert_eq!(macs(&rows), ["52:54:00:00:00:01"]);
        let (rows, _) = list(&c, &query("shelf", "mac", false)).unwrap();
        assert_eq!(macs(&rows), ["52:54:00:00:00:02"]);
        let (rows, total) = list(&c, &query("runner_", "mac", false)).unwrap();
        assert_eq!((rows.len(), total), (0, 0), "_ is matched literally");
        let counts = counts(&c).unwrap();
        assert_eq!((counts.total, counts.discovered, counts.parked), (3, 3, 0));
        assert_eq!((counts.failed_day, counts.done_day), (0, 0));
    }
}
