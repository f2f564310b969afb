//! Discovery, bounded: an unknown MAC that contacts bty-web is registered
//! (in `bty-inventory` mode), but one client address registers at most
//! `[discovery] per_ip_per_minute` new MACs a minute, and at most
//! `[discovery] max_unassigned` discovered machines nobody assigned are
//! kept: the oldest are removed, each with a `machine.pruned` event. So a
//! LAN host inventing MACs cannot grow the registry without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::sql::{self, Conn};
use bty_proto::Mac;
use serde_json::json;

use crate::db::machines;
use crate::domain::journal::Journal;

/// The window of the per-address count.
const MINUTE: Duration = Duration::from_secs(60);

/// The limits, and each address's count in its current minute.
#[derive(Debug)]
pub struct Gate {
    per_minute: u32,
    /// `[discovery] max_unassigned`.
    pub max_unassigned: u32,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(per_minute: u32, max_unassigned: u32) -> Gate {
        Gate {
            per_minute,
            max_unassigned,
            counts: Mutex::default(),
        }
    }

    /// No limits (the domain's unit tests).
    pub fn open() -> Gate {
        Gate::new(u32::MAX, u32::MAX)
    }

    /// May `ip` register one more new MAC now? Counts it when so.
    pub fn admit(&self, ip: &str) -> bool {
        let Ok(mut counts) = self.counts.lock() else {
            return false;
        };
        if counts.len() > 4096 {
            counts.retain(|_, (start, _)| start.elapsed() < MINUTE);
        }
        let now = Instant::now();
        let e = counts.entry(ip.to_string()).or_insert((now, 0));
        if e.0.elapsed() >= MINUTE {
            *e = (now, 0);
        }
        if e.1 >= self.per_minute {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// Remove the oldest discovered, unassigned machines beyond `keep`, each
/// with a `machine.pruned` event.
pub fn prune(tx: &Conn, j: &mut Journal, keep: u32) -> sql::Result<()> {
    for mac in machines::unassigned_beyond(tx, keep)? {
        machines::delete(tx, mac)?;
        log_pruned(tx, j, mac, keep)?;
    }
    Ok(())
}

fn log_pruned(tx: &Conn, j: &mut Journal, mac: Mac, keep: u32) -> sql::Result<()> {
    j.event(
        tx,
        "machine.pruned",
        mac,
        format!(
            "{mac} removed: more than {keep} discovered machines nobody assigned \
             ([discovery] max_unassigned); it registers again on its next contact"
        ),
        json!({"max_unassigned": keep}),
    )
}
