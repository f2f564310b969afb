//! The service token: a shared secret one service presents to another as
//! `Authorization: Bearer <token>` (bty-web → withcache's admin API).
//!
//! It is not a login: no user, no session, no rate limit (a generated
//! token has 256 bits; [`ServiceToken::check`] refuses short ones). It is
//! compared in constant time, and its `Debug` never shows it, so it cannot
//! end up in a log through a derived `Debug` of some options struct.

use std::fmt;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::credentials::ct_eq;
use crate::AuthError;

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret presented as `Authorization: Bearer <token>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(String);

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(not shown)")
    }
}

impl ServiceToken {
    /// Wrap a token; [`ServiceToken::check`] says whether it is usable.
    pub fn new(token: impl Into<String>) -> ServiceToken {
        ServiceToken(token.into())
    }

    /// At least [`MIN_TOKEN_LEN`] visible ASCII characters, no spaces: what
    /// survives an env file and an HTTP header unchanged.
    pub fn check(&self) -> Result<(), AuthError> {
        let ok = self.0.len() >= MIN_TOKEN_LEN && self.0.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(())
        } else {
            Err(AuthError::BadToken(format!(
                "it must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces"
            )))
        }
    }

    /// The token itself, for the client that sends it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that carries it.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether the request carries this token as `Authorization: Bearer`.
    /// Constant time in the token's content.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| ct_eq(t.as_bytes(), self.0.as_bytes()))
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(v: &'static str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(AUTHORIZATION, HeaderValue::from_static(v));
        m
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let t = ServiceToken::new("0123456789abcdef-token");
        assert!(t.matches(&h("Bearer 0123456789abcdef-token")));
        assert!(t.matches(&h("bearer 0123456789abcdef-token")));
        assert!(!t.matches(&h("Bearer 0123456789abcdef-toke")));
        assert!(!t.matches(&h("Bearer 0123456789abcdef-tokenX")));
        assert!(!t.matches(&h("Basic 0123456789abcdef-token")));
        assert!(!t.matches(&h("Bearer ")));
        assert!(!t.matches(&HeaderMap::new()));
    }

    #[test]
    fn short_or_odd_tokens_are_refused_and_debug_hides_it() {
        assert!(ServiceToken::new("short").check().is_err());
        assert!(ServiceToken::new("with space 0123456789").check().is_err());
        assert!(ServiceToken::new("é0123456789abcdefgh").check().is_err());
        let t = ServiceToken::new("0123456789abcdef");
        t.check().unwrap();
        assert!(!format!("{t:?}").contains("0123"));
        assert_eq!(t.header_value(), "Bearer 0123456789abcdef");
    }
}
