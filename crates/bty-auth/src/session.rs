//! Signed, expiring session tokens.
//!
//! A token is `v1.<user, base64url>.<expiry, unix seconds>.<HMAC-SHA256,
//! base64url>`. Nothing is stored server-side: a token is valid while its
//! signature checks and it has not expired. Rotating the secret therefore
//! revokes every session at once.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::AuthError;

type HmacSha256 = Hmac<Sha256>;

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from configured secret bytes (an env var or a file's content).
    pub fn from_secret(secret: &[u8]) -> Self {
        SessionKey {
            key: secret.to_vec(),
        }
    }

    /// The secret stored at `path`, or a new random one written there with
    /// mode 0600 (via a temporary file and a rename, so a crash never leaves
    /// an empty secret behind).
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        let err = |source| AuthError::SecretFile {
            path: path.to_path_buf(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) if !bytes.trim_ascii().is_empty() => {
                return Ok(Self::from_secret(bytes.trim_ascii()))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = hex::encode(raw);
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        f.write_all(secret.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, path).map_err(err)?;
        Ok(Self::from_secret(secret.as_bytes()))
    }

    /// A token for `user`, valid for [`SESSION_TTL`].
    pub fn issue(&self, user: &str) -> String {
        let expiry = now_secs() + SESSION_TTL.as_secs();
        self.issue_until(user, expiry)
    }

    fn issue_until(&self, user: &str, expiry: u64) -> String {
        let payload = format!("v1.{}.{expiry}", URL_SAFE_NO_PAD.encode(user));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The user a token was issued to, if its signature checks and it has
    /// not expired.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (payload, sig) = token.rsplit_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(payload).verify_slice(&sig).ok()?;
        let mut parts = payload.split('.');
        if parts.next()? != "v1" {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let expiry: u64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || expiry <= now_secs() {
            return None;
        }
        Some(user)
    }

    /// A keyed digest, for caching secrets without keeping them.
    pub(crate) fn digest(&self, data: &str) -> [u8; 32] {
        let mut m = self.mac("digest:");
        m.update(data.as_bytes());
        m.finalize().into_bytes().into()
    }

    #[allow(
        clippy::expect_used,
        reason = "HMAC takes a key of any length: new_from_slice never fails for Hmac<Sha256>"
    )]
    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        m
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_tampering_fails() {
        let k = SessionKey::from_secret(b"secret");
        let t = k.issue("bty-lab");
        assert_eq!(k.verify(&t).as_deref(), Some("bty-lab"));
        assert_eq!(SessionKey::from_secret(b"other").verify(&t), None);
        let forged = t.replacen(
            &URL_SAFE_NO_PAD.encode("bty-lab"),
            &URL_SAFE_NO_PAD.encode("root"),
            1,
        );
        assert_eq!(k.verify(&forged), None);
        assert_eq!(k.verify("v1.x.y"), None);
        assert_eq!(k.verify(""), None);
        let expired = k.issue_until("bty-lab", now_secs() - 1);
        assert_eq!(k.verify(&expired), None);
    }

    #[test]
    fn secret_file_is_created_once_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("session-secret");
        let a = SessionKey::load_or_create(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SessionKey::load_or_create(&p).unwrap();
        let t = a.issue("u");
        assert_eq!(b.verify(&t).as_deref(), Some("u"));
        // An empty file is replaced, never used as a key.
        fs::write(&p, "").unwrap();
        let c = SessionKey::load_or_create(&p).unwrap();
        assert_eq!(c.verify(&t), None);
        assert!(fs::read(&p).unwrap().len() >= 32);
    }
}
