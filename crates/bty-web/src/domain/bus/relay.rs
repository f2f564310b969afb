//! The live bus across replicas: PostgreSQL `NOTIFY`/`LISTEN`.
//!
//! Several bty-web replicas on one PostgreSQL each publish on their own
//! [`Bus`]; a browser's SSE stream or live page is served by one replica.
//! So every message a replica publishes is also sent as a notification on
//! the `bty_bus` channel, and every replica listens on it and delivers the
//! messages of the others (its own come back too and are dropped by their
//! origin). Two connections per replica, each on its own thread: one blocks
//! in `LISTEN`, one sends, so neither waits for the other.
//!
//! Delivery is best-effort, as on one host: a notification sent while a
//! replica's listener is reconnecting is lost to that replica's browsers,
//! and the next message (or a page reload) brings them back in step. The
//! database stays the truth; the bus only says "look again".

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};

use super::{Bus, BusMsg};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "bty_bus";

/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// What travels in one notification.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The replica that published it.
    o: u64,
    /// [`BusMsg::name`].
    k: String,
    /// The message.
    m: serde_json::Value,
}

/// Start the relay of `bus` through the database at `url`; the sender to
/// hand this replica's messages to. Fails when the database cannot be
/// reached (so a bad URL stops the start, as the store does).
pub fn start(url: &str, bus: Bus) -> anyhow::Result<mpsc::Sender<BusMsg>> {
    let origin: u64 = rand::random();
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let listen_url = url.to_owned();
    std::thread::Builder::new()
        .name("bty-bus-listen".into())
        .spawn(move || listen(&listen_url, origin, &bus, ready_tx))
        .context("starting the bus listener thread")?;
    ready_rx
        .recv()
        .context("the bus listener thread stopped")??;

    let (tx, rx) = mpsc::channel::<BusMsg>();
    let send_url = url.to_owned();
    std::thread::Builder::new()
        .name("bty-bus-notify".into())
        .spawn(move || send(&send_url, origin, &rx))
        .context("starting the bus notify thread")?;
    Ok(tx)
}

/// Connect (the sync client runs its own runtime, so this is only ever
/// called on our own threads, never on a tokio worker).
fn connect(url: &str) -> anyhow::Result<Client> {
    Client::connect(url, NoTls).context("connecting to PostgreSQL for the live bus")
}

fn listen(url: &str, origin: u64, bus: &Bus, ready: mpsc::Sender<anyhow::Result<()>>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = connect(url).and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))
                .context("LISTEN on the live bus channel")?;
            Ok(c)
        });
        let mut client = match attempt {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!("live bus: {e:#}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        backoff = Duration::from_millis(200);
        let mut notes = client.notifications();
        let mut it = notes.blocking_iter();
        loop {
            match it.next() {
                Ok(Some(n)) => {
                    if let Some(m) = decode(n.payload(), origin) {
                        bus.deliver(m);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("live bus: the listening connection failed: {e}; reconnecting");
                    break;
                }
            }
        }
    }
}

fn send(url: &str, origin: u64, rx: &mpsc::Receiver<BusMsg>) {
    let mut client: Option<Client> = None;
    while let Ok(m) = rx.recv() {
        let Some(payload) = encode(&m, origin) else {
            continue;
        };
        // One reconnect per message: a database that is down loses live
        // updates (logged), never blocks the replica.
        for _ in 0..2 {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match connect(url) {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        tracing::warn!("live bus: {e:#}; a live update was not relayed");
                        break;
                    }
                },
            };
            match c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("live bus: NOTIFY failed: {e}; reconnecting");
                    client = None;
                }
            }
        }
    }
}

/// The notification text of `m`, or `None` (logged) when even without an
/// event's details it exceeds PostgreSQL's payload limit.
fn encode(m: &BusMsg, origin: u64) -> Option<String> {
    let text = |m: &BusMsg| {
        serde_json::to_string(&Envelope {
            o: origin,
            k: m.name().to_owned(),
            m: serde_json::to_value(m).unwrap_or_default(),
        })
        .unwrap_or_default()
    };
    let t = text(m);
    if t.len() <= MAX_PAYLOAD {
        return Some(t);
    }
    if let BusMsg::Event(e) = m {
        let mut slim = e.clone();
        slim.details = None;
        let t = text(&BusMsg::Event(slim));
        if t.len() <= MAX_PAYLOAD {
            return Some(t);
        }
    }
    tracing::warn!(
        "live bus: a {} message of {} bytes is too large to relay to other replicas",
        m.name(),
        t.len()
    );
    None
}

/// The message in a notification from another replica; `None` for our own
/// and for anything that does not parse (logged).
fn decode(payload: &str, origin: u64) -> Option<BusMsg> {
    let env: Envelope = match serde_json::from_str(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("live bus: an unreadable notification was ignored: {e}");
            return None;
        }
    };
    if env.o == origin {
        return None;
    }
    let m = match env.k.as_str() {
        "event" => serde_json::from_value(env.m).map(BusMsg::Event),
        "progress" => serde_json::from_value(env.m).map(BusMsg::Progress),
        "machine" => serde_json::from_value(env.m).map(BusMsg::Machine),
        other => {
            tracing::warn!("live bus: a notification of unknown kind {other:?} was ignored");
            return None;
        }
    };
    m.map_err(|e| tracing::warn!("live bus: a {} notification was ignored: {e}", env.k))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::events::Event;
    use crate::domain::bus::ProgressMsg;

    fn event(details: serde_json::Value) -> BusMsg {
        BusMsg::Event(Event {
            id: 7,
            ts: "2026-12-06T20:00:00Z".into(),
            kind: "flash.done".into(),
            mac: Some("52:54:00:12:34:56".into()),
            summary: "flashed".into(),
            details: Some(details),
        })
    }

    #[test]
    fn messages_round_trip_and_our_own_are_dropped() {
        let p = BusMsg::Progress(ProgressMsg {
            mac: "52:54:00:12:34:56".into(),
            cycle: 3,
            bytes_done: 10,
            bytes_total: Some(20),
            phase: "write".into(),
            rate: Some(1.5),
        });
        let text = encode(&p, 1).unwrap();
        assert!(decode(&text, 1).is_none(), "own message delivered back");
        match decode(&text, 2) {
            Some(BusMsg::Progress(g)) => assert_eq!((g.cycle, g.bytes_done), (3, 10)),
            other => panic!("{other:?}"),
        }
        let e = encode(&event(serde_json::json!({"a": 1})), 1).unwrap();
        assert!(matches!(decode(&e, 2), Some(BusMsg::Event(ev)) if ev.details.is_some()));
        let m = encode(&BusMsg::deleted("52:54:00:12:34:56"), 1).unwrap();
        assert!(matches!(decode(&m, 2), Some(BusMsg::Machine(mm)) if mm.deleted));
    }

    #[test]
    fn oversized_events_lose_their_details_and_garbage_is_ignored() {
        let big = event(serde_json::json!({"blob": "x".repeat(20_000)}));
        let text = encode(&big, 1).unwrap();
        assert!(text.len() <= MAX_PAYLOAD);
        assert!(matches!(decode(&text, 2), Some(BusMsg::Event(ev)) if ev.details.is_none()));
        assert!(decode("not json", 2).is_none());
        assert!(decode(r#"{"o":2,"k":"nope","m":{}}"#, 1).is_none());
        assert!(decode(r#"{"o":2,"k":"progress","m":{"mac":1}}"#, 1).is_none());
    }
}
