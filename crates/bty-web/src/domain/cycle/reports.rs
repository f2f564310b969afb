//! The agent's reports on a cycle: `progress` and `done`, which must carry
//! the current cycle's token, and the Python live env's tokenless legacy
//! `status`, which can close whatever cycle is open.

use crate::db::sql::{self, Conn, Lock};
use bty_proto::plan::{DoneReport, LegacyStatusKind, ProgressReport, ReportAck};
use bty_proto::Mac;
use serde_json::json;

use super::{check_booter, current_cycle};
use crate::db::cycles::{self, Cycle, CycleState, Finish};
use crate::db::machines::{self, Machine};
use crate::domain::bus::{BusMsg, ProgressMsg};
use crate::domain::journal::Journal;
use crate::domain::registry;
use crate::domain::{DomainError, Result};

/// Compare two tokens without an early exit.
fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The machine and the cycle a report is about when `token` is its
/// current (PXE) cycle's token or its newest stick cycle's;
/// [`DomainError::StaleToken`] saying why not otherwise.
pub fn check_token(conn: &Conn, mac: Mac, token: &str) -> Result<(Machine, Cycle)> {
    let m = registry::get(conn, mac)?;
    if token.is_empty() {
        return Err(DomainError::StaleToken(
            "the report carries no token; take it from the plan".into(),
        ));
    }
    let current = cycles::current(conn, mac, m.arm_gen)?;
    if let Some(c) = current.as_ref().filter(|c| token_eq(&c.token, token)) {
        let c = c.clone();
        return Ok((m, c));
    }
    // A stick cycle runs beside the PXE ones; only the newest of the
    // machine's stick cycles takes reports (a new stick flash supersedes
    // the previous one).
    if let Some(c) = cycles::latest_stick(conn, mac)?.filter(|c| token_eq(&c.token, token)) {
        return Ok((m, c));
    }
    let holder = cycles::by_token(conn, token)?;
    Err(DomainError::StaleToken(refusal(
        mac,
        holder.as_ref(),
        current.as_ref(),
    )))
}

/// Why a token that is not the current cycle's is refused.
pub(super) fn refusal(mac: Mac, holder: Option<&Cycle>, current: Option<&Cycle>) -> String {
    match (holder, current) {
        (Some(other), _) if other.mac != mac.to_string() => {
            "the token belongs to another machine's cycle".to_string()
        }
        (Some(old), _) if old.is_stick() => format!(
            "stale token: stick flash cycle {} is {} ({})",
            old.id,
            old.state.as_str(),
            old.reason
                .as_deref()
                .unwrap_or("a newer stick flash took its place")
        ),
        (Some(old), Some(c)) => format!(
            "stale token: cycle {} was replaced by cycle {} ({})",
            old.id,
            c.id,
            c.state.as_str()
        ),
        (Some(old), None) => format!("stale token: cycle {} is no longer current", old.id),
        (None, Some(c)) => format!("unknown token for {mac} (current cycle {})", c.id),
        (None, None) => format!("{mac} has no flash cycle"),
    }
}

/// What a progress report did.
#[derive(Debug, PartialEq, Eq)]
pub struct Progressed {
    /// Bytes added since the last report (metrics).
    pub delta: u64,
    /// The cycle moved into flashing.
    pub started: bool,
}

/// `POST /pxe/{mac}/progress`: store the latest numbers (moving an
/// `offered`/`booted` cycle to `flashing`).
pub fn progress(
    conn: &mut Conn,
    mac: Mac,
    ip: &str,
    p: &ProgressReport,
) -> Result<(Progressed, Vec<BusMsg>)> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let (_, c) = check_token(&tx, mac, &p.token)?;
    check_booter(mac, &c, ip)?;
    if !c.state.is_open() {
        return Err(DomainError::Conflict(format!(
            "cycle {} is already {}; progress is no longer accepted",
            c.id,
            c.state.as_str()
        )));
    }
    let now = crate::db::now();
    cycles::progress(&tx, c.id, p, &now)?;
    machines::touch(&tx, mac, ip, &now)?;
    tx.commit()?;
    let out = Progressed {
        delta: p.bytes_done.saturating_sub(c.bytes_done.unwrap_or(0)),
        started: c.state != CycleState::Flashing,
    };
    Ok((out, vec![progress_msg(mac, &c, p)]))
}

/// The live message of a progress report.
fn progress_msg(mac: Mac, c: &Cycle, p: &ProgressReport) -> BusMsg {
    BusMsg::Progress(ProgressMsg {
        mac: mac.to_string(),
        cycle: c.id,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        phase: p.phase.as_str().to_string(),
        rate: p.rate,
    })
}

/// What a done (or legacy status) report did.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// The acknowledgement.
    pub ack: ReportAck,
    /// `Some(ok)` when the cycle was closed by this report.
    pub ok: Option<bool>,
}

/// Close cycle `c` of `m` with verdict `f`; `via` names the report.
fn close(
    tx: &Conn,
    j: &mut Journal,
    m: &Machine,
    mut c: Cycle,
    f: &Finish<'_>,
    via: &str,
) -> sql::Result<Closed> {
    cycles::finish(tx, c.id, f, &j.now)?;
    c.state = if f.ok {
        CycleState::Done
    } else {
        CycleState::Failed
    };
    log_close(tx, j, m.mac, &c, f, via)?;
    j.push(BusMsg::machine(m, Some(&c)));
    Ok(Closed {
        ack: ReportAck {
            recorded: true,
            state: c.state.as_str().to_string(),
        },
        ok: Some(f.ok),
    })
}

/// The `flash.done` or `flash.failed` event of a closed cycle.
fn log_close(
    tx: &Conn,
    j: &mut Journal,
    mac: Mac,
    c: &Cycle,
    f: &Finish<'_>,
    via: &str,
) -> sql::Result<()> {
    let what = match c.image_source.as_deref().filter(|_| c.is_stick()) {
        Some(src) => format!("USB stick flash cycle {} (image from the {src})", c.id),
        None => format!("cycle {}", c.id),
    };
    let (kind, summary) = if f.ok {
        let on = format!("{} is on disk {}", c.image_name, c.target_serial);
        ("flash.done", format!("{mac}: {what} done: {on}"))
    } else {
        let why = f.reason.unwrap_or("no reason given");
        ("flash.failed", format!("{mac}: {what} failed: {why}"))
    };
    let mut details = json!({"cycle": c.id, "attempt": c.attempt, "ok": f.ok, "reason": f.reason,
           "sha256": f.disk_sha256, "duration_s": f.duration_s, "via": via});
    if let (true, Some(d)) = (c.is_stick(), details.as_object_mut()) {
        d.insert("stick".into(), json!(true));
        d.insert("source".into(), json!(c.image_source));
    }
    j.event(tx, kind, mac, summary, details)
}

/// `POST /pxe/{mac}/done`: close the current cycle once; a replay for a
/// closed cycle is acknowledged and changes nothing.
pub fn done(conn: &mut Conn, mac: Mac, ip: &str, d: &DoneReport) -> Result<(Closed, Vec<BusMsg>)> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let (m, c) = check_token(&tx, mac, &d.token)?;
    check_booter(mac, &c, ip)?;
    if !c.state.is_open() {
        let ack = ReportAck {
            recorded: false,
            state: c.state.as_str().to_string(),
        };
        return Ok((Closed { ack, ok: None }, Vec::new()));
    }
    let mut j = Journal::start();
    machines::touch(&tx, mac, ip, &j.now)?;
    let f = Finish {
        ok: d.ok,
        reason: d.reason.as_deref(),
        disk_sha256: d.sha256.as_deref(),
        duration_s: d.duration_s,
    };
    let r = close(&tx, &mut j, &m, c, &f, "done")?;
    tx.commit()?;
    Ok((r, j.bus))
}

/// `POST /pxe/{mac}/status` (the Python live env, only with `[pxe]
/// legacy_status = true`): fails the current open cycle without a token.
/// It carries no token, so it can never complete a cycle: `done` is
/// refused with [`DomainError::Conflict`]. An unknown machine is logged as
/// an orphan report and refused with [`DomainError::NotFound`].
pub fn legacy_status(
    conn: &mut Conn,
    mac: Mac,
    ip: &str,
    status: LegacyStatusKind,
    reason: Option<&str>,
) -> Result<(Closed, Vec<BusMsg>)> {
    if status == LegacyStatusKind::Done {
        return Err(DomainError::Conflict(format!(
            "{mac}: a tokenless status report cannot complete a flash cycle; only the \
             agent's done report with the cycle's token does (status failed is accepted)"
        )));
    }
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let mut j = Journal::start();
    let Some(m) = machines::get(&tx, mac)? else {
        super::log_orphan(&tx, &mut j, mac, ip, "status report")?;
        tx.commit()?;
        return Err(registry::not_registered(mac));
    };
    machines::touch(&tx, mac, ip, &j.now)?;
    let ok = false;
    let f = Finish {
        ok,
        reason,
        disk_sha256: None,
        duration_s: None,
    };
    let r = match current_cycle(&tx, &m)?.filter(|c| c.state.is_open()) {
        Some(c) => close(&tx, &mut j, &m, c, &f, "legacy status")?,
        None => nothing_open(&tx, &mut j, mac, ok, reason)?,
    };
    tx.commit()?;
    Ok((r, j.bus))
}

/// A legacy status with no open cycle: an event, no change.
fn nothing_open(
    tx: &Conn,
    j: &mut Journal,
    mac: Mac,
    ok: bool,
    reason: Option<&str>,
) -> sql::Result<Closed> {
    let word = if ok { "done" } else { "failed" };
    j.event(
        tx,
        "pxe.status",
        mac,
        format!("{mac} reported {word} with no flash cycle open; nothing changed"),
        json!({"status": word, "reason": reason}),
    )?;
    let ack = ReportAck {
        recorded: false,
        state: "none".into(),
    };
    Ok(Closed { ack, ok: None })
}
