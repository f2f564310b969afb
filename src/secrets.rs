//! Random secrets and password hashes written into envvars.

use anyhow::{anyhow, Result};
use base64::Engine as _;
use rand::RngCore;

/// The first password of both UIs; deploy warns to change it.
pub const DEFAULT_PASSWORD: &str = "bty-lab";

/// 32 random bytes from the OS, base64url without padding (43 chars).
pub fn session_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A password for `passwd --generate`: 18 random bytes, base64url (24 chars).
pub fn generated_password() -> String {
    let mut b = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// argon2id PHC string of `password`.
///
/// The services verify with `bty-auth`; until that crate is a dependency here
/// this calls argon2 with its defaults (argon2id v19), which is the same PHC
/// format `bty_auth::hash_password` produces.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow!("hashing the password: {e}"))
}

/// Check `password` against a PHC string (used by tests and `passwd`).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_43_url_safe_chars_and_differ() {
        let a = session_secret();
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, session_secret());
    }

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("pw", &h));
        assert!(!verify_password("other", &h));
    }
}
