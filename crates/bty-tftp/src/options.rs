//! Option negotiation for a read request (RFC 2347, 2348, 2349, 7440).
//!
//! Pure: takes the client's options and the server's limits, returns the
//! transfer parameters and the OACK to send. Unknown or invalid options are
//! left out of the OACK, which RFC 2347 allows; the client then falls back
//! to the default for that option.

use std::time::Duration;

/// Default block size of RFC 1350.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Largest blksize RFC 2348 allows.
pub const RFC_MAX_BLKSIZE: u16 = 65464;
/// Smallest blksize RFC 2348 allows.
pub const RFC_MIN_BLKSIZE: u16 = 8;
/// Default largest `timeout` option granted. RFC 2349 allows up to 255 s;
/// a client that asks for that and never ACKs would hold a session for
/// minutes (255 s per retransmit). See `docs/tftp.md`.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side limits applied to what a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest blksize granted.
    pub max_blksize: u16,
    /// Largest windowsize granted.
    pub max_windowsize: u16,
    /// Retransmit timeout used when the client does not ask for one.
    pub default_timeout: Duration,
    /// Largest `timeout` option granted; a larger one is left out of the
    /// OACK and the transfer runs with `default_timeout`.
    pub max_timeout: Duration,
}

/// What a transfer runs with after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// Retransmit timeout.
    pub timeout: Duration,
    /// Options to acknowledge, in the order the client sent them; empty
    /// means no OACK (the transfer starts with DATA 1).
    pub oack: Vec<(&'static str, String)>,
}

/// Negotiate the options of a read request for a file of `file_size` bytes.
pub fn negotiate(options: &[(&str, &str)], file_size: u64, limits: &Limits) -> Negotiated {
    let mut out = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        oack: Vec::new(),
    };
    for (name, value) in options {
        // A repeated option is answered once, with its first value.
        let Some(key) = known(name) else { continue };
        if out.oack.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        if let Some(answer) = out.grant(key, n, file_size, limits) {
            out.oack.push((key, answer));
        }
    }
    out
}

impl Negotiated {
    /// Apply option `key` asked with `n`; the value to acknowledge, or
    /// `None` to leave the option out (the client keeps the default).
    fn grant(&mut self, key: &str, n: u64, file_size: u64, limits: &Limits) -> Option<String> {
        match key {
            "blksize" if n >= u64::from(RFC_MIN_BLKSIZE) => {
                let granted = n
                    .min(u64::from(RFC_MAX_BLKSIZE))
                    .min(u64::from(limits.max_blksize)) as u16;
                self.blksize = granted;
                Some(granted.to_string())
            }
            // RFC 2349 wants the OACK to echo the client's value, so a
            // larger one is not clamped but left out (the default applies).
            "timeout" if (1..=255).contains(&n) && Duration::from_secs(n) <= limits.max_timeout => {
                self.timeout = Duration::from_secs(n);
                Some(n.to_string())
            }
            // RFC 2349: on a read request the client sends 0 and the server
            // answers with the size.
            "tsize" => Some(file_size.to_string()),
            "windowsize" if n >= 1 => {
                let granted = n.min(u64::from(limits.max_windowsize)).max(1) as u16;
                self.windowsize = granted;
                Some(granted.to_string())
            }
            _ => None,
        }
    }
}

fn known(name: &str) -> Option<&'static str> {
    ["blksize", "timeout", "tsize", "windowsize"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
        default_timeout: Duration::from_secs(1),
        max_timeout: Duration::from_secs(5),
    };

    #[test]
    fn no_options_means_no_oack() {
        let n = negotiate(&[], 10, &LIMITS);
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert!(n.oack.is_empty());
    }

    #[test]
    fn options_are_capped_and_echoed_in_order() {
        let n = negotiate(
            &[
                ("WindowSize", "1000"),
                ("blksize", "65464"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("multicast", ""),
            ],
            123,
            &LIMITS,
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 64);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            vec![
                ("windowsize", "64".to_string()),
                ("blksize", "1468".to_string()),
                ("tsize", "123".to_string()),
                ("timeout", "3".to_string()),
            ]
        );
    }

    #[test]
    fn invalid_values_are_ignored() {
        let n = negotiate(
            &[
                ("blksize", "7"),
                ("blksize", "x"),
                ("timeout", "0"),
                ("timeout", "256"),
                ("windowsize", "0"),
                ("blksize", "99999999999999999999999"),
            ],
            1,
            &LIMITS,
        );
        assert_eq!(n, negotiate(&[], 1, &LIMITS));
    }

    #[test]
    fn small_blksize_is_granted_as_asked() {
        let n = negotiate(&[("blksize", "8"), ("blksize", "1000")], 1, &LIMITS);
        assert_eq!(n.blksize, 8);
        assert_eq!(n.oack, vec![("blksize", "8".to_string())]);
    }

    #[test]
    fn timeout_above_the_cap_is_left_out_and_the_default_applies() {
        for asked in ["6", "255"] {
            let n = negotiate(&[("timeout", asked), ("tsize", "0")], 7, &LIMITS);
            assert_eq!(n.timeout, Duration::from_secs(1), "{asked}");
            assert_eq!(n.oack, vec![("tsize", "7".to_string())], "{asked}");
        }
        let n = negotiate(&[("timeout", "5")], 7, &LIMITS);
        assert_eq!(n.timeout, Duration::from_secs(5));
        assert_eq!(n.oack, vec![("timeout", "5".to_string())]);
    }
}
