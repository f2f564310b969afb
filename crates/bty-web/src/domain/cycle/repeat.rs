//! A PXE contact repeated by the same address within `[pxe]
//! repeat_window_secs`, with nothing changed in between (no operator
//! change, no report closing the cycle, no inventory), is the same contact:
//! it gets the first one's answer again and changes nothing. So a burst of
//! `GET /pxe/{mac}` neither fails a flash over and over nor flips
//! flash-always's or inventory's alternation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bty_proto::Mac;

use super::contact::{Contacted, Mark};

/// One machine's last PXE contact.
#[derive(Debug, Clone)]
struct Last {
    ip: String,
    at: Instant,
    mark: Mark,
    contacted: Contacted,
}

/// The last PXE contact of each machine, for the window.
#[derive(Debug, Default)]
pub struct Recent {
    last: Mutex<HashMap<Mac, Last>>,
}

impl Recent {
    /// The earlier contact `mac` at `ip` repeats, if it is within
    /// `window`; its mark must still be checked.
    pub fn candidate(&self, mac: Mac, ip: &str, window: Duration) -> Option<(Mark, Contacted)> {
        let last = self.last.lock().ok()?;
        let l = last.get(&mac)?;
        (l.ip == ip && l.at.elapsed() < window).then(|| (l.mark.clone(), l.contacted.clone()))
    }

    /// Remember a contact (forgetting those older than `window`).
    pub fn remember(
        &self,
        mac: Mac,
        ip: String,
        mark: Mark,
        contacted: Contacted,
        window: Duration,
    ) {
        if let Ok(mut last) = self.last.lock() {
            last.retain(|_, l| l.at.elapsed() < window);
            let at = Instant::now();
            last.insert(
                mac,
                Last {
                    ip,
                    at,
                    mark,
                    contacted,
                },
            );
        }
    }
}
