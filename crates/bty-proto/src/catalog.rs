//! Image catalog entries and the withcache blob key.
//!
//! The same key function is used by withcache to route `GET /b/{key}/{name}`
//! and by bty-web to hand the agent a withcache URL, so the two can never
//! disagree about which bytes an entry names.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Container format of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Raw disk image (`img`).
    Raw,
    /// gzip-compressed raw image (`img.gz`).
    Gz,
    /// xz-compressed raw image (`img.xz`).
    Xz,
    /// zstd-compressed raw image (`img.zst`).
    Zst,
    /// bzip2-compressed raw image (`img.bz2`).
    Bz2,
    /// QEMU copy-on-write v2 image (`qcow2`).
    Qcow2,
}

/// A format name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image format {0:?}: expected one of img, img.gz, img.xz, img.zst, img.bz2, qcow2")]
pub struct UnknownFormat(pub String);

impl ImageFormat {
    /// Every format.
    pub const ALL: [ImageFormat; 6] = [
        ImageFormat::Raw,
        ImageFormat::Gz,
        ImageFormat::Xz,
        ImageFormat::Zst,
        ImageFormat::Bz2,
        ImageFormat::Qcow2,
    ];

    /// The canonical spelling (the file suffix bty has always used).
    pub const fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "img",
            ImageFormat::Gz => "img.gz",
            ImageFormat::Xz => "img.xz",
            ImageFormat::Zst => "img.zst",
            ImageFormat::Bz2 => "img.bz2",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// Guess from a file name's suffix; used only when a catalog entry does
    /// not say, never to override what it says.
    pub fn from_file_name(name: &str) -> Option<ImageFormat> {
        let lower = name.to_ascii_lowercase();
        [
            (".img.gz", ImageFormat::Gz),
            (".img.xz", ImageFormat::Xz),
            (".img.zst", ImageFormat::Zst),
            (".img.bz2", ImageFormat::Bz2),
            (".qcow2", ImageFormat::Qcow2),
            (".img", ImageFormat::Raw),
            (".raw", ImageFormat::Raw),
        ]
        .into_iter()
        .find(|(suffix, _)| lower.ends_with(suffix))
        .map(|(_, f)| f)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "img" | "raw" => ImageFormat::Raw,
            "img.gz" | "gz" | "gzip" => ImageFormat::Gz,
            "img.xz" | "xz" => ImageFormat::Xz,
            "img.zst" | "zst" | "zstd" => ImageFormat::Zst,
            "img.bz2" | "bz2" | "bzip2" => ImageFormat::Bz2,
            "qcow2" => ImageFormat::Qcow2,
            _ => return Err(UnknownFormat(s.chars().take(64).collect())),
        })
    }
}

impl Serialize for ImageFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ImageFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One image in a catalog: a name operators pick, the origin URL the bytes
/// come from, and what is known about those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Unique name; see [`crate::text::validate_image_name`].
    pub name: String,
    /// Origin URL (`http`/`https`).
    pub src: String,
    /// sha256 of the bytes at `src`, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Length of the bytes at `src`.
    #[serde(default, alias = "size_bytes", skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Container format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
    /// CPU architecture (`x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A catalog file: `version = 1` and `[[images]]` tables (TOML), or the same
/// shape in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Must be 1.
    pub version: u32,
    /// The entries.
    #[serde(default)]
    pub images: Vec<CatalogEntry>,
}

/// withcache's `GET /catalog`: the entries whose bytes are cached and
/// verified, each with its sha256 and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogResponse {
    /// Ready entries.
    pub entries: Vec<CatalogEntry>,
}

/// The key withcache files an origin URL under: the URL-safe base64 of the
/// exact URL, without padding.
pub fn blob_key(src: &str) -> String {
    URL_SAFE_NO_PAD.encode(src.as_bytes())
}

/// The origin URL a key names, if the key is valid base64 (padding
/// optional) of UTF-8 text.
pub fn decode_blob_key(key: &str) -> Option<String> {
    let key = key.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

/// The path (`/b/{key}/{name}`) under which withcache serves `src`. The last
/// segment is decorative: the file name of the origin URL, so tools that
/// save downloads by name get a sensible one.
pub fn blob_path(src: &str) -> String {
    format!("/b/{}/{}", blob_key(src), blob_file_name(src))
}

/// The full withcache URL of `src` on the withcache at `base`
/// (`http://host:3000`, with or without a trailing slash).
pub fn blob_url(base: &str, src: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), blob_path(src))
}

/// The last path segment of a URL, percent-encoded except for unreserved
/// characters, or `download` when there is none.
fn blob_file_name(src: &str) -> String {
    let no_query = src.split(['?', '#']).next().unwrap_or("");
    let after_scheme = no_query.split_once("://").map_or(no_query, |(_, r)| r);
    let path = after_scheme.split_once('/').map_or("", |(_, p)| p);
    let last = path.rsplit('/').next().unwrap_or("");
    if last.is_empty() {
        return "download".to_string();
    }
    percent_encoding::utf8_percent_encode(last, FILE_NAME).to_string()
}

/// What [`blob_file_name`] escapes: all but RFC 3986's unreserved
/// characters and `%` (an origin's own escapes stay as they are).
const FILE_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'%');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_key_round_trips_exact_url() {
        for src in [
            "https://example.org/images/debian.img.zst",
            "http://[::1]:8000/a b/c.img?x=1&y=2",
            "https://h/ünï.img",
        ] {
            let key = blob_key(src);
            assert!(!key.contains('=') && !key.contains('/') && !key.contains('+'));
            assert_eq!(decode_blob_key(&key).as_deref(), Some(src));
            assert_eq!(decode_blob_key(&format!("{key}==")).as_deref(), Some(src));
        }
        assert_eq!(decode_blob_key("!!"), None);
        assert_eq!(decode_blob_key(&URL_SAFE_NO_PAD.encode([0xff, 0xfe])), None);
    }

    #[test]
    fn blob_url_shape() {
        assert_eq!(
            blob_url("http://c:3000/", "https://o/x/deb.img.zst?sig=1"),
            format!(
                "http://c:3000/b/{}/deb.img.zst",
                blob_key("https://o/x/deb.img.zst?sig=1")
            )
        );
        assert!(blob_path("https://o/").ends_with("/download"));
        assert!(blob_path("https://o").ends_with("/download"));
        assert!(blob_path("https://o/a b.img").ends_with("/a%20b.img"));
    }

    #[test]
    fn formats_parse_aliases_and_guess_from_names() {
        assert_eq!("zstd".parse::<ImageFormat>().unwrap(), ImageFormat::Zst);
        assert_eq!("IMG.GZ".parse::<ImageFormat>().unwrap(), ImageFormat::Gz);
        assert!("tar.gz".parse::<ImageFormat>().is_err());
        assert_eq!(
            ImageFormat::from_file_name("a.IMG.XZ"),
            Some(ImageFormat::Xz)
        );
        assert_eq!(ImageFormat::from_file_name("a.iso"), None);
        for f in ImageFormat::ALL {
            assert_eq!(f.as_str().parse::<ImageFormat>().unwrap(), f);
        }
    }

    #[test]
    fn catalog_entry_accepts_python_size_bytes() {
        let e: CatalogEntry = serde_json::from_str(
            r#"{"name":"a","src":"https://o/a.img","size_bytes":7,"format":"img","netboot_ref":"x"}"#,
        )
        .unwrap();
        assert_eq!(e.size, Some(7));
    }
}
