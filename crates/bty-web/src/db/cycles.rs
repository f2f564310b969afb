//! Flash cycles: one row per flash attempt, kept as history.

use crate::db::sql::{self, params, Conn, OptionalExtension, Row};
use bty_proto::Mac;
use serde::Serialize;

/// Where a cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CycleState {
    /// The flash chain script was served.
    Offered,
    /// The netboot kernel or initrd was fetched with `?mac=`.
    Booted,
    /// The agent took the plan; progress may flow.
    Flashing,
    /// `done` with `ok: true`.
    Done,
    /// `done` with `ok: false` (or a legacy `failed` status).
    Failed,
    /// Replaced by an operator change before it finished.
    Cancelled,
}

impl CycleState {
    /// Stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            CycleState::Offered => "offered",
            CycleState::Booted => "booted",
            CycleState::Flashing => "flashing",
            CycleState::Done => "done",
            CycleState::Failed => "failed",
            CycleState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<CycleState> {
        Some(match s {
            "offered" => CycleState::Offered,
            "booted" => CycleState::Booted,
            "flashing" => CycleState::Flashing,
            "done" => CycleState::Done,
            "failed" => CycleState::Failed,
            "cancelled" => CycleState::Cancelled,
            _ => return None,
        })
    }

    /// Still waiting for its `done`.
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            CycleState::Offered | CycleState::Booted | CycleState::Flashing
        )
    }
}

/// One flash cycle.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cycle {
    /// Cycle id (the plan's `cycle`).
    pub id: i64,
    /// Machine.
    pub mac: String,
    /// Arming generation of the machine it belongs to.
    pub arm_gen: i64,
    /// 1 for the first try of this arming, counting up on retries.
    pub attempt: u32,
    /// The secret every report must carry. Not shown by the API.
    #[serde(skip)]
    pub token: String,
    /// Where it is.
    pub state: CycleState,
    /// Boot mode that started it.
    pub boot_mode: String,
    /// Catalog entry name.
    pub image_name: String,
    /// URL handed to the agent.
    pub image_url: String,
    /// Expected sha256 of the download.
    pub image_sha256: Option<String>,
    /// Expected size of the download.
    pub image_size: Option<u64>,
    /// Container format.
    pub image_format: String,
    /// Disk it writes.
    pub target_serial: String,
    /// flash-always: the disk boot after this cycle was served.
    pub local_served: bool,
    /// Timestamps of each state.
    pub offered_at: String,
    /// Kernel fetched.
    pub booted_at: Option<String>,
    /// Plan taken.
    pub flashing_at: Option<String>,
    /// done / failed / cancelled.
    pub finished_at: Option<String>,
    /// Latest progress.
    pub bytes_done: Option<u64>,
    /// Latest progress total.
    pub bytes_total: Option<u64>,
    /// Latest phase.
    pub phase: Option<String>,
    /// Latest rate, bytes/s.
    pub rate: Option<f64>,
    /// When progress last arrived.
    pub progress_at: Option<String>,
    /// The `done` verdict.
    pub ok: Option<bool>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Digest the agent read back from the disk.
    pub disk_sha256: Option<String>,
    /// Flash wall time the agent reported.
    pub duration_s: Option<f64>,
    /// The client address that fetched the netboot kernel (moved it to
    /// `booted`): the only one its plan and reports are taken from.
    #[serde(skip)]
    pub booted_ip: Option<String>,
    /// The client address the cycle was offered to (None: a cycle from
    /// before schema 5): only it can move the cycle to `booted`.
    #[serde(skip)]
    pub offered_ip: Option<String>,
    /// How the flash was started: `pxe` (a PXE boot and a plan) or
    /// `stick` (a USB stick's wizard, `POST /stick/flash`). A stick cycle
    /// is history and live progress only: the PXE decision never reads it.
    pub via: String,
    /// A stick cycle's image source: `stick` (a file on the stick) or
    /// `server` (this bty-web's catalog); None for PXE cycles.
    pub image_source: Option<String>,
}

impl Cycle {
    /// Started by a USB stick's wizard.
    pub fn is_stick(&self) -> bool {
        self.via == VIA_STICK
    }
}

/// [`Cycle::via`] of a PXE cycle.
pub const VIA_PXE: &str = "pxe";
/// [`Cycle::via`] of a stick cycle.
pub const VIA_STICK: &str = "stick";

/// The boot mode a stick cycle records (it booted no PXE mode).
pub const STICK_BOOT_MODE: &str = "usb-stick";

const COLUMNS: &str = "id, mac, arm_gen, attempt, token, state, boot_mode, image_name, image_url, \
    image_sha256, image_size, image_format, target_serial, local_served, offered_at, booted_at, \
    flashing_at, finished_at, bytes_done, bytes_total, phase, rate, progress_at, ok, reason, \
    disk_sha256, duration_s, booted_ip, offered_ip, via, image_source";

fn from_row(r: &Row) -> sql::Result<Cycle> {
    let state: String = r.get(5)?;
    Ok(Cycle {
        id: r.get(0)?,
        mac: r.get(1)?,
        arm_gen: r.get(2)?,
        attempt: r.get(3)?,
        token: r.get(4)?,
        state: CycleState::parse(&state).ok_or_else(|| {
            sql::Error::conversion("state", format!("unknown cycle state {state:?}"))
        })?,
        boot_mode: r.get(6)?,
        image_name: r.get(7)?,
        image_url: r.get(8)?,
        image_sha256: r.get(9)?,
        image_size: r.get(10)?,
        image_format: r.get(11)?,
        target_serial: r.get(12)?,
        local_served: r.get(13)?,
        offered_at: r.get(14)?,
        booted_at: r.get(15)?,
        flashing_at: r.get(16)?,
        finished_at: r.get(17)?,
        bytes_done: r.get(18)?,
        bytes_total: r.get(19)?,
        phase: r.get(20)?,
        rate: r.get(21)?,
        progress_at: r.get(22)?,
        ok: r.get(23)?,
        reason: r.get(24)?,
        disk_sha256: r.get(25)?,
        duration_s: r.get(26)?,
        booted_ip: r.get(27)?,
        offered_ip: r.get(28)?,
        via: r.get(29)?,
        image_source: r.get(30)?,
    })
}

/// The machine's current cycle: the newest PXE cycle of its arming
/// generation (stick cycles never take part in the PXE decision).
pub fn current(conn: &Conn, mac: Mac, arm_gen: i64) -> sql::Result<Option<Cycle>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cycles WHERE mac = ?1 AND arm_gen = ?2 AND via = 'pxe' \
         ORDER BY id DESC LIMIT 1"
    ))?
    .query_row(params![mac.to_string(), arm_gen], from_row)
    .optional()
}

/// The cycle holding `token`, whichever machine it belongs to.
pub fn by_token(conn: &Conn, token: &str) -> sql::Result<Option<Cycle>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM cycles WHERE token = ?1"))?
        .query_row([token], from_row)
        .optional()
}

/// A cycle by id.
pub fn get(conn: &Conn, id: i64) -> sql::Result<Option<Cycle>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM cycles WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// A machine's cycles, newest first.
pub fn history(conn: &Conn, mac: Mac, limit: u32) -> sql::Result<Vec<Cycle>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cycles WHERE mac = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = st.query_map(params![mac.to_string(), limit], from_row)?;
    rows.collect()
}

/// What a new cycle is made of.
pub struct NewCycle<'a> {
    /// Machine.
    pub mac: Mac,
    /// Its arming generation.
    pub arm_gen: i64,
    /// Attempt number.
    pub attempt: u32,
    /// Initial state (`offered` from PXE, `flashing` straight from a plan).
    pub state: CycleState,
    /// Boot mode.
    pub boot_mode: &'a str,
    /// Image name.
    pub image_name: &'a str,
    /// Image URL for the agent.
    pub image_url: &'a str,
    /// Expected digest.
    pub image_sha256: Option<&'a str>,
    /// Expected size.
    pub image_size: Option<u64>,
    /// Format.
    pub image_format: &'a str,
    /// Target serial.
    pub target_serial: &'a str,
    /// The address the cycle is offered to (the PXE contact's).
    pub offered_ip: &'a str,
}

/// Insert a cycle with a fresh 128-bit token; returns it as stored.
pub fn insert(conn: &Conn, c: &NewCycle<'_>, now: &str) -> sql::Result<Cycle> {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let flashing_at = (c.state == CycleState::Flashing).then_some(now);
    conn.prepare_cached(&format!(
        "INSERT INTO cycles (mac, arm_gen, attempt, token, state, boot_mode, image_name, \
         image_url, image_sha256, image_size, image_format, target_serial, offered_at, flashing_at, offered_ip) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
         RETURNING {COLUMNS}"
    ))?
    .query_row(
        params![
            c.mac.to_string(),
            c.arm_gen,
            c.attempt,
            token,
            c.state.as_str(),
            c.boot_mode,
            c.image_name,
            c.image_url,
            c.image_sha256,
            c.image_size,
            c.image_format,
            c.target_serial,
            now,
            flashing_at,
            c.offered_ip
        ],
        from_row,
    )
}

/// `offered` -> `booted`: the netboot kernel or initrd was fetched, by
/// the client at `ip`.
pub fn mark_booted(conn: &Conn, id: i64, ip: &str, now: &str) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE cycles SET state = 'booted', booted_at = ?2, booted_ip = ?3 WHERE id = ?1",
    )?
    .execute(params![id, now, ip])?;
    Ok(())
}

/// `offered`/`booted` -> `flashing`: the agent took the plan.
pub fn mark_flashing(conn: &Conn, id: i64, now: &str) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE cycles SET state = 'flashing', flashing_at = COALESCE(flashing_at, ?2) WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    Ok(())
}

/// Store the latest progress (moves `offered`/`booted` to `flashing`).
pub fn progress(
    conn: &Conn,
    id: i64,
    p: &bty_proto::plan::ProgressReport,
    now: &str,
) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE cycles SET state = 'flashing', flashing_at = COALESCE(flashing_at, ?2), \
         bytes_done = ?3, bytes_total = ?4, phase = ?5, rate = ?6, progress_at = ?2 WHERE id = ?1",
    )?
    .execute(params![
        id,
        now,
        p.bytes_done,
        p.bytes_total,
        p.phase.as_str(),
        p.rate
    ])?;
    Ok(())
}

/// Terminal verdict of a cycle.
pub struct Finish<'a> {
    /// `done` (true) or `failed` (false).
    pub ok: bool,
    /// Why it failed.
    pub reason: Option<&'a str>,
    /// Digest read back from disk.
    pub disk_sha256: Option<&'a str>,
    /// Wall time.
    pub duration_s: Option<f64>,
}

/// Close a cycle with its verdict.
pub fn finish(conn: &Conn, id: i64, f: &Finish<'_>, now: &str) -> sql::Result<()> {
    let state = if f.ok { "done" } else { "failed" };
    conn.prepare_cached(
        "UPDATE cycles SET state = ?2, ok = ?3, reason = ?4, disk_sha256 = ?5, duration_s = ?6, \
         finished_at = ?7 WHERE id = ?1",
    )?
    .execute(params![
        id,
        state,
        f.ok,
        f.reason,
        f.disk_sha256,
        f.duration_s,
        now
    ])?;
    Ok(())
}

/// flash-always: remember that the disk boot after this cycle was served.
pub fn mark_local_served(conn: &Conn, id: i64) -> sql::Result<()> {
    conn.prepare_cached("UPDATE cycles SET local_served = 1 WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Cancel the machine's open PXE cycles (an operator change replaced
/// them). A stick flash goes on whatever the operator changes: the
/// stick, not bty-web, drives it.
pub fn cancel_open(conn: &Conn, mac: Mac, reason: &str, now: &str) -> sql::Result<usize> {
    conn.prepare_cached(
        "UPDATE cycles SET state = 'cancelled', reason = ?2, finished_at = ?3 \
         WHERE mac = ?1 AND via = 'pxe' AND state IN ('offered', 'booted', 'flashing')",
    )?
    .execute(params![mac.to_string(), reason, now])
}

/// Fail every open cycle, of every machine, with `reason`: what `bty-lab
/// restore` does to a database snapshot taken while machines flashed.
/// Their agents' reports no longer match anything the restored server
/// knows, and a failed cycle is retried (or parked) on the machine's next
/// PXE boot, never answered with its half-written local disk
/// ([`crate::domain::decide`]). Returns how many it failed.
///
/// Only columns every schema version with cycles has are touched, so it
/// works on a snapshot from an older bty before bty-web migrates it; a
/// schema-1 database has no cycles at all.
pub fn fail_open(conn: &Conn, reason: &str, now: &str) -> sql::Result<usize> {
    if conn.as_sqlite().is_some()
        && !conn.exists(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cycles'",
            (),
        )?
    {
        return Ok(0);
    }
    conn.execute(
        "UPDATE cycles SET state = 'failed', ok = ?3, reason = ?1, finished_at = ?2 \
         WHERE state IN ('offered', 'booted', 'flashing')",
        params![reason, now, false],
    )
}

/// The machine's open stick cycle, if any (at most one is open: a new
/// stick flash fails the previous one).
pub fn open_stick(conn: &Conn, mac: Mac) -> sql::Result<Option<Cycle>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cycles WHERE mac = ?1 AND via = 'stick' \
         AND state IN ('offered', 'booted', 'flashing') ORDER BY id DESC LIMIT 1"
    ))?
    .query_row([mac.to_string()], from_row)
    .optional()
}

/// The machine's newest stick cycle, open or not (the only one whose
/// token is still taken: a done replayed after it closed is acknowledged).
pub fn latest_stick(conn: &Conn, mac: Mac) -> sql::Result<Option<Cycle>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM cycles WHERE mac = ?1 AND via = 'stick' ORDER BY id DESC LIMIT 1"
    ))?
    .query_row([mac.to_string()], from_row)
    .optional()
}

/// What a new stick cycle is made of.
pub struct NewStickCycle<'a> {
    /// Machine.
    pub mac: Mac,
    /// The machine's arming generation (kept for the history's sake; the
    /// decision ignores stick cycles whatever their generation).
    pub arm_gen: i64,
    /// Image name.
    pub image_name: &'a str,
    /// The server image's URL, or `stick:NAME`.
    pub image_url: &'a str,
    /// sha256 of the bytes the stick reads.
    pub image_sha256: &'a str,
    /// Their length.
    pub image_size: u64,
    /// Format.
    pub image_format: &'a str,
    /// `stick` or `server`.
    pub image_source: &'a str,
    /// Target serial.
    pub target_serial: &'a str,
    /// The address that started it: the only one its reports are taken
    /// from.
    pub ip: &'a str,
}

/// Insert a stick cycle, already `flashing` (offered, booted and flashing
/// at `now`, from `ip`), with a fresh 128-bit token.
pub fn insert_stick(conn: &Conn, c: &NewStickCycle<'_>, now: &str) -> sql::Result<Cycle> {
    let new = NewCycle {
        mac: c.mac,
        arm_gen: c.arm_gen,
        attempt: 1,
        state: CycleState::Flashing,
        boot_mode: STICK_BOOT_MODE,
        image_name: c.image_name,
        image_url: c.image_url,
        image_sha256: Some(c.image_sha256),
        image_size: Some(c.image_size),
        image_format: c.image_format,
        target_serial: c.target_serial,
        offered_ip: c.ip,
    };
    let id = insert(conn, &new, now)?.id;
    // What only a stick cycle has: booted by the address that started it,
    // and marked as the stick's (the decision never reads it).
    conn.prepare_cached(
        "UPDATE cycles SET booted_at = ?2, booted_ip = ?3, via = 'stick', image_source = ?4 \
         WHERE id = ?1",
    )?
    .execute(params![id, now, c.ip, c.image_source])?;
    get(conn, id)?.ok_or(sql::Error::NoRows)
}
