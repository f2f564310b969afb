//! A PXE or plan contact, as named steps of one transaction:
//!
//! 1. `Visit::arrive`: register an unknown MAC (`bty-inventory`), or note
//!    the contact; read the machine's current cycle.
//! 2. `Visit::decide`: [`decide`] on the same inputs the preview uses
//!    (`super::inputs`).
//! 3. `Visit::apply`: the decision's effects (the inventory alternation,
//!    flash-always's disk turn) and `Visit::park`.
//! 4. `Visit::take_cycle`: the cycle a flash offer uses, the current one
//!    (moved to `flashing` by a plan) or a new attempt.
//! 5. `Visit::log_offer`: what a PXE contact was offered, in the event log.

use crate::db::sql::{self, Conn, Lock};
use bty_proto::Mac;
use serde_json::json;

use super::discovery::{prune, Gate};
use super::{check_booter, current_cycle, inputs, park_reason};
use crate::catalog::{Image, Snapshot};
use crate::db::cycles::{self, Cycle, CycleState, Finish, NewCycle};
use crate::db::machines::{self, Machine};
use crate::domain::bus::BusMsg;
use crate::domain::decide::{decide, Contact, CycleChoice, Decision, Effects, Offer};
use crate::domain::journal::Journal;
use crate::domain::{DomainError, Result};

/// How a cycle that never reported `done` is closed when its machine
/// boots again.
const ABANDONED: Finish<'static> = Finish {
    ok: false,
    reason: Some("no done report before the machine booted again"),
    disk_sha256: None,
    duration_s: None,
};

/// What a PXE or plan contact produced.
#[derive(Debug, Clone)]
pub struct Contacted {
    /// The machine after the contact (labels and inventory not loaded).
    pub machine: Machine,
    /// The decision.
    pub decision: Decision,
    /// The cycle of a flash offer.
    pub cycle: Option<Cycle>,
    /// Why the machine is parked, for a park offer.
    pub park_reason: Option<String>,
    /// A cycle entered `flashing` (metrics).
    pub flash_started: bool,
    /// An unfinished cycle was closed as failed (metrics).
    pub flash_abandoned: bool,
    /// A PXE contact: what a repeat of it must find unchanged.
    pub mark: Option<Mark>,
}

/// `GET /pxe/{mac}` and `GET /pxe/{mac}/plan`: register if unknown, decide,
/// apply. Discovery is not limited ([`contact_gated`] with an open gate).
pub fn contact(
    conn: &mut Conn,
    mac: Mac,
    ip: &str,
    contact: Contact,
    max_attempts: u32,
    catalog: &Snapshot,
) -> Result<(Contacted, Vec<BusMsg>)> {
    contact_gated(conn, mac, ip, contact, max_attempts, catalog, &Gate::open())
}

/// [`contact`], an unknown MAC registered only as `gate` allows
/// ([`DomainError::TooMany`] otherwise, nothing stored), and the oldest
/// unassigned machines pruned beyond its cap.
pub fn contact_gated(
    conn: &mut Conn,
    mac: Mac,
    ip: &str,
    contact: Contact,
    max_attempts: u32,
    catalog: &Snapshot,
    gate: &Gate,
) -> Result<(Contacted, Vec<BusMsg>)> {
    // A known machine's decision touches only that machine: Lock::Machine.
    // Registering an unknown one counts and prunes unassigned machines
    // across the lab: Lock::Global. Which one is read before the lock and
    // checked again under it; a machine deleted in between (rare) retries
    // under Lock::Global.
    let mac_s = mac.to_string();
    let known = machines::get_for_decision(conn, mac)?.is_some();
    let lock = if known {
        Lock::Machine(&mac_s)
    } else {
        Lock::Global
    };
    let tx = conn.transaction(lock)?;
    let new = machines::get_for_decision(&tx, mac)?.is_none();
    if new && lock != Lock::Global {
        drop(tx);
        return contact_gated(conn, mac, ip, contact, max_attempts, catalog, gate);
    }
    if new && !gate.admit(ip) {
        return Err(DomainError::TooMany(format!(
            "{ip} registered more new machines than [discovery] per_ip_per_minute allows; \
             {mac} was not registered, try again in a minute"
        )));
    }
    let mut v = Visit::arrive(&tx, mac, ip, contact)?;
    if new {
        prune(&tx, &mut v.j, gate.max_unassigned)?;
    }
    // The image as this machine downloads it: through its site's withcache.
    let image = v.machine.image.as_deref().and_then(|n| catalog.get(n));
    let image = image.map(|i| i.at(&catalog.sites, ip));
    let image = image.as_deref();
    let decision = v.decide(image, max_attempts);
    if contact == Contact::Plan {
        v.check_plan(decision.offer, ip)?;
    }
    v.apply(decision.effects)?;
    let park_reason = if decision.effects.park {
        Some(v.park(decision.offer, max_attempts)?)
    } else {
        v.machine.parked_reason.clone()
    };
    let cycle = v.take_cycle(decision.offer, image)?;
    if contact == Contact::Pxe {
        v.log_offer(decision.offer, cycle.as_ref(), park_reason.as_deref(), ip)?;
    }
    let mut out = v.finish(decision, cycle, park_reason);
    if contact == Contact::Pxe {
        out.0.mark = mark(&tx, mac)?;
    }
    tx.commit()?;
    Ok(out)
}

/// One contact in progress.
pub(super) struct Visit<'t> {
    tx: &'t Conn,
    pub(super) j: Journal,
    mac: Mac,
    /// The contacting client's address.
    ip: String,
    contact: Contact,
    pub(super) machine: Machine,
    pub(super) current: Option<Cycle>,
    /// The machine's state changed (announce it).
    pub(super) changed: bool,
    pub(super) flash_started: bool,
    pub(super) flash_abandoned: bool,
}

impl<'t> Visit<'t> {
    /// Step 1: the machine, registered now if unknown, and its current cycle.
    pub(super) fn arrive(tx: &'t Conn, mac: Mac, ip: &str, contact: Contact) -> Result<Visit<'t>> {
        let mut j = Journal::start();
        let (machine, changed) = match machines::get_for_decision(tx, mac)? {
            Some(m) => {
                touch(tx, &m, ip, &j.now)?;
                (m, false)
            }
            None => (register(tx, &mut j, mac, ip, contact)?, true),
        };
        Ok(Visit {
            current: current_cycle(tx, &machine)?,
            tx,
            j,
            mac,
            ip: ip.to_string(),
            contact,
            machine,
            changed,
            flash_started: false,
            flash_abandoned: false,
        })
    }

    /// Step 2: what this contact gets.
    pub(super) fn decide(&self, image: Option<&Image>, max_attempts: u32) -> Decision {
        let current = self.current.as_ref();
        let i = inputs(&self.machine, current, image, max_attempts);
        decide(&i, self.contact)
    }

    /// Step 2, for a plan: a flash plan carries the cycle's token, so it is
    /// handed out only for the current cycle once its netboot kernel was
    /// fetched, and only to the address that fetched it. A plan never
    /// opens a cycle.
    pub(super) fn check_plan(&self, offer: Offer, ip: &str) -> Result<()> {
        let Offer::Flash(choice) = offer else {
            return Ok(());
        };
        let mac = self.mac;
        match (choice, self.current.as_ref()) {
            (CycleChoice::Reuse(id), Some(c)) if c.id == id => check_booter(mac, c, ip),
            _ => Err(DomainError::Conflict(format!(
                "{mac} has no flash cycle whose netboot kernel was fetched: a plan is handed \
                 out only after the machine PXE-booted (GET /pxe/{mac}) and fetched the \
                 netboot kernel of the cycle offered to it"
            ))),
        }
    }

    /// Step 3: the effects that are not about a cycle.
    pub(super) fn apply(&mut self, e: Effects) -> sql::Result<()> {
        if e.clear_inventory_local {
            machines::set_inventory_local_next(self.tx, self.mac, false)?;
        }
        if let Some(id) = e.mark_local_served {
            cycles::mark_local_served(self.tx, id)?;
        }
        Ok(())
    }

    /// Step 3, parking: close an open cycle as failed and park the machine
    /// (it neither flashes nor boots its disk until an operator acts).
    /// Returns the reason.
    pub(super) fn park(&mut self, offer: Offer, max_attempts: u32) -> sql::Result<String> {
        let reason = park_reason(offer, self.current.as_ref(), max_attempts);
        self.abandon_open()?;
        machines::set_parked(self.tx, self.mac, Some(&reason), &self.j.now)?;
        let mac = self.mac;
        self.j.event(
            self.tx,
            "machine.parked",
            mac,
            format!("{mac} parked: {reason}"),
            json!({"reason": reason, "cycle": self.current.as_ref().map(|c| c.id)}),
        )?;
        self.changed = true;
        Ok(reason)
    }

    /// Close the current cycle as failed if it is still open.
    fn abandon_open(&mut self) -> sql::Result<()> {
        if let Some(c) = self.current.as_ref().filter(|c| c.state.is_open()) {
            cycles::finish(self.tx, c.id, &ABANDONED, &self.j.now)?;
            self.flash_abandoned = true;
        }
        Ok(())
    }

    /// Step 4: the cycle a flash offer uses.
    pub(super) fn take_cycle(
        &mut self,
        offer: Offer,
        image: Option<&Image>,
    ) -> Result<Option<Cycle>> {
        match offer {
            Offer::Flash(CycleChoice::Reuse(id)) => {
                let c = self.current.clone().filter(|c| c.id == id).ok_or_else(|| {
                    DomainError::Internal(format!("decide reused cycle {id}, which is not current"))
                })?;
                Ok(Some(self.reuse(c)?))
            }
            Offer::Flash(CycleChoice::New { attempt }) => {
                let img = image.ok_or_else(|| {
                    DomainError::Internal("decide offered a new cycle without an image".into())
                })?;
                Ok(Some(self.open(attempt, img)?))
            }
            Offer::Park(_) | Offer::Local(_) | Offer::Inventory => Ok(None),
        }
    }

    /// The current cycle again; a plan for one not yet flashing starts it.
    fn reuse(&mut self, mut c: Cycle) -> sql::Result<Cycle> {
        let starts = matches!(c.state, CycleState::Offered | CycleState::Booted);
        if self.contact == Contact::Plan && starts {
            cycles::mark_flashing(self.tx, c.id, &self.j.now)?;
            c.state = CycleState::Flashing;
            self.flash_started = true;
            self.changed = true;
            let mac = self.mac;
            self.j.event(
                self.tx,
                "flash.started",
                mac,
                format!(
                    "{mac} took the plan of cycle {} ({} onto {})",
                    c.id, c.image_name, c.target_serial
                ),
                json!({"cycle": c.id, "attempt": c.attempt, "image": c.image_name}),
            )?;
        }
        Ok(c)
    }

    /// A new cycle (attempt `attempt`) for `img`, closing an open one as
    /// failed first. From a plan it starts `flashing` at once.
    fn open(&mut self, attempt: u32, img: &Image) -> sql::Result<Cycle> {
        self.abandon_open()?;
        let m = &self.machine;
        let state = match self.contact {
            Contact::Pxe => CycleState::Offered,
            Contact::Plan => CycleState::Flashing,
        };
        let new = NewCycle {
            mac: self.mac,
            arm_gen: m.arm_gen,
            attempt,
            state,
            boot_mode: m.boot_mode.as_str(),
            image_name: &img.entry.name,
            image_url: &img.url,
            image_sha256: img.entry.sha256.as_deref(),
            image_size: img.entry.size,
            image_format: img.resolved_format.as_str(),
            target_serial: m.target_disk_serial.as_deref().unwrap_or_default(),
            offered_ip: &self.ip,
        };
        let c = cycles::insert(self.tx, &new, &self.j.now)?;
        self.log_open(&c)?;
        self.changed = true;
        Ok(c)
    }

    fn log_open(&mut self, c: &Cycle) -> sql::Result<()> {
        let retry = match &self.current {
            Some(p) if c.attempt > 1 => format!(
                ", retry after cycle {} ended {} without done ok",
                p.id,
                p.state.as_str()
            ),
            _ => String::new(),
        };
        let (kind, verb) = match self.contact {
            Contact::Pxe => ("cycle.offered", "offered"),
            Contact::Plan => {
                self.flash_started = true;
                ("flash.started", "started from a plan")
            }
        };
        let mac = self.mac;
        self.j.event(
            self.tx,
            kind,
            mac,
            format!(
                "{mac}: flash cycle {} {verb}: {} onto disk {} (attempt {}{retry})",
                c.id, c.image_name, c.target_serial, c.attempt
            ),
            json!({"cycle": c.id, "attempt": c.attempt, "image": c.image_name,
                   "url": c.image_url, "target_serial": c.target_serial}),
        )
    }

    /// Step 5: the `pxe.offered` event.
    pub(super) fn log_offer(
        &mut self,
        offer: Offer,
        cycle: Option<&Cycle>,
        park_reason: Option<&str>,
        ip: &str,
    ) -> sql::Result<()> {
        let (reason, cycle_id) = match (offer, cycle) {
            (Offer::Local(w), _) => (Some(w.text()), None),
            (Offer::Park(_), _) => (park_reason, None),
            (_, Some(c)) => (None, Some(c.id)),
            _ => (None, None),
        };
        let mac = self.mac;
        let summary = match reason {
            Some(r) => format!("{mac} offered {}: {r}", offer.kind()),
            None => format!("{mac} offered {}", offer.kind()),
        };
        self.j.event(
            self.tx,
            "pxe.offered",
            mac,
            summary,
            json!({"offer": offer.kind(), "boot_mode": self.machine.boot_mode.as_str(),
                   "reason": reason, "cycle": cycle_id, "ip": ip}),
        )
    }

    /// The result, and the live messages (a machine message when its state
    /// changed).
    fn finish(
        mut self,
        decision: Decision,
        cycle: Option<Cycle>,
        park_reason: Option<String>,
    ) -> (Contacted, Vec<BusMsg>) {
        let machine = Machine {
            parked_reason: park_reason.clone(),
            ..self.machine
        };
        if self.changed {
            let shown = cycle.as_ref().or(self.current.as_ref());
            self.j.push(BusMsg::machine(&machine, shown));
        }
        let out = Contacted {
            machine,
            decision,
            cycle,
            park_reason,
            flash_started: self.flash_started,
            flash_abandoned: self.flash_abandoned,
            mark: None,
        };
        (out, self.j.bus)
    }
}

/// Note a contact from a known machine. `last_seen` has one-second
/// resolution: at most one write per machine and second from polling
/// (keeps the plan path cheap).
fn touch(tx: &Conn, m: &Machine, ip: &str, now: &str) -> sql::Result<()> {
    let same_second = m
        .last_seen_at
        .as_deref()
        .is_some_and(|t| t.get(..19) == now.get(..19));
    if !same_second || m.last_seen_ip.as_deref() != Some(ip) {
        machines::touch(tx, m.mac, ip, now)?;
    }
    Ok(())
}

/// Register an unknown MAC in `bty-inventory` mode.
fn register(
    tx: &Conn,
    j: &mut Journal,
    mac: Mac,
    ip: &str,
    contact: Contact,
) -> sql::Result<Machine> {
    let m = machines::insert_discovered(tx, mac, ip, &j.now)?;
    let via = match contact {
        Contact::Pxe => "pxe",
        Contact::Plan => "plan",
    };
    j.event(
        tx,
        "machine.discovered",
        mac,
        format!("new machine {mac} registered in bty-inventory mode"),
        json!({"ip": ip, "via": via}),
    )?;
    Ok(m)
}

/// What a repeat must find unchanged: the machine's settings, its arming,
/// its parking and inventory turn, and which cycle is current and whether
/// it is still open. A cycle moving from `offered` to `booted` or
/// `flashing` is the machine's own doing and does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    settings: (i64, &'static str, Option<String>, Option<String>),
    parked: Option<String>,
    inventory_local_next: bool,
    cycle: Option<(i64, bool)>,
    drive: Option<String>,
}

/// The mark of `mac` now; `None` for an unknown MAC.
pub fn mark(conn: &Conn, mac: Mac) -> sql::Result<Option<Mark>> {
    let Some(m) = machines::get_for_decision(conn, mac)? else {
        return Ok(None);
    };
    let cycle = current_cycle(conn, &m)?.map(|c| (c.id, c.state.is_open()));
    Ok(Some(Mark {
        settings: (
            m.arm_gen,
            m.boot_mode.as_str(),
            m.image,
            m.target_disk_serial,
        ),
        parked: m.parked_reason,
        inventory_local_next: m.inventory_local_next,
        cycle,
        drive: m.sanboot_drive,
    }))
}
