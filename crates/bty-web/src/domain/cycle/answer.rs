//! What a contact gets, before it is rendered: the [`Answer`] the iPXE
//! script is made from and the agent's JSON [`Plan`].
//!
//! A PXE contact and the machine page's preview both end in an [`Answer`]
//! built by [`Answer::new`] from a decision, and `crate::ipxe` renders
//! every answer with one function, so the preview shows the script a
//! machine would really be served.

use bty_proto::plan::{Plan, PlanImage, PlanMode, PlanTarget, ReportUrls};
use bty_proto::{BootMode, ImageFormat, Mac};
use serde::Serialize;

use super::contact::Contacted;
use crate::db::cycles::Cycle;
use crate::db::machines::Machine;
use crate::domain::decide::{LocalWhy, Offer};
use crate::domain::{DomainError, Result};

/// The BIOS drive a local boot uses when the machine names none.
pub const DEFAULT_DRIVE: &str = "0x80";

/// The parts of a cycle a flash script shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptCycle {
    /// Cycle id.
    pub id: i64,
    /// Attempt number.
    pub attempt: u32,
    /// Catalog entry name.
    pub image_name: String,
    /// Target disk serial.
    pub target_serial: String,
}

impl ScriptCycle {
    /// The script's view of a stored cycle.
    pub fn of(c: &Cycle) -> ScriptCycle {
        ScriptCycle {
            id: c.id,
            attempt: c.attempt,
            image_name: c.image_name.clone(),
            target_serial: c.target_serial.clone(),
        }
    }
}

/// What a PXE contact is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The machine.
    pub mac: Mac,
    /// Its mode (the script's header says it).
    pub mode: BootMode,
    /// The script's kind and what it shows.
    pub kind: AnswerKind,
}

/// The four scripts a machine can get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// Boot the local disk.
    Local {
        /// BIOS drive for `sanboot`.
        drive: String,
        /// Why (server-made text).
        why: &'static str,
    },
    /// The netboot env, to flash this cycle.
    Flash(ScriptCycle),
    /// The netboot env, to report inventory.
    Inventory,
    /// Wait, say why, ask again.
    Parked {
        /// Why the machine is parked.
        reason: String,
    },
}

impl Answer {
    /// The answer to `offer` for `m`. A flash needs its cycle; a park its
    /// reason.
    pub fn new(
        m: &Machine,
        offer: Offer,
        cycle: Option<ScriptCycle>,
        park_reason: Option<&str>,
    ) -> Result<Answer> {
        let kind = match offer {
            Offer::Local(why) => AnswerKind::Local {
                drive: m
                    .sanboot_drive
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DRIVE.to_string()),
                why: why.text(),
            },
            Offer::Flash(_) => AnswerKind::Flash(cycle.ok_or_else(|| {
                DomainError::Internal(format!("{}: flash offer without a cycle", m.mac))
            })?),
            Offer::Inventory => AnswerKind::Inventory,
            Offer::Park(_) => AnswerKind::Parked {
                reason: park_reason.unwrap_or("parked").to_string(),
            },
        };
        Ok(Answer {
            mac: m.mac,
            mode: m.boot_mode,
            kind,
        })
    }
}

impl Contacted {
    /// The iPXE answer to this contact.
    pub fn answer(&self) -> Result<Answer> {
        Answer::new(
            &self.machine,
            self.decision.offer,
            self.cycle.as_ref().map(ScriptCycle::of),
            self.park_reason.as_deref(),
        )
    }

    /// The agent's plan for this contact; `host` is the validated `Host`
    /// the agent reached bty-web at (its report URLs use it).
    pub fn plan(&self, host: &str) -> Result<Plan> {
        Ok(match self.decision.offer {
            Offer::Local(why) => Plan::simple(PlanMode::Exit, Some(why.text().to_string())),
            Offer::Inventory => Plan::simple(PlanMode::Inventory, None),
            Offer::Park(_) => Plan::simple(
                PlanMode::Interactive,
                Some(format!(
                    "parked: {}",
                    self.park_reason.as_deref().unwrap_or("see the event log")
                )),
            ),
            Offer::Flash(_) => {
                let c = self.cycle.as_ref().ok_or_else(|| {
                    DomainError::Internal(format!(
                        "{}: flash plan without a cycle",
                        self.machine.mac
                    ))
                })?;
                flash_plan(c, self.machine.mac, host)?
            }
        })
    }
}

/// A flash plan for cycle `c`. A cycle without the image's sha256 and
/// size (one opened by an older bty-web) gets no flash plan: the agent
/// could not check what it writes. It gets `exit` and reboots.
fn flash_plan(c: &Cycle, mac: Mac, host: &str) -> Result<Plan> {
    if c.image_sha256.is_none() || c.image_size.is_none() {
        return Ok(Plan::simple(
            PlanMode::Exit,
            Some(LocalWhy::ImageNotMeasured.text().to_string()),
        ));
    }
    let format = c
        .image_format
        .parse::<ImageFormat>()
        .map_err(|e| DomainError::Internal(format!("cycle {}: {e}", c.id)))?;
    let base = format!("http://{host}/pxe/{}", mac.hyphenated());
    Ok(Plan {
        version: bty_proto::PLAN_VERSION,
        mode: PlanMode::Flash,
        cycle: Some(c.id.to_string()),
        token: Some(c.token.clone()),
        image: Some(PlanImage {
            url: c.image_url.clone(),
            sha256: c.image_sha256.clone(),
            size: c.image_size,
            format,
            name: c.image_name.clone(),
        }),
        target: Some(PlanTarget {
            serial: c.target_serial.clone(),
        }),
        report: Some(ReportUrls {
            progress: format!("{base}/progress"),
            done: format!("{base}/done"),
        }),
        reason: None,
    })
}
