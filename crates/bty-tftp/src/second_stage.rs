//! Break the stock-iPXE TFTP loop without DHCP user-class rules.
//!
//! The firmware's PXE stack loads `undionly.kpxe` (or `ipxe.efi`) by TFTP.
//! That stock iPXE then does DHCP again, gets the same boot file name, and
//! loads itself again, forever. iPXE's TFTP requests look like any PXE
//! ROM's, so the server cannot tell them apart by the packet. It can tell
//! them apart by time: the second request for the binary from the same IP
//! shortly after a *complete* transfer of it is iPXE's. For that request
//! the server answers, under the same name, a tiny script:
//!
//! ```text
//! #!ipxe
//! chain http://${next-server}:8080/pxe-bootstrap.ipxe || exit
//! ```
//!
//! iPXE probes every image it loads and runs anything that starts with
//! `#!ipxe` as a script, whatever the file name, so it chains to bty-web.
//! The record is consumed when the script is served, so binary and script
//! strictly alternate per client: a machine that reboots quickly still gets
//! the binary from its firmware. Aborted transfers (the tsize probe many PXE
//! ROMs do first) do not count. Only names given as rules get this treatment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chain target used when a rule gives no URL. iPXE expands
/// `${next-server}` to the DHCP `siaddr`, the host that served the binary,
/// which is where bty-web runs next to bty-tftp.
pub const DEFAULT_CHAIN_URL: &str = "http://${next-server}:8080/pxe-bootstrap.ipxe";

/// Most clients remembered at once; a flood of requests from many
/// addresses cannot grow the map without bound.
const MAX_CLIENTS: usize = 65536;

/// One rule: `NAME` or `NAME=URL` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Boot file name as clients request it (leading `/` ignored).
    pub file: String,
    /// URL the script chains to.
    pub chain_url: String,
}

/// A rule that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid --second-stage rule {rule:?}: {problem}")]
pub struct RuleError {
    rule: String,
    problem: &'static str,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Rule, RuleError> {
        let err = |problem| RuleError {
            rule: s.to_string(),
            problem,
        };
        let (file, url) = match s.split_once('=') {
            Some((f, u)) => (f, u),
            None => (s, DEFAULT_CHAIN_URL),
        };
        let file = file.trim_start_matches('/');
        if file.is_empty() || crate::path::relative(file).is_err() {
            return Err(err("the file name must be a plain name inside the root"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err("the chain URL must start with http:// or https://"));
        }
        // The URL goes into an iPXE script line: no spaces, quotes or
        // control characters. `${...}` settings are allowed on purpose.
        if !url
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'`\\".contains(c))
        {
            return Err(err(
                "the chain URL may not contain spaces, quotes or control characters",
            ));
        }
        Ok(Rule {
            file: file.to_string(),
            chain_url: url.to_string(),
        })
    }
}

/// The script served instead of the binary.
pub fn script(chain_url: &str) -> String {
    format!(
        "#!ipxe\n\
         echo bty-tftp: iPXE is running, chaining to {chain_url}\n\
         chain {chain_url} || exit\n"
    )
}

/// Rules plus the per-client record of completed binary transfers.
pub(crate) struct SecondStage {
    scripts: HashMap<String, Arc<[u8]>>,
    window: Duration,
    served: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl SecondStage {
    pub(crate) fn new(rules: Vec<Rule>, window: Duration) -> anyhow::Result<SecondStage> {
        let scripts = rules
            .into_iter()
            .map(|r| (r.file, Arc::from(script(&r.chain_url).into_bytes())))
            .collect();
        Ok(SecondStage {
            scripts,
            window,
            served: Mutex::new(HashMap::new()),
        })
    }

    /// The script to serve instead of `filename` to `client`, if the
    /// client completed a transfer of the binary within the window.
    pub(crate) fn script_for(&self, client: IpAddr, filename: &str) -> Option<Arc<[u8]>> {
        let name = filename.trim_start_matches('/');
        let script = self.scripts.get(name)?;
        let served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let at = served.get(&(client, name.to_string()))?;
        (at.elapsed() <= self.window).then(|| script.clone())
    }

    /// Note a completed transfer: the binary starts the window, the script
    /// ends it.
    pub(crate) fn record(&self, client: IpAddr, filename: &str, was_script: bool) {
        let name = filename.trim_start_matches('/');
        if !self.scripts.contains_key(name) {
            return;
        }
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let key = (client, name.to_string());
        if was_script {
            served.remove(&key);
            return;
        }
        let window = self.window;
        served.retain(|_, at| at.elapsed() <= window);
        if served.len() < MAX_CLIENTS {
            served.insert(key, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        let r: Rule = "undionly.kpxe".parse().unwrap();
        assert_eq!(r.chain_url, DEFAULT_CHAIN_URL);
        let r: Rule = "/ipxe.efi=http://192.0.2.10:8080/pxe-bootstrap.ipxe"
            .parse()
            .unwrap();
        assert_eq!(r.file, "ipxe.efi");
        for bad in [
            "",
            "../x",
            "x=ftp://h/",
            "x=http://h/a b",
            "x=http://h/\"",
            "x=http://h/\nreboot",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_then_script_then_binary() {
        let s = SecondStage::new(
            vec!["undionly.kpxe".parse().unwrap()],
            Duration::from_secs(60),
        )
        .unwrap();
        let a: IpAddr = "192.0.2.20".parse().unwrap();
        let b: IpAddr = "192.0.2.21".parse().unwrap();
        assert!(s.script_for(a, "undionly.kpxe").is_none());
        s.record(a, "undionly.kpxe", false);
        let got = s.script_for(a, "/undionly.kpxe").unwrap();
        assert!(got.starts_with(b"#!ipxe\n"));
        assert!(s.script_for(b, "undionly.kpxe").is_none());
        assert!(s.script_for(a, "ipxe.efi").is_none());
        s.record(a, "undionly.kpxe", true);
        assert!(s.script_for(a, "undionly.kpxe").is_none());
    }

    #[test]
    fn window_expires() {
        let s = SecondStage::new(vec!["x".parse().unwrap()], Duration::ZERO).unwrap();
        let a: IpAddr = "::1".parse().unwrap();
        s.record(a, "x", false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.script_for(a, "x").is_none());
    }
}
