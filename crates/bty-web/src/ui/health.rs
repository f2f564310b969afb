//! The health lines of the dashboard and the Images page: a catalog
//! source's state and a probe of the TFTP sidecar.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::SourceStatus;

/// A health line of the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// What.
    pub name: String,
    /// `ok`, `warn`, `bad` or `off`.
    pub level: &'static str,
    /// Details.
    pub text: String,
    /// Where to look.
    pub link: Option<String>,
}

/// A catalog source's health line.
pub fn source_health(name: &str, s: &SourceStatus, link: Option<String>) -> Health {
    let (level, text) = match s {
        SourceStatus::Off => ("off", "not configured".to_string()),
        SourceStatus::Pending => ("warn", "not read yet".to_string()),
        SourceStatus::Ok { entries, skipped, .. } => (
            if *skipped > 0 { "warn" } else { "ok" },
            if *skipped > 0 {
                format!("{entries} images ({skipped} invalid entries skipped)")
            } else {
                format!("{entries} images")
            },
        ),
        SourceStatus::Unreachable { error, entries, since } => (
            "bad",
            format!("unreachable since {since}: {error}; still serving {entries} images from the last good read"),
        ),
    };
    Health {
        name: name.into(),
        level,
        text,
        link,
    }
}

/// Where the TFTP sidecar is probed: `BTY_TFTP_PROBE` (`host:port`), else
/// `127.0.0.1:69` (the sidecar runs on the bty host).
fn tftp_target() -> String {
    std::env::var("BTY_TFTP_PROBE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:69".into())
}

/// One TFTP read request for `ipxe.efi`: DATA means serving, ERROR means
/// up but missing the file, silence means down. Cached for 30 s; a page
/// waits at most 300 ms for a fresh probe (a silent target takes 0.8 s to
/// time out, which then finishes in the background and fills the cache).
pub async fn tftp_health() -> Health {
    static CACHE: Mutex<Option<(Instant, Health)>> = Mutex::new(None);
    let cached = CACHE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((at, h)) = &cached {
        if at.elapsed() < Duration::from_secs(30) {
            return h.clone();
        }
    }
    let probe = tokio::spawn(async {
        let h = tftp_line(tftp_target()).await;
        *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), h.clone()));
        h
    });
    match tokio::time::timeout(Duration::from_millis(300), probe).await {
        Ok(Ok(h)) => h,
        _ => cached.map(|(_, h)| h).unwrap_or_else(|| {
            let text = format!(
                "{}: no answer yet, still checking (reload in a second)",
                tftp_target()
            );
            tftp_health_line("warn", text)
        }),
    }
}

/// Probe `target` now.
async fn tftp_line(target: String) -> Health {
    let (level, text) = match probe_tftp(&target).await {
        Ok(Some(msg)) => ("warn", format!("{target} answers but: {msg}")),
        Ok(None) => ("ok", format!("{target} serves ipxe.efi")),
        Err(e) => ("bad", format!("{target}: {e}")),
    };
    tftp_health_line(level, text)
}

fn tftp_health_line(level: &'static str, text: String) -> Health {
    Health {
        name: "TFTP sidecar".into(),
        level,
        text,
        link: None,
    }
}

async fn probe_tftp(target: &str) -> Result<Option<String>, String> {
    let addr: SocketAddr = target
        .to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or("not an address")?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let mut rrq = vec![0u8, 1];
    rrq.extend_from_slice(b"ipxe.efi\0octet\0");
    sock.send_to(&rrq, addr).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 600];
    let (n, from) = tokio::time::timeout(Duration::from_millis(800), sock.recv_from(&mut buf))
        .await
        .map_err(|_| "no answer within 0.8 s".to_string())?
        .map_err(|e| e.to_string())?;
    match buf.get(..n).unwrap_or_default() {
        [_, 3, _, _, ..] => {
            // Stop the transfer politely so the server does not retransmit.
            let _ = sock
                .send_to(&[0, 5, 0, 0, b'p', b'r', b'o', b'b', b'e', 0], from)
                .await;
            Ok(None)
        }
        [_, 5, _, _, message @ ..] => Ok(Some(format!(
            "error {}",
            String::from_utf8_lossy(message).trim_end_matches('\0')
        ))),
        [_, 6, _, _, ..] => {
            let _ = sock
                .send_to(&[0, 5, 0, 0, b'p', b'r', b'o', b'b', b'e', 0], from)
                .await;
            Ok(None)
        }
        _ => Ok(Some("an answer that is not TFTP".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TFTP responder written here: answers the first request with
    /// `reply` (or stays silent).
    async fn responder(reply: Option<Vec<u8>>) -> String {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 600];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"\0\x01ipxe.efi\0octet\0");
            if let Some(r) = reply {
                sock.send_to(&r, from).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn tftp_probe_reads_the_answer() {
        let data = responder(Some(b"\0\x03\0\x01MZ...".to_vec())).await;
        assert_eq!(probe_tftp(&data).await, Ok(None));
        let missing = responder(Some(b"\0\x05\0\x01File not found\0".to_vec())).await;
        assert_eq!(
            probe_tftp(&missing).await,
            Ok(Some("error File not found".into()))
        );
        let silent = responder(None).await;
        assert_eq!(
            probe_tftp(&silent).await,
            Err("no answer within 0.8 s".into())
        );
        assert!(probe_tftp("not an address").await.is_err());
    }
}
