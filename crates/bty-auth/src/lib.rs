//! The operator login shared by bty-web and withcache.
//!
//! Both services have one admin account and the same rules, so they live
//! here once:
//!
//! - [`Credentials`]: the account: open (no password configured, with a
//!   loud warning at start-up), a plain password from the environment, or an
//!   argon2id PHC hash (what `bty-lab deploy` and `bty-lab passwd` write).
//! - [`SessionKey`]: signed, expiring session tokens. There is no server-side
//!   session store; rotating the secret logs every session out, which is what
//!   `bty-lab passwd` does.
//! - [`LoginLimiter`]: logins are rate-limited per client address (an
//!   IPv6 /64), counted before the password is checked; at most
//!   [`MAX_VERIFYING`] argon2 verifications run at once.
//! - [`origin_allowed`]: state-changing requests from a foreign `Origin` are
//!   refused (CSRF defence in depth on top of `SameSite=Strict`).
//! - [`ServiceToken`]: a shared secret one service sends another as
//!   `Authorization: Bearer` (bty-web → withcache's admin API).
//! - [`Auth`]: the bundle a service keeps in its state and asks per request.
//!
//! The crate knows `http` types but no web framework, so each service wires
//! it into its own router.
#![deny(missing_docs)]
// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod credentials;
mod limiter;
mod origin;
mod session;
mod token;

pub use credentials::{ct_eq, hash_password, Credentials, DEFAULT_PASSWORD, DEFAULT_USER};
pub use limiter::{client_key, LoginLimiter};
pub use origin::origin_allowed;
pub use session::{SessionKey, SESSION_TTL};
pub use token::{bearer, ServiceToken, MIN_TOKEN_LEN};

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

/// Why the account could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The configured password hash is not a PHC string argon2 understands.
    #[error("the admin password hash is not a valid argon2 PHC string ({0}); generate one with `bty-lab passwd`")]
    BadHash(String),
    /// The admin user name is empty or has characters that do not survive
    /// HTTP Basic (`:`) or a cookie.
    #[error("the admin user name {0:?} is invalid: use 1-64 letters, digits, '.', '_' or '-'")]
    BadUser(String),
    /// Hashing a new password failed.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
    /// A service token (`WITHCACHE_API_TOKEN`, `[withcache] token`) that
    /// cannot be used.
    #[error("the service token is unusable: {0}")]
    BadToken(String),
    /// Reading or writing the session secret file failed.
    #[error("session secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No password is configured: everyone is the admin.
    Open,
    /// The admin, by HTTP Basic or a session cookie.
    Admin(String),
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, wrong credentials or an expired session.
    #[error("login required: send HTTP Basic credentials or log in")]
    Unauthenticated,
    /// Too many failed attempts from this address.
    #[error("too many failed logins from this address; try again in {}s", .0.as_secs().max(1))]
    RateLimited(Duration),
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong user name or password.
    #[error("invalid user name or password")]
    Invalid,
    /// Too many failed attempts from this address.
    #[error("too many failed logins from this address; try again in {}s", .0.as_secs().max(1))]
    RateLimited(Duration),
}

/// Everything a service needs to authenticate requests.
pub struct Auth {
    credentials: Credentials,
    sessions: SessionKey,
    limiter: LoginLimiter,
    /// Bounds the argon2 verifications running at once (each takes
    /// ~19 MiB and a core for tens of milliseconds).
    verifying: tokio::sync::Semaphore,
    cookie_name: String,
    /// Recently verified HTTP Basic credentials, keyed by a keyed digest of
    /// `user:password`, so API clients that send Basic on every request do
    /// not pay an argon2 verification each time.
    basic_cache: Mutex<Vec<([u8; 32], Instant)>>,
}

/// Password verifications (argon2) that may run at once; more wait.
pub const MAX_VERIFYING: usize = 2;

const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
const BASIC_CACHE_MAX: usize = 64;

impl Auth {
    /// Bundle an account, a session key and a cookie name.
    pub fn new(credentials: Credentials, sessions: SessionKey, cookie_name: &str) -> Arc<Self> {
        Arc::new(Auth {
            credentials,
            sessions,
            limiter: LoginLimiter::default(),
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
            cookie_name: cookie_name.to_string(),
            basic_cache: Mutex::new(Vec::new()),
        })
    }

    /// The account.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Authenticate a request by its session cookie or HTTP Basic header.
    ///
    /// Wrong Basic credentials count as a failed login for `ip`.
    pub async fn authorize(&self, ip: IpAddr, headers: &HeaderMap) -> Result<Principal, Denied> {
        if self.credentials.is_open() {
            return Ok(Principal::Open);
        }
        if let Some(user) = cookie_value(headers, &self.cookie_name)
            .and_then(|token| self.sessions.verify(token))
            .filter(|user| user == self.credentials.user())
        {
            return Ok(Principal::Admin(user));
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return Err(Denied::Unauthenticated);
        };
        let digest = self.sessions.digest(&format!("{user}:{password}"));
        if self.basic_cached(&digest) {
            return Ok(Principal::Admin(user));
        }
        self.limiter.begin(ip).map_err(Denied::RateLimited)?;
        if self.verify(&user, &password).await {
            self.limiter.success(ip);
            self.remember_basic(digest);
            Ok(Principal::Admin(user))
        } else {
            Err(Denied::Unauthenticated)
        }
    }

    /// Check a login form and, on success, return the `Set-Cookie` value of
    /// a new session.
    pub async fn login(
        &self,
        ip: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<String, LoginError> {
        self.limiter.begin(ip).map_err(LoginError::RateLimited)?;
        if self.verify(user, password).await {
            self.limiter.success(ip);
            let token = self.sessions.issue(self.credentials.user());
            Ok(session_cookie(&self.cookie_name, &token, SESSION_TTL))
        } else {
            Err(LoginError::Invalid)
        }
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub fn logout_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie_name
        )
    }

    /// Verify off the reactor, at most [`MAX_VERIFYING`] at once. The
    /// attempt was counted by the limiter before this is called.
    async fn verify(&self, user: &str, password: &str) -> bool {
        // A closed semaphore (never: it is not closed) fails the login.
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        // argon2 takes tens of milliseconds of CPU: keep it off the reactor.
        let creds = self.credentials.clone();
        let (user, password) = (user.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || creds.verify(&user, &password))
            .await
            .unwrap_or(false)
    }

    fn basic_cached(&self, digest: &[u8; 32]) -> bool {
        let cache = self.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .any(|(d, at)| d == digest && at.elapsed() < BASIC_CACHE_TTL)
    }

    fn remember_basic(&self, digest: [u8; 32]) {
        let mut cache = self.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(d, at)| *d != digest && at.elapsed() < BASIC_CACHE_TTL);
        if cache.len() >= BASIC_CACHE_MAX {
            cache.remove(0);
        }
        cache.push((digest, Instant::now()));
    }
}

/// A `Set-Cookie` value for a session token: HttpOnly, SameSite=Strict,
/// whole-site path. Not `Secure`: bty is usually reached over plain HTTP on
/// a lab LAN, and a Secure cookie would never come back there.
pub fn session_cookie(name: &str, token: &str, ttl: Duration) -> String {
    format!(
        "{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        ttl.as_secs()
    )
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// User and password from an `Authorization: Basic` header. The decoded
/// credentials must be UTF-8 (RFC 7617 leaves the charset to the server;
/// browsers and curl send UTF-8).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    fn auth(plain: Option<&str>, hash: Option<String>) -> Arc<Auth> {
        let creds = Credentials::new("bty-lab", plain.map(str::to_string), hash).unwrap();
        Auth::new(creds, SessionKey::from_secret(b"k"), "bty-session")
    }

    #[tokio::test]
    async fn open_mode_lets_everyone_in() {
        let a = auth(None, None);
        assert_eq!(
            a.authorize(ip(), &HeaderMap::new()).await,
            Ok(Principal::Open)
        );
    }

    #[tokio::test]
    async fn basic_with_plain_and_hash() {
        let hash = hash_password("s3crét-пароль").unwrap();
        for a in [auth(Some("s3crét-пароль"), None), auth(None, Some(hash))] {
            assert_eq!(
                a.authorize(ip(), &basic("bty-lab", "s3crét-пароль")).await,
                Ok(Principal::Admin("bty-lab".into()))
            );
            // Cached path answers the same.
            assert!(a
                .authorize(ip(), &basic("bty-lab", "s3crét-пароль"))
                .await
                .is_ok());
            assert_eq!(
                a.authorize(ip(), &basic("bty-lab", "wrong")).await,
                Err(Denied::Unauthenticated)
            );
            assert_eq!(
                a.authorize(ip(), &basic("root", "s3crét-пароль")).await,
                Err(Denied::Unauthenticated)
            );
            assert_eq!(
                a.authorize(ip(), &HeaderMap::new()).await,
                Err(Denied::Unauthenticated)
            );
        }
    }

    #[tokio::test]
    async fn login_issues_a_cookie_that_authorizes() {
        let a = auth(Some("pw"), None);
        assert_eq!(
            a.login(ip(), "bty-lab", "nope").await,
            Err(LoginError::Invalid)
        );
        let set_cookie = a.login(ip(), "bty-lab", "pw").await.unwrap();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
        let token = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {token}")).unwrap(),
        );
        assert_eq!(
            a.authorize(ip(), &h).await,
            Ok(Principal::Admin("bty-lab".into()))
        );
        // Another key (a rotated secret) does not accept the same cookie.
        let other = Auth::new(
            Credentials::new("bty-lab", Some("pw".into()), None).unwrap(),
            SessionKey::from_secret(b"rotated"),
            "bty-session",
        );
        assert_eq!(
            other.authorize(ip(), &h).await,
            Err(Denied::Unauthenticated)
        );
    }

    #[tokio::test]
    async fn failed_logins_are_rate_limited_per_address() {
        let a = auth(Some("pw"), None);
        for _ in 0..limiter::MAX_FAILURES {
            assert_eq!(
                a.login(ip(), "bty-lab", "x").await,
                Err(LoginError::Invalid)
            );
        }
        assert!(matches!(
            a.login(ip(), "bty-lab", "pw").await,
            Err(LoginError::RateLimited(_))
        ));
        assert!(matches!(
            a.authorize(ip(), &basic("bty-lab", "pw")).await,
            Err(Denied::RateLimited(_))
        ));
        // Another address is not affected.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(a.login(other, "bty-lab", "pw").await.is_ok());
    }

    #[test]
    fn cookie_and_basic_parsing() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("x=1; bty-session=abc"));
        assert_eq!(cookie_value(&h, "bty-session"), Some("abc"));
        assert_eq!(cookie_value(&h, "bty"), None);
        let h = basic("u", "p:with:colons");
        assert_eq!(
            basic_credentials(&h),
            Some(("u".into(), "p:with:colons".into()))
        );
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
    }
}
