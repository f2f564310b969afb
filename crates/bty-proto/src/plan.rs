//! The plan the agent fetches from `GET /pxe/{mac}/plan`, and the reports it
//! posts back while and after it flashes.
//!
//! The agent ignores fields it does not know and treats a mode it does not
//! know as "do nothing destructive", so the server can grow the plan without
//! breaking agents already baked into netboot images.

use serde::{Deserialize, Serialize};

use crate::catalog::ImageFormat;

/// What the agent should do on this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanMode {
    /// Write `image` onto the disk whose serial is `target.serial`.
    Flash,
    /// Nothing to do here: reboot so the next PXE contact boots the disk.
    Exit,
    /// Report inventory (already done at agent start), then reboot.
    Inventory,
    /// An operator at the console picks what to do; the agent never
    /// flashes on its own in this mode.
    Interactive,
    /// A mode newer than this build. The agent does nothing destructive.
    #[serde(other)]
    Unknown,
}

/// The image a flash plan writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanImage {
    /// Where to GET the bytes (withcache's blob URL when withcache is
    /// configured, the origin otherwise).
    pub url: String,
    /// sha256 of the bytes at `url` (the compressed container for
    /// compressed formats), lower-case hex, when the catalog knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Length in bytes of the download, when the catalog knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Container format. The agent trusts this over the URL's extension and
    /// confirms it with the stream's magic bytes.
    pub format: ImageFormat,
    /// Catalog entry name, for status lines and reports.
    pub name: String,
}

/// The disk a flash plan writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTarget {
    /// Serial number of the target disk as the kernel reports it in sysfs.
    pub serial: String,
}

/// Absolute URLs the agent posts its reports to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportUrls {
    /// Where [`ProgressReport`]s go.
    pub progress: String,
    /// Where the one [`DoneReport`] of the cycle goes.
    pub done: String,
}

/// `GET /pxe/{mac}/plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version; see [`crate::PLAN_VERSION`].
    pub version: u32,
    /// What to do.
    pub mode: PlanMode,
    /// Id of the flash cycle this plan belongs to (flash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<String>,
    /// Secret of the cycle; every report must carry it (flash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The image to write (flash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<PlanImage>,
    /// The disk to write it to (flash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PlanTarget>,
    /// Where to report (flash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportUrls>,
    /// Why the server chose this mode, for the console and the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Plan {
    /// A plan without a flash: just a mode and, optionally, why.
    pub fn simple(mode: PlanMode, reason: Option<String>) -> Self {
        Plan {
            version: crate::PLAN_VERSION,
            mode,
            cycle: None,
            token: None,
            image: None,
            target: None,
            report: None,
            reason,
        }
    }
}

/// Stage of a flash, as reported in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Checking the target and the image before anything is written.
    Preflight,
    /// Streaming, decompressing and writing.
    Writing,
    /// Reading back what landed on disk.
    Verifying,
    /// Writing the held-back first MiB and syncing.
    Finishing,
    /// A phase newer than this build.
    #[serde(other)]
    Other,
}

impl Phase {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Writing => "writing",
            Phase::Verifying => "verifying",
            Phase::Finishing => "finishing",
            Phase::Other => "other",
        }
    }
}

/// `POST /pxe/{mac}/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The cycle token from the plan.
    pub token: String,
    /// Bytes of the image written (or verified, in that phase) so far.
    pub bytes_done: u64,
    /// Total bytes of the phase, when known.
    #[serde(default)]
    pub bytes_total: Option<u64>,
    /// Current phase.
    pub phase: Phase,
    /// Bytes per second over the last interval.
    #[serde(default)]
    pub rate: Option<f64>,
}

/// `POST /pxe/{mac}/done`: the one terminal report of a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneReport {
    /// The cycle token from the plan.
    pub token: String,
    /// Whether the image is on disk and verified.
    pub ok: bool,
    /// Why the flash failed (or was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// sha256 of the bytes read back from the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Wall time of the flash in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// How the server answered a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// True when this report changed the cycle; false when it was a repeat
    /// of one already recorded (a replayed `done`).
    pub recorded: bool,
    /// State of the cycle after the report.
    pub state: String,
}

/// `POST /pxe/{mac}/status`: the Python live environment's terminal report,
/// accepted for compatibility. It carries no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyStatus {
    /// `done` or `failed`.
    pub status: LegacyStatusKind,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The two values of [`LegacyStatus::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegacyStatusKind {
    /// The flash finished.
    Done,
    /// The flash failed.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_mode_and_fields_are_tolerated() {
        let p: Plan =
            serde_json::from_str(r#"{"version":2,"mode":"teleport","extra":{"a":1}}"#).unwrap();
        assert_eq!(p.mode, PlanMode::Unknown);
        assert!(p.image.is_none());
    }

    #[test]
    fn flash_plan_round_trips() {
        let json = r#"{"version":1,"mode":"flash","cycle":"c1","token":"t",
            "image":{"url":"http://h/b/x/a.img.zst","sha256":"00","size":5,"format":"img.zst","name":"a"},
            "target":{"serial":"S1"},"report":{"progress":"http://h/p","done":"http://h/d"}}"#;
        let p: Plan = serde_json::from_str(json).unwrap();
        assert_eq!(p.mode, PlanMode::Flash);
        assert_eq!(p.image.as_ref().unwrap().format, ImageFormat::Zst);
        let again: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn legacy_status_is_strict() {
        let s: LegacyStatus = serde_json::from_str(r#"{"status":"failed","reason":"x"}"#).unwrap();
        assert_eq!(s.status, LegacyStatusKind::Failed);
        assert!(serde_json::from_str::<LegacyStatus>(r#"{"status":"maybe"}"#).is_err());
        assert!(serde_json::from_str::<LegacyStatus>(r#"{"status":"done","x":1}"#).is_err());
    }
}
