//! How an instance runs: the options `serve` takes and the size syntax of
//! `--max-bytes` and the UI's size field.

use std::path::PathBuf;

use crate::store::FetchConfig;

/// How a withcache instance runs. Build with [`Options::from_env`] and
/// adjust.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the database, blobs and temp files live.
    pub data_dir: PathBuf,
    /// Disk quota for blobs; `None` = unlimited.
    pub max_bytes: Option<u64>,
    /// Admin account name (`WITHCACHE_ADMIN_USER`, default `bty-lab`).
    pub admin_user: String,
    /// Plain admin password (`WITHCACHE_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
    /// argon2id PHC hash of the admin password
    /// (`WITHCACHE_ADMIN_PASSWORD_HASH`); wins over the plain one.
    pub admin_password_hash: Option<String>,
    /// Session signing secret (`WITHCACHE_SESSION_SECRET`); unset =
    /// `<data_dir>/session-secret`, created on first start.
    pub session_secret: Option<String>,
    /// Download tunables.
    pub fetch: FetchConfig,
    /// Serve cached blobs with `sendfile(2)` on the raw connection
    /// (default on; off forces every request through the generic path).
    pub sendfile: bool,
    /// Service token (`WITHCACHE_API_TOKEN`): a request to the admin API
    /// with `Authorization: Bearer <token>` is let in without a login.
    /// bty-web uses it to add catalog entries. The UI does not take it.
    pub api_token: Option<bty_auth::ServiceToken>,
    /// Connection and request limits (bty-http's defaults; open
    /// connections are dropped at once at shutdown).
    pub http: bty_http::serve::Limits,
    /// Fetch from origins on loopback, link-local (incl. the cloud
    /// metadata address), unspecified, multicast or broadcast addresses
    /// (`WITHCACHE_ALLOW_PRIVATE_ORIGINS=1`, `--allow-private-origins`).
    /// Off by default: a catalog URL or a redirect must not turn the cache
    /// into a reader of this host's own services. RFC 1918, CGNAT, ULA and
    /// public origins are allowed either way (a lab's mirror on 10.x needs
    /// no flag).
    pub allow_private_origins: bool,
    /// Another withcache this one fetches from instead of the origins
    /// (`WITHCACHE_UPSTREAM=http://central:3000`): a rack cache in front
    /// of a central one, so an image crosses the WAN once per site. A blob
    /// this cache does not hold is asked of `upstream/b/{key}/{name}` (the
    /// same key), whether or not it is in this cache's catalog; the
    /// upstream applies its own catalog and miss rule. The origin address
    /// checks do not apply to it: the operator named it.
    pub upstream: Option<String>,
}

impl Options {
    /// Defaults plus the `WITHCACHE_*` environment.
    pub fn from_env(data_dir: PathBuf) -> Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Options {
            data_dir,
            max_bytes: None,
            admin_user: var("WITHCACHE_ADMIN_USER")
                .unwrap_or_else(|| bty_auth::DEFAULT_USER.to_string()),
            admin_password: var("WITHCACHE_ADMIN_PASSWORD"),
            admin_password_hash: var("WITHCACHE_ADMIN_PASSWORD_HASH"),
            session_secret: var("WITHCACHE_SESSION_SECRET"),
            fetch: FetchConfig::default(),
            sendfile: true,
            api_token: var("WITHCACHE_API_TOKEN").map(bty_auth::ServiceToken::new),
            http: bty_http::serve::Limits {
                shutdown_grace: std::time::Duration::ZERO,
                ..bty_http::serve::Limits::default()
            },
            allow_private_origins: var("WITHCACHE_ALLOW_PRIVATE_ORIGINS")
                .is_some_and(|v| is_yes(&v)),
            upstream: var("WITHCACHE_UPSTREAM"),
        }
    }
}

/// `1`, `true`, `yes` or `on` (any case); anything else is no.
fn is_yes(v: &str) -> bool {
    ["1", "true", "yes", "on"]
        .iter()
        .any(|y| v.trim().eq_ignore_ascii_case(y))
}

/// Parse a size with an optional 1024-based suffix: `500M`, `1.5T`, `42`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 500M, 20G or 1.5T"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::{is_yes, parse_size};

    #[test]
    fn yes_values() {
        for y in ["1", "true", "YES", " on "] {
            assert!(is_yes(y), "{y}");
        }
        for n in ["0", "false", "no", "off", "", "2"] {
            assert!(!is_yes(n), "{n}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("42").unwrap(), 42);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size(" 2G ").unwrap(), 2 << 30);
        for bad in ["", "G", "-1G", "0", "1X", "nan"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
