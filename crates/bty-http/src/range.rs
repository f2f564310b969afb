//! `Range: bytes=…` requests against a representation of known length
//! (RFC 9110 §14): bty-web's `/boot/*` files and withcache's blobs.

/// What a `Range` header asks of a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable single range: send everything. Also for several ranges
    /// and malformed headers, which RFC 9110 lets a server ignore.
    Full,
    /// The bytes `start..=end` (inclusive, within the length).
    Part(u64, u64),
    /// A well-formed range that lies outside the representation: 416.
    Unsatisfiable,
}

impl ByteRange {
    /// The `Content-Range` value to send with this answer, if any:
    /// `bytes a-b/len` for a part, `bytes */len` for a 416.
    pub fn content_range(&self, len: u64) -> Option<String> {
        match self {
            ByteRange::Full => None,
            ByteRange::Part(a, b) => Some(format!("bytes {a}-{b}/{len}")),
            ByteRange::Unsatisfiable => Some(format!("bytes */{len}")),
        }
    }
}

/// Interpret a `Range` header value for `len` bytes.
pub fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // A suffix: the last N bytes.
        return match number(b) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part(len.saturating_sub(n), len - 1),
        };
    }
    let Some(start) = number(a) else {
        return ByteRange::Full;
    };
    let end = match (b.is_empty(), number(b)) {
        (true, _) => None,
        (false, Some(e)) if e >= start => Some(e),
        _ => return ByteRange::Full,
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// Digits only (no sign, no spaces inside), as the grammar says.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::ByteRange::{Full, Part, Unsatisfiable};
    use super::*;

    fn r(v: &str, len: u64) -> ByteRange {
        parse_range(Some(v), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-0", 10), Part(0, 0));
        assert_eq!(r("bytes=0-3", 10), Part(0, 3));
        assert_eq!(r("bytes=4-", 10), Part(4, 9));
        assert_eq!(r("bytes=9-9", 10), Part(9, 9));
        assert_eq!(r(" bytes= 2 - 5 ", 10), Part(2, 5));
    }

    #[test]
    fn suffixes() {
        assert_eq!(r("bytes=-3", 10), Part(7, 9));
        assert_eq!(r("bytes=-10", 10), Part(0, 9));
        assert_eq!(r("bytes=-30", 10), Part(0, 9), "longer than the file");
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn ends_past_the_length_are_clamped() {
        assert_eq!(r("bytes=4-100", 10), Part(4, 9));
        assert_eq!(r("bytes=0-18446744073709551615", 10), Part(0, 9));
    }

    #[test]
    fn starts_past_the_length_are_unsatisfiable() {
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn what_is_ignored_gets_everything() {
        for v in [
            "bytes=0-1,3-4",
            "bytes=5-2",
            "items=0-1",
            "bytes=x-1",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=-+3",
            "bytes=-",
            "bytes=",
            "bytes=5",
            "bytes=99999999999999999999-",
            "",
        ] {
            assert_eq!(r(v, 10), Full, "{v:?}");
        }
    }

    #[test]
    fn content_range_values() {
        assert_eq!(
            Part(2, 5).content_range(10).as_deref(),
            Some("bytes 2-5/10")
        );
        assert_eq!(
            Unsatisfiable.content_range(10).as_deref(),
            Some("bytes */10")
        );
        assert_eq!(Full.content_range(10), None);
    }
}
