//! Prometheus metrics: atomics keep the PXE path lock-free; the text
//! format is the kit's (`bty_http::metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bty_http::metrics::Exposition;
use bty_http::metrics::Kind::{Counter, Gauge};

/// Offer kinds counted separately (see [`crate::domain::decide::Offer::kind`]).
pub const OFFER_KINDS: [&str; 4] = ["local", "flash", "inventory", "parked"];

/// All counters.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    offers: [AtomicU64; 4],
    plans: [AtomicU64; 4],
    /// `GET /pxe-bootstrap.ipxe` answered: machines whose iPXE reached
    /// bty-web, however their DHCP and TFTP got them there.
    bootstraps: AtomicU64,
    /// Cycles that entered `flashing`.
    pub flashes_started: AtomicU64,
    /// Cycles that ended `done`.
    pub flashes_done: AtomicU64,
    /// Cycles that ended `failed`.
    pub flashes_failed: AtomicU64,
    /// Sum of progress increments reported by agents.
    pub bytes_reported: AtomicU64,
    /// Reports refused for their token.
    pub reports_refused: AtomicU64,
    /// Backups written ([`crate::backups`]).
    pub backups_made: AtomicU64,
    /// Backups that failed.
    pub backups_failed: AtomicU64,
    /// Unix time of the last backup written by this process (0: none yet).
    pub backup_last_success: AtomicU64,
}

impl Metrics {
    /// Count one answered request by status class.
    pub fn request(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize;
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count a `/pxe-bootstrap.ipxe` served.
    pub fn bootstrap(&self) {
        self.bootstraps.fetch_add(1, Relaxed);
    }

    /// Count an offer (`plan` false: PXE script, true: JSON plan).
    pub fn offer(&self, kind: &str, plan: bool) {
        if let Some(i) = OFFER_KINDS.iter().position(|k| *k == kind) {
            let arr = if plan { &self.plans } else { &self.offers };
            if let Some(c) = arr.get(i) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// Prometheus text exposition (the format is `bty_http::metrics`).
    pub fn render(&self, machines: Option<i64>) -> String {
        let mut m = Exposition::new();
        let name = "bty_http_requests_total";
        m.family(name, Counter, "HTTP requests answered, by status class.");
        for (i, c) in self.requests.iter().enumerate().skip(1) {
            m.sample(name, &[("class", &format!("{i}xx"))], c.load(Relaxed));
        }
        for (name, help, arr) in [
            (
                "bty_pxe_offers_total",
                "iPXE scripts served by /pxe/{mac}, by kind.",
                &self.offers,
            ),
            (
                "bty_plans_total",
                "Plans served by /pxe/{mac}/plan, by kind.",
                &self.plans,
            ),
        ] {
            m.family(name, Counter, help);
            for (k, c) in OFFER_KINDS.iter().zip(arr.iter()) {
                m.sample(name, &[("kind", k)], c.load(Relaxed));
            }
        }
        for (name, help, c) in [
            (
                "bty_pxe_bootstraps_total",
                "iPXE bootstrap scripts served by /pxe-bootstrap.ipxe.",
                &self.bootstraps,
            ),
            (
                "bty_flashes_started_total",
                "Flash cycles that entered flashing.",
                &self.flashes_started,
            ),
            (
                "bty_flashes_done_total",
                "Flash cycles that ended done.",
                &self.flashes_done,
            ),
            (
                "bty_flashes_failed_total",
                "Flash cycles that ended failed.",
                &self.flashes_failed,
            ),
            (
                "bty_flash_bytes_reported_total",
                "Bytes written as reported by agents' progress.",
                &self.bytes_reported,
            ),
            (
                "bty_reports_refused_total",
                "Progress/done reports refused for a missing, stale or foreign token.",
                &self.reports_refused,
            ),
            (
                "bty_backups_total",
                "Scheduled or requested backups written.",
                &self.backups_made,
            ),
            (
                "bty_backups_failed_total",
                "Backups that failed (see the backup.failed events).",
                &self.backups_failed,
            ),
        ] {
            m.single(name, Counter, help, c.load(Relaxed));
        }
        m.single(
            "bty_backup_last_success_timestamp_seconds",
            Gauge,
            "Unix time of the last backup this bty-web wrote (0: none since start).",
            self.backup_last_success.load(Relaxed),
        );
        if let Some(n) = machines {
            let n = u64::try_from(n).unwrap_or(0);
            m.single("bty_machines", Gauge, "Registered machines.", n);
        }
        m.finish()
    }
}
