//! The flash cycle, applied: each function runs on the database thread as
//! one transaction (`BEGIN IMMEDIATE`), so a decision and its side effects
//! can never interleave with an operator change.

use bty_proto::plan::{DoneReport, LegacyStatusKind, ProgressReport, ReportAck};
use bty_proto::{BootMode, Mac};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::json;

use crate::catalog::Snapshot;
use crate::db::cycles::{self, Cycle, CycleState, NewCycle};
use crate::db::events::{self, Event};
use crate::db::machines::{self, Machine, Settings};
use crate::db::now;
use crate::error::ApiError;
use crate::pxe::{self, Contact, CycleChoice, CycleFacts, Decision, Inputs, Offer, ParkWhy};
use crate::sse::{BusMsg, MachineMsg, ProgressMsg};

/// What a PXE or plan contact produced.
#[derive(Debug)]
pub struct ContactResult {
    /// The machine after the contact (labels and inventory not loaded).
    pub machine: Machine,
    /// The decision.
    pub decision: Decision,
    /// The cycle of a flash offer.
    pub cycle: Option<Cycle>,
    /// Why the machine is parked, for a park offer.
    pub park_reason: Option<String>,
    /// Live updates to publish.
    pub bus: Vec<BusMsg>,
    /// A cycle entered `flashing` (metrics).
    pub flash_started: bool,
    /// An unfinished cycle was closed as failed (metrics).
    pub flash_abandoned: bool,
}

fn facts(c: &Cycle) -> CycleFacts {
    CycleFacts {
        id: c.id,
        state: c.state,
        attempt: c.attempt,
        local_served: c.local_served,
    }
}

/// Machine summary for the bus.
pub fn machine_msg(m: &Machine, c: Option<&Cycle>) -> BusMsg {
    BusMsg::Machine(MachineMsg {
        mac: m.mac.to_string(),
        boot_mode: m.boot_mode.to_string(),
        cycle: c.map(|c| c.id),
        cycle_state: c.map(|c| c.state.as_str().to_string()),
        parked: m.parked_reason.clone(),
        deleted: false,
    })
}

fn event(
    conn: &Connection,
    bus: &mut Vec<BusMsg>,
    kind: &str,
    mac: Mac,
    summary: String,
    details: serde_json::Value,
    now: &str,
) -> rusqlite::Result<Event> {
    let e = events::insert(
        conn,
        kind,
        Some(&mac.to_string()),
        &summary,
        Some(&details),
        now,
    )?;
    bus.push(BusMsg::Event(e.clone()));
    Ok(e)
}

/// `GET /pxe/{mac}` and `GET /pxe/{mac}/plan`: register if unknown, decide,
/// apply.
pub fn contact(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    contact: Contact,
    max_attempts: u32,
    catalog: &Snapshot,
) -> rusqlite::Result<ContactResult> {
    // Deferred: a repeated plan of a flashing cycle reads only, and the
    // database thread is the only writer, so the upgrade cannot conflict.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let now = now();
    let mut bus = Vec::new();
    let mut changed = false;
    let machine = match machines::get_for_decision(&tx, mac)? {
        Some(m) => {
            // last_seen has one-second resolution: at most one write per
            // machine and second from polling (keeps the plan path cheap).
            let same_second = m
                .last_seen_at
                .as_deref()
                .is_some_and(|t| t.get(..19) == now.get(..19));
            if !same_second || m.last_seen_ip.as_deref() != Some(ip) {
                machines::touch(&tx, mac, ip, &now)?;
            }
            m
        }
        None => {
            machines::insert_discovered(&tx, mac, ip, &now)?;
            event(
                &tx,
                &mut bus,
                "machine.discovered",
                mac,
                format!("new machine {mac} registered in bty-inventory mode"),
                json!({"ip": ip, "via": if contact == Contact::Pxe { "pxe" } else { "plan" }}),
                &now,
            )?;
            changed = true;
            machines::get_for_decision(&tx, mac)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?
        }
    };
    let current = if machine.boot_mode.flashes() {
        cycles::current(&tx, mac, machine.arm_gen)?
    } else {
        None
    };
    let image = machine.image.as_deref().and_then(|n| catalog.get(n));
    let inputs = Inputs {
        mode: machine.boot_mode,
        has_image: machine.image.is_some(),
        has_target: machine.target_disk_serial.is_some(),
        image_available: image.is_some(),
        parked: machine.parked_reason.is_some(),
        inventory_local_next: machine.inventory_local_next,
        current: current.as_ref().map(facts),
        max_attempts,
    };
    let decision = pxe::decide(&inputs, contact);
    let mut result_cycle = None;
    let mut park_reason = machine.parked_reason.clone();
    let mut flash_started = false;
    let mut flash_abandoned = false;

    if decision.effects.clear_inventory_local {
        machines::set_inventory_local_next(&tx, mac, false)?;
    }
    if let Some(id) = decision.effects.mark_local_served {
        cycles::mark_local_served(&tx, id)?;
    }
    if decision.effects.park {
        let (attempts, last) = current
            .as_ref()
            .map(|c| (c.attempt, c.state.as_str()))
            .unwrap_or((0, "none"));
        let reason = match decision.offer {
            Offer::Park(ParkWhy::ImageVanished) => format!(
                "a flash was under way (cycle state {last}) and its image or binding is no longer usable"
            ),
            _ => format!(
                "{attempts} flash attempts did not end in done ok (limit flash.max_attempts = {max_attempts})"
            ),
        };
        if let Some(c) = current.as_ref().filter(|c| c.state.is_open()) {
            cycles::finish(
                &tx,
                c.id,
                &cycles::Finish {
                    ok: false,
                    reason: Some("no done report before the machine booted again"),
                    disk_sha256: None,
                    duration_s: None,
                },
                &now,
            )?;
            flash_abandoned = true;
        }
        machines::set_parked(&tx, mac, Some(&reason), &now)?;
        event(
            &tx,
            &mut bus,
            "machine.parked",
            mac,
            format!("{mac} parked: {reason}"),
            json!({"reason": reason, "cycle": current.as_ref().map(|c| c.id)}),
            &now,
        )?;
        park_reason = Some(reason);
        changed = true;
    }

    match decision.offer {
        Offer::Flash(CycleChoice::Reuse(id)) => {
            let mut c = match current.clone().filter(|c| c.id == id) {
                Some(c) => c,
                None => cycles::get(&tx, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?,
            };
            if contact == Contact::Plan
                && matches!(c.state, CycleState::Offered | CycleState::Booted)
            {
                cycles::advance(&tx, c.id, CycleState::Flashing, &now)?;
                c.state = CycleState::Flashing;
                flash_started = true;
                changed = true;
                event(
                    &tx,
                    &mut bus,
                    "flash.started",
                    mac,
                    format!(
                        "{mac} took the plan of cycle {} ({} onto {})",
                        c.id, c.image_name, c.target_serial
                    ),
                    json!({"cycle": c.id, "attempt": c.attempt, "image": c.image_name}),
                    &now,
                )?;
            }
            result_cycle = Some(c);
        }
        Offer::Flash(CycleChoice::New { attempt }) => {
            // `image` is Some here: decide() offers a flash only then.
            let img = image.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            if let Some(prev) = current.as_ref().filter(|c| c.state.is_open()) {
                cycles::finish(
                    &tx,
                    prev.id,
                    &cycles::Finish {
                        ok: false,
                        reason: Some("no done report before the machine booted again"),
                        disk_sha256: None,
                        duration_s: None,
                    },
                    &now,
                )?;
                flash_abandoned = true;
            }
            let state = match contact {
                Contact::Pxe => CycleState::Offered,
                Contact::Plan => CycleState::Flashing,
            };
            let c = cycles::insert(
                &tx,
                &NewCycle {
                    mac,
                    arm_gen: machine.arm_gen,
                    attempt,
                    state,
                    boot_mode: machine.boot_mode.as_str(),
                    image_name: &img.entry.name,
                    image_url: &img.url,
                    image_sha256: img.entry.sha256.as_deref(),
                    image_size: img.entry.size,
                    image_format: img.resolved_format.as_str(),
                    target_serial: machine.target_disk_serial.as_deref().unwrap_or_default(),
                },
                &now,
            )?;
            let retry = match &current {
                Some(p) if attempt > 1 => format!(
                    ", retry after cycle {} ended {} without done ok",
                    p.id,
                    p.state.as_str()
                ),
                _ => String::new(),
            };
            let (kind, verb) = match contact {
                Contact::Pxe => ("cycle.offered", "offered"),
                Contact::Plan => {
                    flash_started = true;
                    ("flash.started", "started from a plan")
                }
            };
            event(
                &tx,
                &mut bus,
                kind,
                mac,
                format!(
                    "{mac}: flash cycle {} {verb}: {} onto disk {} (attempt {attempt}{retry})",
                    c.id, c.image_name, c.target_serial
                ),
                json!({"cycle": c.id, "attempt": attempt, "image": c.image_name,
                       "url": c.image_url, "target_serial": c.target_serial}),
                &now,
            )?;
            changed = true;
            result_cycle = Some(c);
        }
        Offer::Park(_) | Offer::Local(_) | Offer::Inventory => {}
    }

    if contact == Contact::Pxe {
        let (reason, cycle_id) = match (&decision.offer, &result_cycle) {
            (Offer::Local(w), _) => (Some(w.text().to_string()), None),
            (Offer::Park(_), _) => (park_reason.clone(), None),
            (_, Some(c)) => (None, Some(c.id)),
            _ => (None, None),
        };
        let summary = match &reason {
            Some(r) => format!("{mac} offered {}: {r}", decision.offer.kind()),
            None => format!("{mac} offered {}", decision.offer.kind()),
        };
        event(
            &tx,
            &mut bus,
            "pxe.offered",
            mac,
            summary,
            json!({"offer": decision.offer.kind(), "boot_mode": machine.boot_mode.as_str(),
                   "reason": reason, "cycle": cycle_id, "ip": ip}),
            &now,
        )?;
    }
    tx.commit()?;
    let machine = Machine {
        parked_reason: park_reason.clone(),
        ..machine
    };
    if changed {
        bus.push(machine_msg(
            &machine,
            result_cycle.as_ref().or(current.as_ref()),
        ));
    }
    Ok(ContactResult {
        machine,
        decision,
        cycle: result_cycle,
        park_reason,
        bus,
        flash_started,
        flash_abandoned,
    })
}

/// `GET /boot/{name}?mac=`: the file was found and is being served. Moves an
/// `offered` cycle to `booted`.
pub fn booted(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    file: &str,
) -> rusqlite::Result<Vec<BusMsg>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let mut bus = Vec::new();
    let Some(m) = machines::get(&tx, mac)? else {
        return Ok(bus);
    };
    machines::touch(&tx, mac, ip, &now)?;
    if m.boot_mode.flashes() {
        if let Some(mut c) = cycles::current(&tx, mac, m.arm_gen)? {
            if c.state == CycleState::Offered {
                cycles::advance(&tx, c.id, CycleState::Booted, &now)?;
                c.state = CycleState::Booted;
                event(
                    &tx,
                    &mut bus,
                    "cycle.booted",
                    mac,
                    format!("{mac}: cycle {} booted the netboot env ({file})", c.id),
                    json!({"cycle": c.id, "file": file}),
                    &now,
                )?;
                bus.push(machine_msg(&m, Some(&c)));
            }
        }
    }
    tx.commit()?;
    Ok(bus)
}

/// Compare two tokens without an early exit.
fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The current cycle when `token` is its token; a 409 saying why otherwise.
fn check_token(conn: &Connection, mac: Mac, token: &str) -> Result<(Machine, Cycle), ApiError> {
    let m = machines::get(conn, mac)?
        .ok_or_else(|| ApiError::not_found(format!("no machine {mac} is registered")))?;
    if token.is_empty() {
        return Err(ApiError::conflict(
            "the report carries no token; take it from the plan",
        ));
    }
    let current = cycles::current(conn, mac, m.arm_gen)?;
    if let Some(c) = current.as_ref().filter(|c| token_eq(&c.token, token)) {
        return Ok((m, c.clone()));
    }
    let msg = match cycles::by_token(conn, token)? {
        Some(other) if other.mac != mac.to_string() => {
            "the token belongs to another machine's cycle".to_string()
        }
        Some(old) => match &current {
            Some(c) => format!(
                "stale token: cycle {} was replaced by cycle {} ({})",
                old.id,
                c.id,
                c.state.as_str()
            ),
            None => format!("stale token: cycle {} is no longer current", old.id),
        },
        None => match &current {
            Some(c) => format!("unknown token for {mac} (current cycle {})", c.id),
            None => format!("{mac} has no flash cycle"),
        },
    };
    Err(ApiError::conflict(msg))
}

/// What a progress report did.
pub struct ProgressResult {
    /// Bytes added since the last report (metrics).
    pub delta: u64,
    /// The cycle moved into flashing.
    pub started: bool,
    /// Live updates.
    pub bus: Vec<BusMsg>,
}

/// `POST /pxe/{mac}/progress`.
pub fn progress(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    p: &ProgressReport,
) -> Result<ProgressResult, ApiError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (_, c) = check_token(&tx, mac, &p.token)?;
    if !c.state.is_open() {
        return Err(ApiError::conflict(format!(
            "cycle {} is already {}; progress is no longer accepted",
            c.id,
            c.state.as_str()
        )));
    }
    let now = now();
    cycles::progress(&tx, c.id, p, &now)?;
    machines::touch(&tx, mac, ip, &now)?;
    tx.commit()?;
    let delta = p.bytes_done.saturating_sub(c.bytes_done.unwrap_or(0));
    Ok(ProgressResult {
        delta,
        started: c.state != CycleState::Flashing,
        bus: vec![BusMsg::Progress(ProgressMsg {
            mac: mac.to_string(),
            cycle: c.id,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            phase: p.phase.as_str().to_string(),
            rate: p.rate,
        })],
    })
}

/// What a done (or legacy status) report did.
pub struct DoneResult {
    /// The acknowledgement.
    pub ack: ReportAck,
    /// `Some(ok)` when the cycle was closed by this report.
    pub closed: Option<bool>,
    /// Live updates.
    pub bus: Vec<BusMsg>,
}

fn close(
    tx: &Connection,
    m: &Machine,
    mut c: Cycle,
    f: &cycles::Finish<'_>,
    via: &str,
) -> rusqlite::Result<DoneResult> {
    let now = now();
    let mut bus = Vec::new();
    cycles::finish(tx, c.id, f, &now)?;
    c.state = if f.ok {
        CycleState::Done
    } else {
        CycleState::Failed
    };
    let (kind, summary) = if f.ok {
        (
            "flash.done",
            format!(
                "{}: cycle {} done: {} is on disk {}",
                m.mac, c.id, c.image_name, c.target_serial
            ),
        )
    } else {
        (
            "flash.failed",
            format!(
                "{}: cycle {} failed: {}",
                m.mac,
                c.id,
                f.reason.unwrap_or("no reason given")
            ),
        )
    };
    event(
        tx,
        &mut bus,
        kind,
        m.mac,
        summary,
        json!({"cycle": c.id, "attempt": c.attempt, "ok": f.ok, "reason": f.reason,
               "sha256": f.disk_sha256, "duration_s": f.duration_s, "via": via}),
        &now,
    )?;
    bus.push(machine_msg(m, Some(&c)));
    Ok(DoneResult {
        ack: ReportAck {
            recorded: true,
            state: c.state.as_str().to_string(),
        },
        closed: Some(f.ok),
        bus,
    })
}

/// `POST /pxe/{mac}/done`.
pub fn done(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    d: &DoneReport,
) -> Result<DoneResult, ApiError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (m, c) = check_token(&tx, mac, &d.token)?;
    if !c.state.is_open() {
        // A replay of the report that closed it: acknowledge, change nothing.
        return Ok(DoneResult {
            ack: ReportAck {
                recorded: false,
                state: c.state.as_str().to_string(),
            },
            closed: None,
            bus: Vec::new(),
        });
    }
    machines::touch(&tx, mac, ip, &now())?;
    let r = close(
        &tx,
        &m,
        c,
        &cycles::Finish {
            ok: d.ok,
            reason: d.reason.as_deref(),
            disk_sha256: d.sha256.as_deref(),
            duration_s: d.duration_s,
        },
        "done",
    )?;
    tx.commit()?;
    Ok(r)
}

/// `POST /pxe/{mac}/status` (the Python live env): applies to the current
/// open cycle without a token. `None` when the machine is unknown.
pub fn legacy_status(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    status: LegacyStatusKind,
    reason: Option<&str>,
) -> Result<DoneResult, ApiError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let Some(m) = machines::get(&tx, mac)? else {
        let mut bus = Vec::new();
        event(
            &tx,
            &mut bus,
            "pxe.orphan",
            mac,
            format!("status report from unregistered {mac}"),
            json!({"ip": ip}),
            &now,
        )?;
        tx.commit()?;
        return Err(ApiError::not_found(format!(
            "no machine {mac} is registered"
        )));
    };
    machines::touch(&tx, mac, ip, &now)?;
    let current = if m.boot_mode.flashes() {
        cycles::current(&tx, mac, m.arm_gen)?
    } else {
        None
    };
    let ok = status == LegacyStatusKind::Done;
    let r = match current.filter(|c| c.state.is_open()) {
        Some(c) => close(
            &tx,
            &m,
            c,
            &cycles::Finish {
                ok,
                reason,
                disk_sha256: None,
                duration_s: None,
            },
            "legacy status",
        )?,
        None => {
            let mut bus = Vec::new();
            event(
                &tx,
                &mut bus,
                "pxe.status",
                mac,
                format!(
                    "{mac} reported {} with no flash cycle open; nothing changed",
                    if ok { "done" } else { "failed" }
                ),
                json!({"status": if ok { "done" } else { "failed" }, "reason": reason}),
                &now,
            )?;
            DoneResult {
                ack: ReportAck {
                    recorded: false,
                    state: "none".into(),
                },
                closed: None,
                bus,
            }
        }
    };
    tx.commit()?;
    Ok(r)
}

/// `POST /pxe/{mac}/inventory`.
pub fn inventory(
    conn: &mut Connection,
    mac: Mac,
    ip: &str,
    inv_json: &str,
    summary: &str,
) -> Result<Vec<BusMsg>, ApiError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let mut bus = Vec::new();
    let Some(m) = machines::get(&tx, mac)? else {
        event(
            &tx,
            &mut bus,
            "pxe.orphan",
            mac,
            format!("inventory from unregistered {mac}"),
            json!({"ip": ip}),
            &now,
        )?;
        tx.commit()?;
        return Err(ApiError::not_found(format!(
            "no machine {mac} is registered; it registers on its first PXE contact"
        )));
    };
    machines::set_inventory(&tx, mac, inv_json, ip, &now)?;
    if m.boot_mode == BootMode::Inventory {
        machines::set_inventory_local_next(&tx, mac, true)?;
    }
    event(
        &tx,
        &mut bus,
        "machine.inventory",
        mac,
        format!("{mac} reported inventory: {summary}"),
        json!({"ip": ip}),
        &now,
    )?;
    tx.commit()?;
    Ok(bus)
}

/// `PUT /api/machines/{mac}` after validation. Returns the machine, whether
/// it was created, and the bus messages.
pub fn put_machine(
    conn: &mut Connection,
    mac: Mac,
    s: &Settings,
) -> rusqlite::Result<(Machine, bool, Vec<BusMsg>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let mut bus = Vec::new();
    let old = machines::get(&tx, mac)?;
    let (arm_gen, rearm, unpark) = match &old {
        None => (0, false, false),
        Some(m) => {
            let policy = m.boot_mode != s.boot_mode
                || m.image != s.image
                || m.target_disk_serial != s.target_disk_serial;
            let unpark = m.parked_reason.is_some();
            let bump = policy || unpark;
            (m.arm_gen + i64::from(bump), bump, unpark)
        }
    };
    if rearm {
        let n = cycles::cancel_open(&tx, mac, "replaced by an operator change", &now)?;
        if n > 0 {
            event(
                &tx,
                &mut bus,
                "cycle.cancelled",
                mac,
                format!("{mac}: {n} unfinished flash cycle(s) cancelled by an operator change"),
                json!({"count": n}),
                &now,
            )?;
        }
    }
    machines::upsert(&tx, mac, s, arm_gen, &now)?;
    if unpark {
        machines::set_parked(&tx, mac, None, &now)?;
        event(
            &tx,
            &mut bus,
            "machine.unparked",
            mac,
            format!("{mac} released from parking by an operator change"),
            json!({}),
            &now,
        )?;
    }
    let details = json!({"boot_mode": s.boot_mode.as_str(), "image": s.image,
        "target_disk_serial": s.target_disk_serial, "sanboot_drive": s.sanboot_drive,
        "labels": s.labels, "name": s.name, "rearmed": rearm});
    let created = old.is_none();
    event(
        &tx,
        &mut bus,
        if created {
            "machine.created"
        } else {
            "machine.updated"
        },
        mac,
        format!(
            "{mac} {}: boot_mode {}{}",
            if created { "created" } else { "updated" },
            s.boot_mode,
            s.image
                .as_deref()
                .map(|i| format!(", image {i}"))
                .unwrap_or_default()
        ),
        details,
        &now,
    )?;
    let m = machines::get(&tx, mac)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    bus.push(machine_msg(&m, None));
    Ok((m, created, bus))
}

/// `DELETE /api/machines/{mac}`.
pub fn delete_machine(conn: &mut Connection, mac: Mac) -> rusqlite::Result<Option<Vec<BusMsg>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !machines::delete(&tx, mac)? {
        return Ok(None);
    }
    let mut bus = Vec::new();
    event(
        &tx,
        &mut bus,
        "machine.deleted",
        mac,
        format!("{mac} deleted (its events are kept)"),
        json!({}),
        &now(),
    )?;
    tx.commit()?;
    bus.push(BusMsg::Machine(MachineMsg {
        mac: mac.to_string(),
        boot_mode: String::new(),
        cycle: None,
        cycle_state: None,
        parked: None,
        deleted: true,
    }));
    Ok(Some(bus))
}
