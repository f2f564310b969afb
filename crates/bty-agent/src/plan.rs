//! Talking to bty-web before a flash: post the inventory, fetch the plan.
//! Both retry with backoff; nothing here ever waits for a keyboard.

use std::time::Duration;

use bty_proto::inventory::Inventory;
use bty_proto::plan::Plan;

use crate::console::Console;
use crate::net::{backoff, describe};

/// The server's per-machine endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `http://host:port`, no trailing slash.
    pub server: String,
    /// The MAC as given (bty-web normalises it).
    pub mac: String,
}

impl Endpoints {
    /// `<server>/pxe/<mac>/<what>`.
    pub fn url(&self, what: &str) -> String {
        format!("{}/pxe/{}/{}", self.server, self.mac, what)
    }
}

/// Post the inventory; a few tries, then give up (the flash does not
/// depend on it). Returns whether the server took it.
pub fn post_inventory(
    http: &ureq::Agent,
    ep: &Endpoints,
    inv: &Inventory,
    console: &Console,
) -> bool {
    let url = ep.url("inventory");
    let body = match serde_json::to_value(inv) {
        Ok(body) => body,
        Err(e) => {
            console.line(format!("inventory not sent: {e}"));
            return false;
        }
    };
    for attempt in 0..4 {
        match http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .send_json(&body)
        {
            Ok(_) => return true,
            // The server will never take it (unknown MAC, bad body): stop.
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                console.line(format!("inventory refused by server: HTTP {code}"));
                return false;
            }
            Err(e) => {
                console.line(format!(
                    "inventory post failed ({}); retrying",
                    describe(&e)
                ));
                std::thread::sleep(backoff(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(8),
                ));
            }
        }
    }
    false
}

/// GET the plan, retrying with capped exponential backoff until the server
/// answers with a plan it means (2xx and JSON that parses).
pub fn fetch(http: &ureq::Agent, ep: &Endpoints, console: &Console, cap: Duration) -> Plan {
    let url = ep.url("plan");
    let mut attempt = 0;
    loop {
        let result = http
            .get(&url)
            .set("Accept", "application/json")
            .timeout(Duration::from_secs(15))
            .call()
            .map_err(|e| describe(&e))
            .and_then(|r| {
                r.into_json::<Plan>()
                    .map_err(|e| format!("plan is not valid JSON: {e}"))
            });
        match result {
            Ok(plan) => return plan,
            Err(reason) => {
                let wait = backoff(attempt, Duration::from_secs(1), cap);
                console.line(format!(
                    "getting plan from {url}: {reason}; retrying in {}s",
                    wait.as_secs()
                ));
                std::thread::sleep(wait);
                attempt += 1;
            }
        }
    }
}
