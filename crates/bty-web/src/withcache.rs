//! bty-web's client of withcache's HTTP API: reading its catalog, and,
//! with the service token (`[withcache] token`, sent as
//! `Authorization: Bearer`), adding and deleting entries in it.
//!
//! Without a token only the open `GET /catalog` is used (cached entries
//! only). With one, the admin `GET /catalog/entries` is read instead, so
//! an entry is known (and assignable) from the moment it is added, with
//! its download state. This module owns no state; [`crate::catalog`]
//! decides what to do with the answers.

use std::time::Duration;

use bty_proto::catalog::CatalogEntry;
use serde::Deserialize;

/// Why a withcache call did not do what was asked. Each message says what
/// was called and, where there is one, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WcError {
    /// No answer: connection refused, DNS, timeout.
    #[error("withcache at {url} is unreachable: {why}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        why: String,
    },
    /// 401/403: the token is missing or not the one withcache has.
    #[error(
        "withcache at {url} refused bty-web (HTTP {status}): set [withcache] token \
         (BTY_WITHCACHE_TOKEN) to the value of withcache's WITHCACHE_API_TOKEN"
    )]
    Refused {
        /// The URL called.
        url: String,
        /// The status.
        status: u16,
    },
    /// withcache understood and said no (400, 404, 409), with its reason.
    #[error("{message}")]
    Rejected {
        /// The status.
        status: u16,
        /// withcache's text (it names the field).
        message: String,
    },
    /// Anything else: a 5xx, a body that is not what was expected.
    #[error("withcache at {url} failed: {message}")]
    Failed {
        /// The URL called.
        url: String,
        /// What happened.
        message: String,
    },
}

/// One entry of withcache's catalog with its cache state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WcEntry {
    /// The entry as withcache holds it; for a cached entry `sha256` and
    /// `size` are the measured ones.
    pub entry: CatalogEntry,
    /// `cached`, `downloading`, `queued` or `absent`.
    pub state: String,
    /// Bytes downloaded so far (the size when cached).
    pub written: Option<u64>,
    /// Expected length, when known.
    pub total: Option<u64>,
    /// Who added it: `bty-web` (with the service token: bty-web may update
    /// it), `operator` or `import`; unknown without the token.
    pub added_by: Option<String>,
}

/// The extra fields of `GET /catalog/entries` rows.
#[derive(Deserialize)]
struct StateFields {
    state: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    written: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    added_by: Option<String>,
}

/// `GET /catalog` answers `{"entries": [...]}` (older ones a bare list).
#[derive(Deserialize)]
#[serde(untagged)]
enum OpenCatalog {
    Wrapped { entries: Vec<serde_json::Value> },
    Bare(Vec<serde_json::Value>),
}

/// A withcache at `base`, with the token when configured.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<bty_auth::ServiceToken>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the withcache at `base` (no trailing slash needed).
    pub fn new(base: &str, token: Option<bty_auth::ServiceToken>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// withcache's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether a service token is configured (writes need one).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut rb = self
            .http
            .request(method, &url)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            rb = rb.header("authorization", t.header_value());
        }
        (url, rb)
    }

    async fn send(
        &self,
        url: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, WcError> {
        let resp = rb.send().await.map_err(|e| WcError::Unreachable {
            url: url.to_string(),
            why: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        // withcache answers `ErrorBody`; an older one answered plain text.
        let text = serde_json::from_str::<bty_proto::ErrorBody>(&text).map_or(text, |b| b.error);
        let message = text.trim().chars().take(500).collect::<String>();
        Err(match status {
            401 | 403 => WcError::Refused {
                url: url.to_string(),
                status,
            },
            400 | 404 | 409 => WcError::Rejected { status, message },
            _ => WcError::Failed {
                url: url.to_string(),
                message: format!("HTTP {status}: {message}"),
            },
        })
    }

    /// Every entry with its state (`GET /catalog/entries`, needs the
    /// token), or, without a token, the cached ones (`GET /catalog`).
    /// Entries that do not parse are counted, not fatal.
    pub async fn entries(&self) -> Result<(Vec<WcEntry>, usize), WcError> {
        if self.token.is_some() {
            self.admin_entries().await
        } else {
            self.open_entries().await
        }
    }

    /// `GET /catalog/entries` with the token.
    pub async fn admin_entries(&self) -> Result<(Vec<WcEntry>, usize), WcError> {
        let (url, rb) = self.request(reqwest::Method::GET, "/catalog/entries");
        let rows: Vec<serde_json::Value> = self
            .send(&url, rb)
            .await?
            .json()
            .await
            .map_err(|e| not_a_catalog(&url, e))?;
        let total = rows.len();
        let entries: Vec<WcEntry> = rows
            .into_iter()
            .filter_map(|v| {
                let st: StateFields = serde_json::from_value(v.clone()).ok()?;
                let mut entry: CatalogEntry = serde_json::from_value(v).ok()?;
                if st.state == "cached" {
                    // The measured digest and length beat the declared ones.
                    entry.sha256 = st.digest.or(entry.sha256);
                    entry.size = st.total.or(entry.size);
                }
                Some(WcEntry {
                    entry,
                    state: st.state,
                    written: st.written,
                    total: st.total,
                    added_by: st.added_by,
                })
            })
            .collect();
        Ok((entries.clone(), total - entries.len()))
    }

    /// `GET /catalog` (open): cached entries with measured sha256 and size.
    pub async fn open_entries(&self) -> Result<(Vec<WcEntry>, usize), WcError> {
        let url = format!("{}/catalog", self.base);
        let rb = self.http.get(&url).header("accept", "application/json");
        let body: OpenCatalog = self
            .send(&url, rb)
            .await?
            .json()
            .await
            .map_err(|e| not_a_catalog(&url, e))?;
        let raw = match body {
            OpenCatalog::Wrapped { entries } | OpenCatalog::Bare(entries) => entries,
        };
        let total = raw.len();
        let entries: Vec<WcEntry> = raw
            .into_iter()
            .filter_map(|v| serde_json::from_value::<CatalogEntry>(v).ok())
            .map(|entry| WcEntry {
                written: entry.size,
                total: entry.size,
                entry,
                state: "cached".into(),
                added_by: None,
            })
            .collect();
        let skipped = total - entries.len();
        Ok((entries, skipped))
    }

    /// `POST /catalog/entries[?download=1]`: add `entry`; with `download`
    /// withcache starts fetching it in the same request.
    pub async fn add(&self, entry: &CatalogEntry, download: bool) -> Result<(), WcError> {
        let path = if download {
            "/catalog/entries?download=1"
        } else {
            "/catalog/entries"
        };
        let (url, rb) = self.request(reqwest::Method::POST, path);
        self.send(&url, rb.json(entry)).await.map(drop)
    }

    /// `PUT /catalog/entries/{name}`: replace an entry (bty-web's own).
    pub async fn put(&self, entry: &CatalogEntry) -> Result<(), WcError> {
        let (url, rb) = self.request(reqwest::Method::PUT, &entry_path(&entry.name));
        self.send(&url, rb.json(entry)).await.map(drop)
    }

    /// `DELETE /catalog/entries/{name}`; `Ok(false)` when withcache has no
    /// such entry.
    pub async fn delete(&self, name: &str) -> Result<bool, WcError> {
        let (url, rb) = self.request(reqwest::Method::DELETE, &entry_path(name));
        match self.send(&url, rb).await {
            Ok(_) => Ok(true),
            Err(WcError::Rejected { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `/catalog/entries/{name}`. Names are validated to `A-Z a-z 0-9 . _ - +`;
/// `+` is the only one a path segment must escape.
fn entry_path(name: &str) -> String {
    format!("/catalog/entries/{}", name.replace('+', "%2B"))
}

fn not_a_catalog(url: &str, e: reqwest::Error) -> WcError {
    WcError::Failed {
        url: url.to_string(),
        message: format!("the answer is not a catalog: {}", error_chain(&e)),
    }
}

/// reqwest's own message is "error sending request"; the cause (connection
/// refused, timed out) is further down the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}
