//! The admin account.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The default admin user name.
pub const DEFAULT_USER: &str = "bty-lab";

/// The well-known password `bty-lab deploy` starts with. While it is in use
/// the services warn at start-up and the UIs show a banner.
pub const DEFAULT_PASSWORD: &str = "bty-lab";

#[derive(Debug)]
enum Secret {
    Open,
    Plain(String),
    Hash(String),
}

/// The one admin account of a service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    user: String,
    secret: Secret,
    default_password: bool,
}

impl Credentials {
    /// The account from configuration. A hash wins over a plain password;
    /// neither (or only empty strings) means open mode.
    ///
    /// Checking whether a hash is the default password costs one argon2
    /// verification here, once, at start-up.
    pub fn new(
        user: impl Into<String>,
        plain: Option<String>,
        hash: Option<String>,
    ) -> Result<Self, AuthError> {
        let user = user.into();
        let user_ok = !user.is_empty()
            && user.len() <= 64
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !user_ok {
            return Err(AuthError::BadUser(user));
        }
        let hash = hash.map(|h| h.trim().to_string()).filter(|h| !h.is_empty());
        // A plain password is used as given: leading or trailing spaces may
        // be part of it, only an entirely empty value means "unset".
        let plain = plain.filter(|p| !p.is_empty());
        let secret = match (hash, plain) {
            (Some(h), _) => {
                PasswordHash::new(&h).map_err(|e| AuthError::BadHash(e.to_string()))?;
                Secret::Hash(h)
            }
            (None, Some(p)) => Secret::Plain(p),
            (None, None) => Secret::Open,
        };
        let mut inner = Inner {
            user,
            secret,
            default_password: false,
        };
        inner.default_password =
            !matches!(inner.secret, Secret::Open) && inner.check_password(DEFAULT_PASSWORD);
        Ok(Credentials {
            inner: Arc::new(inner),
        })
    }

    /// True when no password is configured and every request is let in.
    pub fn is_open(&self) -> bool {
        matches!(self.inner.secret, Secret::Open)
    }

    /// The admin user name.
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// True while the password is the well-known default.
    pub fn uses_default_password(&self) -> bool {
        self.inner.default_password
    }

    /// Check a user name and password. Slow for hashed passwords (argon2):
    /// call it off the async reactor.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if self.is_open() {
            return true;
        }
        // Evaluate the password even for a wrong user so the timing does not
        // tell which of the two was wrong.
        let password_ok = self.inner.check_password(password);
        password_ok && ct_eq(user.as_bytes(), self.inner.user.as_bytes())
    }
}

impl Inner {
    fn check_password(&self, password: &str) -> bool {
        match &self.secret {
            Secret::Open => true,
            Secret::Plain(p) => ct_eq(password.as_bytes(), p.as_bytes()),
            Secret::Hash(h) => PasswordHash::new(h)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false),
        }
    }
}

/// Compare two byte strings in time independent of where they differ.
/// Hashing first makes the lengths equal; the fold avoids an early exit.
/// (Hand-written because it is four lines; a crate would add a dependency
/// for the same loop.)
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// An argon2id PHC string for `password`, with a random salt and the
/// argon2 crate's default (OWASP-recommended) cost.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_plain_and_hash() {
        let open = Credentials::new("bty-lab", None, Some("  ".into())).unwrap();
        assert!(open.is_open() && open.verify("x", "y"));
        assert!(!open.uses_default_password());

        let plain = Credentials::new("bty-lab", Some("bty-lab".into()), None).unwrap();
        assert!(plain.uses_default_password());
        assert!(plain.verify("bty-lab", "bty-lab"));
        assert!(!plain.verify("bty-lab", "bty-lab "));
        assert!(!plain.verify("admin", "bty-lab"));

        let h = hash_password("ünïcødé 🔑").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let hashed = Credentials::new("ops", Some("ignored".into()), Some(h)).unwrap();
        assert!(!hashed.uses_default_password());
        assert!(hashed.verify("ops", "ünïcødé 🔑"));
        assert!(!hashed.verify("ops", "ignored"));

        let default_hash = hash_password(DEFAULT_PASSWORD).unwrap();
        let d = Credentials::new("bty-lab", None, Some(default_hash)).unwrap();
        assert!(d.uses_default_password());
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let e = Credentials::new("bty-lab", None, Some("not-a-hash".into())).unwrap_err();
        assert!(e.to_string().contains("bty-lab passwd"), "{e}");
        assert!(Credentials::new("", Some("x".into()), None).is_err());
        assert!(Credentials::new("a:b", Some("x".into()), None).is_err());
    }
}
