//! Strict character sets for operator- and machine-supplied strings.
//!
//! Anything that may end up inside an iPXE script or a kernel command line
//! is checked here, at the API boundary, so no serial, name, label or URL
//! can smuggle a newline, a `${...}` expansion or a second command into a
//! script. The sets are deliberately narrower than what hardware can report;
//! widen them only with a test that shows the new character is inert in
//! iPXE.

use std::fmt;

/// Why a string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for TextError {}

fn check(
    field: &'static str,
    s: &str,
    max: usize,
    first: fn(char) -> bool,
    rest: fn(char) -> bool,
    allowed: &str,
) -> Result<(), TextError> {
    let err = |problem: String| Err(TextError { field, problem });
    if s.is_empty() {
        return err("must not be empty".into());
    }
    if s.chars().count() > max {
        return err(format!("is longer than {max} characters"));
    }
    let mut chars = s.chars();
    let c0 = chars.next().unwrap_or(' ');
    if !first(c0) {
        return err(format!("must start with a letter or digit, not {c0:?}"));
    }
    if let Some(bad) = chars.find(|c| !rest(*c)) {
        return err(format!("contains {bad:?}; allowed are {allowed}"));
    }
    if s.ends_with(' ') {
        return err("must not end with a space".into());
    }
    Ok(())
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A catalog entry name or machine name: 1–64 of `A-Z a-z 0-9 . _ - +`,
/// starting with a letter or digit.
pub fn validate_name(field: &'static str, s: &str) -> Result<(), TextError> {
    check(
        field,
        s,
        64,
        alnum,
        |c| c.is_ascii_alphanumeric() || "._-+".contains(c),
        "letters, digits and . _ - +",
    )
}

/// A catalog entry name: the same rules as [`validate_name`], up to 128
/// characters (image names carry versions and architectures).
pub fn validate_image_name(s: &str) -> Result<(), TextError> {
    check(
        "image",
        s,
        128,
        alnum,
        |c| c.is_ascii_alphanumeric() || "._-+".contains(c),
        "letters, digits and . _ - +",
    )
}

/// A label: 1–64 of letters, digits, space and `. _ - : /`, starting with
/// a letter or digit.
pub fn validate_label(s: &str) -> Result<(), TextError> {
    check(
        "labels",
        s,
        64,
        alnum,
        |c| c.is_ascii_alphanumeric() || " ._-:/".contains(c),
        "letters, digits, space and . _ - : /",
    )
}

/// A disk serial: 1–128 of letters, digits, space and `. _ - : / +`.
/// Real serials (NVMe, SATA, virtio `serial=`) fit; quotes, `$`, `;`,
/// newlines and other control characters do not.
pub fn validate_serial(s: &str) -> Result<(), TextError> {
    check(
        "target_disk_serial",
        s,
        128,
        alnum,
        |c| c.is_ascii_alphanumeric() || " ._-:/+".contains(c),
        "letters, digits, space and . _ - : / +",
    )
}

/// A BIOS drive number for `sanboot --drive`: `0x` and one or two hex
/// digits (`0x80` is the first hard disk).
pub fn validate_sanboot_drive(s: &str) -> Result<(), TextError> {
    let ok = s.len() > 2
        && s.len() <= 4
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(TextError {
            field: "sanboot_drive",
            problem: format!(
                "{:?} is not a BIOS drive number such as 0x80",
                s.chars().take(32).collect::<String>()
            ),
        })
    }
}

/// A sha256 digest: exactly 64 lower-case hex digits.
pub fn validate_sha256(field: &'static str, s: &str) -> Result<(), TextError> {
    if s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(TextError {
            field,
            problem: "must be 64 lower-case hex digits".into(),
        })
    }
}

/// An origin URL: `http://` or `https://`, at most 2048 characters, no
/// whitespace, control characters, quotes, backslashes or `${`.
pub fn validate_http_url(field: &'static str, s: &str) -> Result<(), TextError> {
    let err = |problem: &str| {
        Err(TextError {
            field,
            problem: problem.into(),
        })
    };
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return err("must be an http:// or https:// URL");
    }
    if s.len() > 2048 {
        return err("is longer than 2048 characters");
    }
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "\"'\\<>`".contains(c))
        || s.contains("${")
    {
        return err("contains whitespace, a control character, a quote, a backslash or ${");
    }
    let rest = &s[s.find("://").map_or(0, |i| i + 3)..];
    if rest.is_empty() || rest.starts_with('/') {
        return err("has no host");
    }
    Ok(())
}

/// A `Host` header value that may be written into an iPXE script:
/// a DNS name, an IPv4 address or a bracketed IPv6 address, with an
/// optional port.
pub fn validate_host(s: &str) -> Result<(), TextError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TextError {
            field: "Host",
            problem: "must be a host name or address with an optional port".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_attempts_are_refused() {
        for s in [
            "ok\n#!ipxe",
            "a;reboot",
            "a${mac}",
            "a\"b",
            "a\rb",
            "a`b`",
            "a\0",
            "$x",
            " lead",
            "trail ",
        ] {
            assert!(validate_serial(s).is_err(), "serial {s:?}");
            assert!(validate_label(s).is_err(), "label {s:?}");
            assert!(validate_name("name", s).is_err(), "name {s:?}");
        }
        assert!(validate_http_url("src", "http://h/a b").is_err());
        assert!(validate_http_url("src", "http://h/${x}").is_err());
        assert!(validate_http_url("src", "file:///etc/passwd").is_err());
        assert!(validate_http_url("src", "http:///x").is_err());
        assert!(validate_host("h\nchain x").is_err());
        assert!(validate_host("h/../x").is_err());
    }

    #[test]
    fn realistic_values_pass() {
        validate_serial("S4EWNX0N123456 W").unwrap();
        validate_serial("BTYTEST").unwrap();
        validate_serial("WD-WCC4N7KX1234").unwrap();
        validate_label("rack 3/row:2").unwrap();
        validate_name("name", "runner-07").unwrap();
        validate_image_name("debian-12-amd64.img.zst").unwrap();
        validate_sanboot_drive("0x80").unwrap();
        assert!(validate_sanboot_drive("0x").is_err());
        assert!(validate_sanboot_drive("0x800").is_err());
        assert!(validate_sanboot_drive("80").is_err());
        validate_http_url("src", "https://example.org/a.img?x=1&y=%20").unwrap();
        validate_host("192.168.1.5:8080").unwrap();
        validate_host("[::1]:8080").unwrap();
        validate_host("bty.lab.example").unwrap();
        validate_sha256("sha256", &"a".repeat(64)).unwrap();
        assert!(validate_sha256("sha256", &"A".repeat(64)).is_err());
        let long = "a".repeat(129);
        assert!(validate_serial(&long).is_err());
    }
}
