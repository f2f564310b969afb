//! Deterministic test bytes and their digest.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes, the same for the same `seed` on every run
/// (xorshift64): incompressible enough that a misplaced chunk shows.
pub fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// sha256 of `b`, lower-case hex (the form every bty API uses).
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_is_deterministic_and_seeded() {
        assert_eq!(super::data(1000, 1), super::data(1000, 1));
        assert_ne!(super::data(1000, 1), super::data(1000, 2));
        assert_eq!(super::data(13, 3).len(), 13);
        assert_eq!(
            super::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
