//! Random secrets and password hashes written into envvars.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use base64::Engine as _;
use rand::RngCore;

/// The password deploys before this release gave both UIs; deploy still
/// warns when a DEST has it, and no command accepts it as a new one.
pub const DEFAULT_PASSWORD: &str = "bty-lab";

/// The admin user of both UIs.
pub const ADMIN_USER: &str = "bty-lab";

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

/// The first line of stdin without its line ending (`--password-stdin`),
/// checked with [`check_strength`].
pub fn password_from_stdin() -> Result<String> {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    check_strength(&pw)?;
    Ok(pw)
}

/// Refuse a password that would not guard a UI on the LAN.
pub fn check_strength(pw: &str) -> Result<()> {
    if pw.chars().count() < 8 {
        anyhow::bail!(
            "the password is shorter than 8 characters; choose a longer one (or leave it out \
             and bty-lab makes a random one)"
        );
    }
    if pw == DEFAULT_PASSWORD {
        anyhow::bail!("`{DEFAULT_PASSWORD}` was the well-known default password; choose another");
    }
    Ok(())
}

/// The line that shows a new admin password, the only time it is shown
/// (only its argon2 hash is kept). Tests read the password back from
/// `login: USER / PASSWORD`.
pub fn new_login_line(password: &str, change: &str) -> String {
    format!(
        "  login:       {ADMIN_USER} / {password}\n               \
         (shown only now: only its argon2 hash is kept; {change})"
    )
}

/// The service token kept in `path` (mode 0600), created on first use:
/// `bty-lab serve` gives it to both bty-web and withcache, so a data dir
/// keeps one token across restarts.
pub fn load_or_create_token(path: &Path) -> Result<String> {
    let dir = path.parent().context("the token file has no directory")?;
    let name = path.file_name().context("the token file has no name")?;
    // A link at the token (or its directory) is refused, not followed.
    let d = crate::safefs::Dir::open(dir)?;
    match d.read_text(name)? {
        Some(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        _ => {}
    }
    let token = session_secret();
    d.write_new(name, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// argon2id PHC string of `password`, exactly as the services verify it
/// (`bty_auth::hash_password`).
pub fn hash_password(password: &str) -> Result<String> {
    bty_auth::hash_password(password).map_err(|e| anyhow!("hashing the password: {e}"))
}

/// Check `password` against a PHC string with the services' own rules.
pub fn verify_password(password: &str, phc: &str) -> bool {
    bty_auth::Credentials::new("bty-lab", None, Some(phc.to_string()))
        .map(|c| c.verify("bty-lab", password))
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
    fn token_file_is_created_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("service-token");
        let t = load_or_create_token(&p).unwrap();
        assert_eq!(t.len(), 43);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_token(&p).unwrap(), t);
    }

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("pw", &h));
        assert!(!verify_password("other", &h));
    }

    #[test]
    fn a_link_at_the_token_is_refused_not_read() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("victim");
        std::fs::write(&v, "root-only\n").unwrap();
        let p = d.path().join("service-token");
        std::os::unix::fs::symlink(&v, &p).unwrap();
        let e = load_or_create_token(&p).unwrap_err();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&v).unwrap(), "root-only\n");
    }
}
