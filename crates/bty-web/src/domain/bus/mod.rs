//! The live-message bus: what the domain announces after each change (an
//! event row, a progress sample, a machine's new state), for the API's SSE
//! stream (`GET /api/events/stream`) and the UI's live fragments. The
//! domain publishes; readers subscribe. Messages are small and per
//! machine, never whole tables.

pub mod relay;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::db::cycles::Cycle;
use crate::db::events::Event;
use crate::db::machines::Machine;

/// Messages a slow subscriber may fall behind by before it is told it
/// lagged.
const CAPACITY: usize = 1024;

/// One message on the bus.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum BusMsg {
    /// A new event-log row (SSE `event: event`).
    Event(Event),
    /// A progress report (SSE `event: progress`).
    Progress(ProgressMsg),
    /// A machine's state changed (SSE `event: machine`).
    Machine(MachineMsg),
}

impl BusMsg {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            BusMsg::Event(_) => "event",
            BusMsg::Progress(_) => "progress",
            BusMsg::Machine(_) => "machine",
        }
    }

    /// A machine's summary, with its current cycle if any.
    pub fn machine(m: &Machine, c: Option<&Cycle>) -> BusMsg {
        BusMsg::Machine(MachineMsg {
            mac: m.mac.to_string(),
            boot_mode: m.boot_mode.to_string(),
            cycle: c.map(|c| c.id),
            cycle_state: c.map(|c| c.state.as_str().to_string()),
            parked: m.parked_reason.clone(),
            deleted: false,
        })
    }

    /// A machine was deleted.
    pub fn deleted(mac: &str) -> BusMsg {
        BusMsg::Machine(MachineMsg {
            mac: mac.to_string(),
            boot_mode: String::new(),
            cycle: None,
            cycle_state: None,
            parked: None,
            deleted: true,
        })
    }
}

/// A progress sample of a cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressMsg {
    /// Machine.
    pub mac: String,
    /// Cycle id.
    pub cycle: i64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes total, when known.
    pub bytes_total: Option<u64>,
    /// Phase.
    pub phase: String,
    /// Bytes/s.
    pub rate: Option<f64>,
}

/// A machine's new state in a few fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineMsg {
    /// Machine.
    pub mac: String,
    /// Boot mode.
    pub boot_mode: String,
    /// Current cycle id and state, if any.
    pub cycle: Option<i64>,
    /// Current cycle state.
    pub cycle_state: Option<String>,
    /// Parked reason.
    pub parked: Option<String>,
    /// Deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The bus itself; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusMsg>,
    /// Where this replica's messages go to reach the other replicas
    /// (PostgreSQL NOTIFY, see [`relay`]); `None` with SQLite.
    relay: Option<std::sync::mpsc::Sender<BusMsg>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(CAPACITY).0,
            relay: None,
        }
    }
}

impl Bus {
    /// A bus whose messages also go to the other bty-web replicas sharing
    /// the PostgreSQL database at `url`, and which carries theirs.
    pub fn shared(url: &str) -> anyhow::Result<Bus> {
        let mut bus = Bus::default();
        bus.relay = Some(relay::start(url, bus.clone())?);
        Ok(bus)
    }

    /// Publish messages; nobody listening is fine.
    pub fn publish(&self, msgs: impl IntoIterator<Item = BusMsg>) {
        for m in msgs {
            if let Some(r) = &self.relay {
                // The relay thread only stops with the process.
                let _ = r.send(m.clone());
            }
            let _ = self.tx.send(m);
        }
    }

    /// Deliver a message another replica published, to this replica's
    /// subscribers only.
    pub fn deliver(&self, m: BusMsg) {
        let _ = self.tx.send(m);
    }

    /// A new subscriber, seeing messages published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMsg> {
        self.tx.subscribe()
    }
}
