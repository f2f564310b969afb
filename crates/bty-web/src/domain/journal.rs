//! The event log as the domain writes it: what one transaction records
//! besides its own rows (event-log entries, and the live messages to
//! publish once it has committed), and reading the log back.

use crate::db::sql::{self, Conn};
use bty_proto::Mac;

use super::bus::BusMsg;
use super::{Domain, Result};
use crate::db::events::{self, Event};

/// The time of one transaction and what it has to say.
pub struct Journal {
    /// Now, as every row written by this transaction stamps it.
    pub now: String,
    /// Live messages, published after the commit.
    pub bus: Vec<BusMsg>,
}

impl Journal {
    /// A journal stamped now.
    pub fn start() -> Journal {
        Journal {
            now: crate::db::now(),
            bus: Vec::new(),
        }
    }

    /// Log an event about `mac` (and announce it).
    pub fn event(
        &mut self,
        conn: &Conn,
        kind: &str,
        mac: Mac,
        summary: String,
        details: serde_json::Value,
    ) -> sql::Result<()> {
        let e = events::insert(
            conn,
            kind,
            Some(&mac.to_string()),
            &summary,
            Some(&details),
            &self.now,
        )?;
        self.bus.push(BusMsg::Event(e));
        Ok(())
    }

    /// Log an event about no machine in particular (a stick key minted or
    /// revoked), and announce it.
    pub fn note(
        &mut self,
        conn: &Conn,
        kind: &str,
        summary: String,
        details: serde_json::Value,
    ) -> sql::Result<()> {
        let e = events::insert(conn, kind, None, &summary, Some(&details), &self.now)?;
        self.bus.push(BusMsg::Event(e));
        Ok(())
    }

    /// Announce a message that is not an event.
    pub fn push(&mut self, msg: BusMsg) {
        self.bus.push(msg);
    }
}

impl Domain {
    /// A page of the event log, newest first.
    pub async fn events(&self, q: events::Query) -> Result<Vec<Event>> {
        self.read(move |c| Ok(events::list(c, &q)?)).await
    }
}

impl Domain {
    /// Log an event about no machine in particular that no change of the
    /// registry goes with (a scheduled backup that failed), and announce it.
    pub async fn note(
        &self,
        kind: &'static str,
        summary: String,
        details: serde_json::Value,
    ) -> Result<()> {
        self.write(move |c| {
            let mut j = Journal::start();
            j.note(c, kind, summary, details)?;
            Ok(((), j.bus))
        })
        .await
    }
}
