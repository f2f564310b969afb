//! The flash cycle, applied. A cycle is one flash attempt with its own id
//! and token: `offered → booted → flashing → done | failed` (or
//! `cancelled` by an operator change). See docs/bty-web.md "The flash
//! cycle".
//!
//! - [`contact`]: a PXE or plan contact, as named steps.
//! - [`answer`]: what a contact gets ([`Answer`] for the iPXE script, the
//!   agent's plan), and [`preview`]: the same for the next contact,
//!   applying nothing.
//! - [`reports`]: `progress`, `done` and the legacy `status`.
//! - [`inventory`]: the netboot files fetched (`booted`) and the inventory.
//!
//! Each write runs on the database thread as one transaction, so a
//! decision and its side effects never interleave with an operator change.

pub mod answer;
pub mod contact;
pub mod discovery;
pub mod inventory;
pub mod repeat;
pub mod reports;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::Relaxed;

use crate::db::sql::{self, Conn};
use bty_proto::plan::{DoneReport, LegacyStatus, ProgressReport, ReportAck};
use bty_proto::Mac;
use serde_json::json;

pub use answer::{Answer, AnswerKind, ScriptCycle};
pub use contact::Contacted;

use super::decide::{decide, Contact, CycleChoice, CycleFacts, Inputs, Offer, ParkWhy};
use super::journal::Journal;
use super::{registry, Domain, DomainError, Result};
use crate::catalog::{Image, Snapshot};
use crate::db::cycles::{self, Cycle};
use crate::db::machines::Machine;

/// Longest `reason` a report may carry, in characters.
pub const MAX_REASON: usize = 2000;

/// The machine's current cycle: the newest of its arming, when its mode
/// flashes at all.
fn current_cycle(conn: &Conn, m: &Machine) -> sql::Result<Option<Cycle>> {
    if m.boot_mode.flashes() {
        cycles::current(conn, m.mac, m.arm_gen)
    } else {
        Ok(None)
    }
}

/// What [`decide`] is asked about `m`, for a contact and for the preview
/// alike. `image`: its image as the catalog has it now.
fn inputs(
    m: &Machine,
    current: Option<&Cycle>,
    image: Option<&Image>,
    max_attempts: u32,
) -> Inputs {
    Inputs {
        mode: m.boot_mode,
        has_image: m.image.is_some(),
        has_target: m.target_disk_serial.is_some(),
        image_available: image.is_some(),
        image_measured: image.is_some_and(Image::measured),
        parked: m.parked_reason.is_some(),
        inventory_local_next: m.inventory_local_next,
        current: current.map(|c| CycleFacts {
            id: c.id,
            state: c.state,
            attempt: c.attempt,
            local_served: c.local_served,
        }),
        max_attempts,
    }
}

/// Why a machine is parked now (`offer` parks it, `current` is the cycle
/// that could not finish).
fn park_reason(offer: Offer, current: Option<&Cycle>, max_attempts: u32) -> String {
    let (attempts, last) = current
        .map(|c| (c.attempt, c.state.as_str()))
        .unwrap_or((0, "none"));
    match offer {
        Offer::Park(ParkWhy::ImageVanished) => format!(
            "a flash was under way (cycle state {last}) and its image or binding is no longer usable"
        ),
        _ => format!(
            "{attempts} flash attempts did not end in done ok (limit flash.max_attempts = {max_attempts})"
        ),
    }
}

/// A plan (which carries the token) and the reports of cycle `c` are
/// taken only once its netboot kernel was fetched, and only from the
/// address that fetched it: knowing the MAC, or even the token, is not
/// enough from another host.
fn check_booter(mac: Mac, c: &Cycle, ip: &str) -> Result<()> {
    if c.booted_at.is_none() {
        return Err(DomainError::Conflict(format!(
            "{mac}: cycle {} was offered but its netboot kernel was not fetched yet \
             (GET /boot/...?mac=); no plan or report is taken before",
            c.id
        )));
    }
    if c.is_stick() && c.booted_ip.as_deref() != Some(ip) {
        return Err(DomainError::Forbidden(format!(
            "{mac}: stick flash cycle {} was started from another address than {ip}; its \
             reports are taken only from the address that started it",
            c.id
        )));
    }
    if c.booted_ip.as_deref() != Some(ip) {
        return Err(DomainError::Forbidden(format!(
            "{mac}: cycle {} was booted from another address than {ip}; its plan and \
             reports are taken only from the address that fetched its netboot kernel",
            c.id
        )));
    }
    Ok(())
}

/// A report from a MAC no machine has (`what`: `inventory`, ...).
fn log_orphan(conn: &Conn, j: &mut Journal, mac: Mac, ip: &str, what: &str) -> sql::Result<()> {
    j.event(
        conn,
        "pxe.orphan",
        mac,
        format!("{what} from unregistered {mac}"),
        json!({"ip": ip}),
    )
}

/// What the next PXE contact of a machine would get.
#[derive(Debug, PartialEq, Eq)]
pub struct Preview {
    /// The answer, as the contact would render it.
    pub answer: Answer,
    /// A flash that would open a new cycle: its id is not known yet and
    /// shows as 0.
    pub new_cycle: bool,
}

/// What `m`'s next PXE contact gets, with the inputs and the decision of
/// [`contact::contact`] but applying nothing (no cycle is created, no
/// event logged). `current` is its current cycle as stored.
pub fn preview(
    m: &Machine,
    current: Option<&Cycle>,
    catalog: &Snapshot,
    max_attempts: u32,
) -> Result<Preview> {
    // As `current_cycle`: a mode that does not flash has none.
    let current = current.filter(|_| m.boot_mode.flashes());
    let image = m.image.as_deref().and_then(|n| catalog.get(n));
    let d = decide(&inputs(m, current, image, max_attempts), Contact::Pxe);
    let (cycle, new_cycle) = match d.offer {
        Offer::Flash(CycleChoice::Reuse(id)) if current.is_some_and(|c| c.id == id) => {
            (current.map(ScriptCycle::of), false)
        }
        Offer::Flash(choice) => (Some(would_open(m, choice)), true),
        _ => (None, false),
    };
    let reason = if d.effects.park {
        Some(park_reason(d.offer, current, max_attempts))
    } else {
        m.parked_reason.clone()
    };
    let answer = Answer::new(m, d.offer, cycle, reason.as_deref())?;
    Ok(Preview { answer, new_cycle })
}

/// The cycle a flash offer would open (id 0: not created yet).
fn would_open(m: &Machine, choice: CycleChoice) -> ScriptCycle {
    let attempt = match choice {
        CycleChoice::New { attempt } => attempt,
        CycleChoice::Reuse(_) => 1,
    };
    ScriptCycle {
        id: 0,
        attempt,
        image_name: m.image.clone().unwrap_or_default(),
        target_serial: m.target_disk_serial.clone().unwrap_or_default(),
    }
}

/// A report's free-text reason is at most [`MAX_REASON`] characters.
fn check_reason(reason: Option<&str>) -> Result<()> {
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(DomainError::invalid(
            "reason",
            format!("reason is longer than {MAX_REASON} characters"),
        ));
    }
    Ok(())
}

impl Domain {
    /// A PXE (`Contact::Pxe`) or plan contact from `mac` at `ip`.
    /// A PXE contact repeating the last one (same address, within `[pxe]
    /// repeat_window_secs`, nothing changed) gets its answer again and
    /// changes nothing ([`repeat`]).
    pub async fn contact(&self, mac: Mac, ip: String, contact: Contact) -> Result<Contacted> {
        let window = self.policy.repeat_window;
        let watch = contact == Contact::Pxe && !window.is_zero();
        if let Some((then, prev)) = watch
            .then(|| self.recent.candidate(mac, &ip, window))
            .flatten()
        {
            let now = self.read(move |c| Ok(contact::mark(c, mac)?)).await?;
            if now.as_ref() == Some(&then) {
                return Ok(Contacted {
                    flash_started: false,
                    flash_abandoned: false,
                    ..prev
                });
            }
        }
        let snap = self.catalog.snapshot();
        let max = self.max_attempts;
        let at = ip.clone();
        let gate = self.gate.clone();
        let r = self
            .write(move |c| contact::contact_gated(c, mac, &at, contact, max, &snap, &gate))
            .await?;
        if let Some(mark) = r.mark.clone().filter(|_| watch) {
            self.recent.remember(mac, ip, mark, r.clone(), window);
        }
        let m = &self.metrics;
        m.offer(r.decision.offer.kind(), contact == Contact::Plan);
        if r.flash_started {
            m.flashes_started.fetch_add(1, Relaxed);
        }
        if r.flash_abandoned {
            m.flashes_failed.fetch_add(1, Relaxed);
        }
        Ok(r)
    }

    /// What `m` would get now ([`preview`] with this catalog).
    pub fn preview_of(&self, m: &Machine, current: Option<&Cycle>) -> Result<Preview> {
        preview(m, current, &self.catalog.snapshot(), self.max_attempts)
    }

    /// What the machine `mac` would get now.
    pub async fn preview(&self, mac: Mac) -> Result<Preview> {
        let (m, current) = self
            .read(move |c| {
                let m = registry::get(c, mac)?;
                let current = cycles::current(c, mac, m.arm_gen)?;
                Ok((m, current))
            })
            .await?;
        self.preview_of(&m, current.as_ref())
    }

    /// `mac` fetched a netboot file (`file`).
    pub async fn booted(&self, mac: Mac, ip: String, file: String) -> Result<()> {
        self.write(move |c| Ok(((), inventory::booted(c, mac, &ip, &file)?)))
            .await
    }

    /// A progress report.
    pub async fn progress(&self, mac: Mac, ip: String, p: ProgressReport) -> Result<ReportAck> {
        let r = self
            .write(move |c| reports::progress(c, mac, &ip, &p))
            .await
            .inspect_err(|e| self.count_refused(e))?;
        self.metrics.bytes_reported.fetch_add(r.delta, Relaxed);
        if r.started {
            self.metrics.flashes_started.fetch_add(1, Relaxed);
        }
        Ok(ReportAck {
            recorded: true,
            state: "flashing".into(),
        })
    }

    /// A done report.
    pub async fn done(&self, mac: Mac, ip: String, d: DoneReport) -> Result<ReportAck> {
        check_reason(d.reason.as_deref())?;
        if let Some(sha) = &d.sha256 {
            bty_proto::text::validate_sha256("sha256", sha)?;
        }
        let r = self
            .write(move |c| reports::done(c, mac, &ip, &d))
            .await
            .inspect_err(|e| self.count_refused(e))?;
        self.count_closed(r.ok);
        Ok(r.ack)
    }

    /// A legacy (tokenless) status report.
    pub async fn legacy_status(&self, mac: Mac, ip: String, s: LegacyStatus) -> Result<()> {
        if !self.policy.legacy_status {
            return Err(DomainError::Forbidden(
                "the tokenless POST /pxe/{mac}/status is off ([pxe] legacy_status = false); \
                 the agent reports with the token of its plan"
                    .into(),
            ));
        }
        check_reason(s.reason.as_deref())?;
        let r = self
            .write(move |c| reports::legacy_status(c, mac, &ip, s.status, s.reason.as_deref()))
            .await?;
        self.count_closed(r.ok);
        Ok(())
    }

    /// An inventory report (a JSON object, see [`inventory::check`]).
    pub async fn inventory(&self, mac: Mac, ip: String, body: &serde_json::Value) -> Result<()> {
        let inv = inventory::check(body)?;
        self.write(move |c| Ok(((), inventory::inventory(c, mac, &ip, &inv)?)))
            .await
    }

    /// Count a report refused for its token or its cycle's state.
    fn count_refused(&self, e: &DomainError) {
        if matches!(e, DomainError::StaleToken(_) | DomainError::Conflict(_)) {
            self.metrics.reports_refused.fetch_add(1, Relaxed);
        }
    }

    fn count_closed(&self, ok: Option<bool>) {
        match ok {
            Some(true) => self.metrics.flashes_done.fetch_add(1, Relaxed),
            Some(false) => self.metrics.flashes_failed.fetch_add(1, Relaxed),
            None => 0,
        };
    }
}
