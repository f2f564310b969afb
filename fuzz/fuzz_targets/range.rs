//! Fuzz the `Range` header parser bty-web's `/boot/*` and withcache's
//! blobs answer with: the first 8 bytes are the representation's length,
//! the rest the header value. A part always lies inside the
//! representation, and its `Content-Range` says so.
#![no_main]

use bty_http::range::{parse_range, ByteRange};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (len, value) = match data.split_first_chunk::<8>() {
        Some((l, rest)) => (u64::from_le_bytes(*l), rest),
        None => (0, data),
    };
    // Small lengths too, where the edge cases are.
    let len = if len & 1 == 0 {
        len >> 1
    } else {
        (len >> 1) % 4096
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    assert_eq!(parse_range(None, len), ByteRange::Full);
    let r = parse_range(Some(value), len);
    match r {
        ByteRange::Full => assert_eq!(r.content_range(len), None),
        ByteRange::Part(a, b) => {
            assert!(a <= b && b < len, "{value:?} over {len}: {a}-{b}");
            assert_eq!(r.content_range(len), Some(format!("bytes {a}-{b}/{len}")));
        }
        ByteRange::Unsatisfiable => {
            assert_eq!(r.content_range(len), Some(format!("bytes */{len}")))
        }
    }
});
