//! A tiny blocking HTTP/1.0 GET client for health checks and login probes.
//!
//! Hand-written on purpose: it runs as the container HEALTHCHECK inside a
//! FROM scratch image every few seconds, talks only to loopback plain HTTP,
//! and must start fast with no resolver or TLS setup. reqwest would pull a
//! runtime and DNS into a process that lives for one request.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;

/// Split `http://host:port/path` into (host:port, path).
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((hostport, path.to_string()))
}

/// GET `url`; returns (status, body).
pub fn get(url: &str, basic: Option<(&str, &str)>, timeout: Duration) -> Result<(u16, String)> {
    let (hostport, path) = split_url(url)?;
    let addr: SocketAddr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request(&hostport, &path, basic).as_bytes())?;
    let mut buf = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .context("reading the response")?;
    parse_response(url, &String::from_utf8_lossy(&buf))
}

/// The HTTP/1.0 GET request, with Basic auth when given.
fn request(hostport: &str, path: &str, basic: Option<(&str, &str)>) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: bty-lab\r\nConnection: close\r\n"
    );
    if let Some((u, p)) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// (status, body) of a response to `url`.
fn parse_response(url: &str, text: &str) -> Result<(u16, String)> {
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok());
    let Some(code) = code else {
        bail!("not an HTTP response from {url}: {status_line:?}");
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/healthz").unwrap(),
            ("127.0.0.1:8080".into(), "/healthz".into())
        );
        assert_eq!(
            split_url("http://[::1]:3000").unwrap(),
            ("[::1]:3000".into(), "/".into())
        );
        assert_eq!(split_url("http://h").unwrap(), ("h:80".into(), "/".into()));
        assert!(split_url("https://h/").is_err());
    }
}
