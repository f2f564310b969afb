//! The Secure Boot relay: TFTP names under [`bty_proto::relay::PREFIX`]
//! are fetched from bty-web over HTTP and served as they arrive.
//!
//! Debian's signed GRUB speaks TFTP only, and what it reads (its config,
//! the per-MAC config, the netboot kernel and initrd) depends on bty-web's
//! PXE decision; see the contract in `bty_proto::relay` and
//! `docs/tftp.md`. The body is streamed: a booting machine reads about
//! 26 MB, and many may boot at once, so only the unacknowledged window of
//! each transfer is held in memory (see `transfer::Reader`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bty_proto::relay::{CLIENT_HEADER, KEY_HEADER, PREFIX};
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::packet::ErrorCode;
use crate::path::{self, PathError};
use crate::transfer::{ByteStream, Source};

/// Environment variable naming the relay URL (`--relay`).
pub const RELAY_ENV: &str = "BTY_TFTP_RELAY";

/// Environment variable carrying the relay key (never a CLI value: it
/// would show in `ps`).
pub const RELAY_KEY_ENV: &str = "BTY_TFTP_RELAY_KEY";

/// Default time to open the TCP connection to bty-web.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default time from sending the request to bty-web's response headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Default longest wait for the next piece of the body.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest error message put in a TFTP ERROR packet: a client with
/// 512-byte blocks must still get it in one datagram.
const MAX_ERROR_MESSAGE: usize = 200;

/// Most of an error body read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Where `grub/` names are relayed to, and with which key.
#[derive(Clone)]
pub struct Relay {
    /// bty-web's base URL, `http://host:port` (no path).
    pub url: String,
    /// The key bty-web expects in `x-bty-relay-key`.
    pub key: String,
    /// Time to connect to bty-web.
    pub connect_timeout: Duration,
    /// Time from the request to the response headers.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of the body.
    pub stall_timeout: Duration,
}

// The key stays out of logs and panics.
impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

/// A relay setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The URL is not `http://host:port`.
    #[error("relay URL {url:?} is not usable: {why} (expected http://HOST:PORT, e.g. http://127.0.0.1:8080)")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The key is empty or cannot be sent in an HTTP header.
    #[error("relay key {0}: give bty-web's [pxe] relay_key in {RELAY_KEY_ENV} or a key file")]
    Key(&'static str),
}

impl Relay {
    /// A relay to `url` with `key` and the default timeouts, validated.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Result<Relay, RelayError> {
        let relay = Relay {
            url: url.into(),
            key: key.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        };
        relay.validate()?;
        Ok(relay)
    }

    /// Check the URL (`http://host:port`, no path, query or credentials)
    /// and the key (non-empty, visible ASCII); returns the URL's port.
    pub fn validate(&self) -> Result<u16, RelayError> {
        let port = Relay::url_port(&self.url)?;
        if self.key.is_empty() {
            return Err(RelayError::Key("is empty"));
        }
        if !self.key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RelayError::Key(
                "must be visible ASCII without spaces (it is sent in an HTTP header)",
            ));
        }
        Ok(port)
    }

    /// The port of relay URL `url_text` if it is `http://host:port`.
    fn url_port(url_text: &str) -> Result<u16, RelayError> {
        let bad = |why: &str| RelayError::Url {
            url: url_text.to_string(),
            why: why.to_string(),
        };
        let Some(authority) = url_text.strip_prefix("http://") else {
            return Err(bad("it must start with http://"));
        };
        let url = reqwest::Url::parse(url_text).map_err(|e| bad(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
            return Err(bad("it must not have a path, query or fragment"));
        }
        // The URL parser drops an explicit default port; look at the text.
        match url.port() {
            Some(port) => Ok(port),
            None if authority.trim_end_matches('/').ends_with(":80") => Ok(80),
            None => Err(bad("it has no port")),
        }
    }

    /// The relay of `bty-tftp --relay URL [--relay-key-file PATH]`: none
    /// without a URL; the key from `key_file` if given (surrounding
    /// whitespace trimmed), else from `env_key` (the value of
    /// [`RELAY_KEY_ENV`]). A URL without a key is an error: bty-web would
    /// refuse every relayed request.
    pub fn configure(
        url: Option<&str>,
        key_file: Option<&Path>,
        env_key: Option<String>,
    ) -> anyhow::Result<Option<Relay>> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        // A bad URL is the first thing to fix, key or not.
        Relay::url_port(url)?;
        let key = match key_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("reading the relay key file {}", file.display()))?
                .trim()
                .to_string(),
            None => env_key.map(|k| k.trim().to_string()).unwrap_or_default(),
        };
        anyhow::ensure!(
            !key.is_empty(),
            "--relay {url} needs the key bty-web expects ([pxe] relay_key): set {RELAY_KEY_ENV} or pass --relay-key-file PATH"
        );
        Ok(Some(Relay::new(url, key)?))
    }

    /// [`Relay::configure`] with the key from the environment.
    pub fn from_env(url: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<Option<Relay>> {
        Relay::configure(url, key_file, std::env::var(RELAY_KEY_ENV).ok())
    }
}

/// Whether TFTP name `name` goes to the relay (a leading `/` is ignored,
/// as for every name).
pub fn is_relayed(name: &str) -> bool {
    name.trim_start_matches('/').starts_with(PREFIX)
}

/// Characters escaped in a URL path segment: what is not a `pchar` of
/// RFC 3986 (`:` and `@` stay, so `grub.cfg-52:54:...` reads as GRUB
/// asked for it).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The relay with its HTTP client, shared by all transfers.
pub(crate) struct Fetcher {
    relay: Relay,
    base: String,
    port: u16,
    client: reqwest::Client,
}

/// bty-web's answer, ready to serve.
pub(crate) struct Fetched {
    pub source: Source,
    pub size: u64,
    pub status: u16,
}

/// Why a relayed name is not served: what the client is told, and the
/// HTTP status if bty-web answered.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<u16>,
}

impl Refusal {
    fn new(code: ErrorCode, message: String, status: Option<u16>) -> Refusal {
        Refusal {
            code,
            message: truncate(message, MAX_ERROR_MESSAGE),
            status,
        }
    }
}

impl From<PathError> for Refusal {
    fn from(e: PathError) -> Refusal {
        Refusal::new(e.code(), e.to_string(), None)
    }
}

impl Fetcher {
    pub(crate) fn new(relay: Relay) -> anyhow::Result<Fetcher> {
        let port = relay.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(relay.connect_timeout)
            .user_agent(concat!("bty-tftp/", env!("CARGO_PKG_VERSION")))
            // bty-web is on this host or the boot LAN: an HTTP_PROXY meant
            // for the internet must not take these requests.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client of the relay")?;
        Ok(Fetcher {
            base: relay.url.trim_end_matches('/').to_string(),
            relay,
            port,
            client,
        })
    }

    /// Ask bty-web for `name` on behalf of `client` (the TFTP peer), whose
    /// request arrived at `local`.
    pub(crate) async fn fetch(
        &self,
        name: &str,
        client: IpAddr,
        local: Option<IpAddr>,
    ) -> Result<Fetched, Refusal> {
        // The lexical rules of every name (no `..`, no control characters)
        // also keep a relayed name inside bty-web's `/grub/` routes: the URL
        // parser would resolve `grub/../x` to `/x`.
        let rel = path::relative(name)?;
        let segments: Vec<String> = rel
            .components()
            .map(|c| utf8_percent_encode(&c.as_os_str().to_string_lossy(), SEGMENT).to_string())
            .collect();
        let url = format!("{}/{}", self.base, segments.join("/"));
        let mut request = self
            .client
            .get(&url)
            .header(KEY_HEADER, &self.relay.key)
            .header(CLIENT_HEADER, client.to_string());
        // Host: the address the machine reached us at, which bty-web puts
        // in the URLs it renders; without packet info the URL's own host.
        if let Some(local) = local {
            request = request.header(
                reqwest::header::HOST,
                SocketAddr::new(local, self.port).to_string(),
            );
        }
        let response = match tokio::time::timeout(self.relay.header_timeout, request.send()).await {
            Ok(Ok(response)) => response,
            // reqwest's own message only repeats the URL: give the causes.
            Ok(Err(e)) => {
                let why = match std::error::Error::source(&e) {
                    Some(cause) => error_chain(cause),
                    None => e.to_string(),
                };
                return Err(self.unreachable(name, &why));
            }
            Err(_) => {
                let why = format!("no answer within {:?}", self.relay.header_timeout);
                return Err(self.unreachable(name, &why));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            let Some(size) = response.content_length() else {
                let msg = "bty-web answered 200 without Content-Length (the TFTP size)";
                return Err(Refusal::new(
                    ErrorCode::NotDefined,
                    msg.to_string(),
                    Some(200),
                ));
            };
            let body = response
                .bytes_stream()
                .map(|r| r.map_err(|e| std::io::Error::other(error_chain(&e))));
            return Ok(Fetched {
                source: Source::Stream(ByteStream::new(body, self.relay.stall_timeout)),
                size,
                status: 200,
            });
        }
        let message = error_message(response, self.relay.stall_timeout).await;
        let code = status.as_u16();
        Err(match status {
            reqwest::StatusCode::NOT_FOUND => {
                Refusal::new(ErrorCode::FileNotFound, message, Some(code))
            }
            reqwest::StatusCode::FORBIDDEN | reqwest::StatusCode::UNAUTHORIZED => {
                Refusal::new(ErrorCode::AccessViolation, message, Some(code))
            }
            _ => Refusal::new(
                ErrorCode::NotDefined,
                format!("bty-web answered {status}: {message}"),
                Some(code),
            ),
        })
    }

    fn unreachable(&self, name: &str, why: &str) -> Refusal {
        tracing::warn!(file = %name, relay = %self.relay.url, "bty-web unreachable: {why}");
        Refusal::new(
            ErrorCode::NotDefined,
            format!("bty-web at {} unreachable: {why}", self.relay.url),
            None,
        )
    }
}

/// The error and its causes (reqwest's own message is only the outermost
/// one: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// bty-web's reason for an error answer: `{"error": ...}` if the body is
/// that JSON, else its text, else the status's reason phrase.
async fn error_message(mut response: reqwest::Response, stall: Duration) -> String {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(stall, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let from_json = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string));
    let text = from_json.unwrap_or_else(|| {
        String::from_utf8_lossy(&body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    });
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    } else {
        text
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with control
/// characters (which a TFTP message cannot carry well) replaced.
fn truncate(s: String, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let mut end = max.saturating_sub(3);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", clean.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys_are_validated() {
        for good in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://[::1]:8080",
            "http://bty-web:80",
        ] {
            assert!(Relay::new(good, "k").is_ok(), "{good}");
        }
        assert_eq!(
            Relay::new("http://[::1]:8080", "k")
                .unwrap()
                .validate()
                .unwrap(),
            8080
        );
        for bad in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:8080/bty",
            "http://127.0.0.1:8080/?x=1",
            "http://u:p@127.0.0.1:8080",
            "http://:8080",
            "",
        ] {
            let e = Relay::new(bad, "k").unwrap_err().to_string();
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
        assert!(Relay::new("http://127.0.0.1:8080", "")
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        assert!(Relay::new("http://127.0.0.1:8080", "a b").is_err());
        assert!(
            !format!("{:?}", Relay::new("http://127.0.0.1:1", "secret").unwrap())
                .contains("secret")
        );
    }

    #[test]
    fn configure_takes_the_key_from_the_file_or_the_environment() {
        assert!(Relay::configure(None, None, Some("k".into()))
            .unwrap()
            .is_none());
        let e = Relay::configure(Some("https://127.0.0.1:8080"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://HOST:PORT"), "{e}");
        let e = Relay::configure(Some("http://127.0.0.1:8080"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(RELAY_KEY_ENV) && e.contains("--relay-key-file"),
            "{e}"
        );
        let r = Relay::configure(Some("http://127.0.0.1:8080"), None, Some(" env\n".into()))
            .unwrap()
            .unwrap();
        assert_eq!(r.key, "env");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let r = Relay::configure(
            Some("http://127.0.0.1:8080"),
            Some(&file),
            Some("env".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.key, "from-file");
        let e = Relay::configure(
            Some("http://127.0.0.1:8080"),
            Some(&dir.path().join("none")),
            None,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("relay key file"), "{e:#}");
        std::fs::write(&file, "\n").unwrap();
        assert!(Relay::configure(Some("http://127.0.0.1:8080"), Some(&file), None).is_err());
    }

    #[test]
    fn relayed_names() {
        assert!(is_relayed("grub/grub.cfg"));
        assert!(is_relayed("/grub/grub.cfg-52:54:00:12:34:56"));
        assert!(!is_relayed("grub"));
        assert!(!is_relayed("grubx64.efi"));
        assert!(!is_relayed("GRUB/grub.cfg"));
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("a\nb".into(), 10), "a b");
        let long = "é".repeat(200);
        let cut = truncate(long, MAX_ERROR_MESSAGE);
        assert!(
            cut.len() <= MAX_ERROR_MESSAGE && cut.ends_with("..."),
            "{cut}"
        );
    }
}
