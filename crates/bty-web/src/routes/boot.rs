//! `GET`/`HEAD /boot/{name}`: boot artifacts with single-range support.
//!
//! Hand-written rather than tower-http's `ServeFile` because the handler
//! must (a) answer iPXE's second request for its own bootfile with a chain
//! script, and (b) mark the flash cycle `booted` only once the file was
//! actually found and is being served.

use std::io::SeekFrom;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{client_ip, host, ipxe_response, parse_mac};
use crate::config::valid_basename;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// iPXE bootfiles: requested again by an iPXE that re-DHCPs, they get the
/// chain script instead of the binary.
pub const IPXE_BOOTFILES: &[&str] = &["ipxe.efi", "snponly.efi", "undionly.kpxe", "ipxe.pxe"];

/// `?mac=`.
#[derive(Deserialize)]
pub struct BootQuery {
    mac: Option<String>,
}

/// The byte range to send.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No (usable) Range header: the whole file.
    Full,
    /// `start..=end`.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Interpret a `Range` header for a file of `len` bytes. Multiple ranges
/// and malformed headers are ignored (the whole file is sent), as RFC 9110
/// allows.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeAnswer {
    let Some(v) = value else {
        return RangeAnswer::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeAnswer::Full,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => RangeAnswer::Unsatisfiable,
            Ok(n) if len == 0 => {
                let _ = n;
                RangeAnswer::Unsatisfiable
            }
            Ok(n) => RangeAnswer::Partial(len.saturating_sub(n), len - 1),
            Err(_) => RangeAnswer::Full,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeAnswer::Full;
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeAnswer::Full,
                }
            };
            if start >= len {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial(start, end)
            }
        }
    }
}

/// `GET`/`HEAD /boot/{name}`.
pub async fn serve_file(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    Path(name): Path<String>,
    Query(q): Query<BootQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !valid_basename(&name) {
        return Err(ApiError::bad_request(format!(
            "file name {:?} refused: /boot serves plain file names only (letters, digits, . _ - +)",
            name.chars().take(64).collect::<String>()
        )));
    }
    let mac = q.mac.as_deref().map(parse_mac).transpose()?;
    let is_ipxe = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("iPXE/"));
    if is_ipxe && IPXE_BOOTFILES.contains(&name.as_str()) {
        let host = host(&headers)?;
        return Ok(ipxe_response(st.templates.chain_bootstrap(&host, &name)));
    }
    let dir = st.cfg.boot_dir();
    let not_found = || ApiError::not_found(format!("{name} is not in the boot directory"));
    let root = tokio::fs::canonicalize(&dir)
        .await
        .map_err(|_| not_found())?;
    let path = tokio::fs::canonicalize(root.join(&name))
        .await
        .map_err(|_| not_found())?;
    // A symlink may not lead out of the boot directory.
    if !path.starts_with(&root) {
        return Err(not_found());
    }
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let meta = file.metadata().await.map_err(ApiError::internal)?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let len = meta.len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    if range == RangeAnswer::Unsatisfiable {
        let mut r = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("range not satisfiable: {name} has {len} bytes"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(r);
    }
    if let (Some(mac), true) = (mac, method == Method::GET) {
        st.domain
            .booted(mac, client_ip(&addr), name.clone())
            .await?;
    }
    let (status, start, count) = match range {
        RangeAnswer::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        _ => (StatusCode::OK, 0, len),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, count);
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(ApiError::internal)?;
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(count),
            256 * 1024,
        ))
    };
    resp.body(body).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Partial(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Partial(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Partial(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Partial(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn basenames() {
        for ok in ["ipxe.efi", "bty-netboot-x86_64.vmlinuz", "a+b_c.img"] {
            assert!(valid_basename(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "..%2f", "a\\b", "a\0b", "a b", "-x",
        ] {
            assert!(!valid_basename(bad), "{bad:?}");
        }
    }
}
