//! Hardware (MAC) addresses as they arrive from firmware, iPXE and operators.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet hardware address.
///
/// Parsing accepts the spellings seen in the field: `aa:bb:cc:dd:ee:ff`,
/// iPXE's `${mac:hexhyp}` form `aa-bb-cc-dd-ee-ff`, Cisco's `aabb.ccdd.eeff`
/// and bare `aabbccddeeff`, in any case. It always displays in the
/// canonical lower-case colon form, which is also the database key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex octets such as aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff")]
pub struct MacError {
    /// The rejected input, truncated to 64 characters.
    pub input: String,
}

impl Mac {
    /// The address from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The `aa-bb-cc-dd-ee-ff` spelling iPXE produces with `${mac:hexhyp}`,
    /// which is also safe in file names and URLs.
    pub fn hyphenated(&self) -> String {
        self.join('-')
    }

    fn join(&self, sep: char) -> String {
        let mut s = String::with_capacity(17);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(sep);
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || MacError {
            input: input.chars().take(64).collect(),
        };
        let s = input.trim();
        let b = s.as_bytes();
        let hex: String = if s.len() == 17 {
            let sep = b.get(2).copied().ok_or_else(err)?;
            if sep != b':' && sep != b'-' {
                return Err(err());
            }
            // Every third character must be the same separator.
            for (i, c) in s.bytes().enumerate() {
                if i % 3 == 2 && c != sep {
                    return Err(err());
                }
            }
            s.split(sep as char).collect()
        } else if s.len() == 14 && b.get(4) == Some(&b'.') && b.get(9) == Some(&b'.') {
            s.split('.').collect()
        } else if s.len() == 12 {
            s.to_string()
        } else {
            return Err(err());
        };
        if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut octets = [0u8; 6];
        // 12 hex digits (checked above): six pairs, one per octet.
        for (o, pair) in octets.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| err())?;
            *o = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(Mac(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(':'))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_common_spelling() {
        let want = Mac::new([0xaa, 0xbb, 0xcc, 0x01, 0x02, 0x03]);
        for s in [
            "aa:bb:cc:01:02:03",
            "AA:BB:CC:01:02:03",
            "aa-bb-cc-01-02-03",
            "aabb.cc01.0203",
            "aabbcc010203",
            " aa:bb:cc:01:02:03\n",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap(), want, "{s:?}");
        }
        assert_eq!(want.to_string(), "aa:bb:cc:01:02:03");
        assert_eq!(want.hyphenated(), "aa-bb-cc-01-02-03");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "aa:bb:cc:01:02",
            "aa:bb:cc:01:02:03:04",
            "aa:bb-cc:01:02:03",
            "gg:bb:cc:01:02:03",
            "aa:bb:cc:01:02:0",
            "aabbcc01020",
            "aa::bb:cc:01:02:03",
            "+a:bb:cc:01:02:03",
            "net0",
            "aa:bb:cc:01:02:03\n#!ipxe",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn serde_round_trip_is_canonical() {
        let m: Mac = serde_json::from_str("\"AA-BB-CC-01-02-03\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"aa:bb:cc:01:02:03\"");
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
