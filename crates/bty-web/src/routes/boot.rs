//! `GET`/`HEAD /boot/{name}`: boot artifacts with single-range support.
//!
//! Hand-written rather than tower-http's `ServeFile` because the handler
//! must (a) answer iPXE's second request for its own bootfile with a chain
//! script, and (b) mark the flash cycle `booted` only once the file was
//! actually found and is being served.
//!
//! [`send`] is shared with `GET /grub/boot/{mac}/{name}` (the Secure Boot
//! chain's kernel and initrd, relayed from TFTP), so both paths check and
//! mark the same way.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use bty_http::range::{parse_range, ByteRange};

use super::{from_browser, host, ipxe_response, parse_mac, Client};
use crate::config::valid_basename;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use bty_proto::Mac;

/// iPXE bootfiles: requested again by an iPXE that re-DHCPs, they get the
/// chain script instead of the binary.
pub const IPXE_BOOTFILES: &[&str] = &["ipxe.efi", "snponly.efi", "undionly.kpxe", "ipxe.pxe"];

/// `?mac=`.
#[derive(Deserialize)]
pub struct BootQuery {
    mac: Option<String>,
}

/// `GET`/`HEAD /boot/{name}`.
pub async fn serve_file(
    State(st): State<AppState>,
    client: Client,
    method: Method,
    Path(name): Path<String>,
    Query(q): Query<BootQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_name(&name)?;
    let mac = q.mac.as_deref().map(parse_mac).transpose()?;
    let is_ipxe = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("iPXE/"));
    if is_ipxe && IPXE_BOOTFILES.contains(&name.as_str()) {
        let host = host(&headers)?;
        return Ok(ipxe_response(st.templates.chain_bootstrap(&host, &name)));
    }
    send(&st, client, &method, &name, mac, &headers).await
}

/// Refuse anything but a plain file name (400).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if !valid_basename(name) {
        return Err(ApiError::bad_request(format!(
            "file name {:?} refused: /boot serves plain file names only (letters, digits, . _ - +)",
            name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// Serve boot-directory file `name` (already [`check_name`]d), honouring
/// a single Range and HEAD. A `GET` for `mac` that is not a browser's
/// marks the machine's offered cycle `booted` for `client`, once the file
/// is known to exist.
pub async fn send(
    st: &AppState,
    client: Client,
    method: &Method,
    name: &str,
    mac: Option<Mac>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let dir = st.cfg.boot_dir();
    let not_found = || ApiError::not_found(format!("{name} is not in the boot directory"));
    let root = tokio::fs::canonicalize(&dir)
        .await
        .map_err(|_| not_found())?;
    let path = tokio::fs::canonicalize(root.join(name))
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
    if range == ByteRange::Unsatisfiable {
        let mut r = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("range not satisfiable: {name} has {len} bytes"),
        )
        .into_response();
        if let Some(v) = range
            .content_range(len)
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(r);
    }
    // Only iPXE's fetch boots a cycle: a browser's (a page can make one
    // load any URL) is served like a HEAD and changes nothing.
    if let (Some(mac), true) = (mac, method == Method::GET && !from_browser(headers)) {
        st.domain.booted(mac, client.ip(), name.to_string()).await?;
    }
    let (status, start, count) = match range {
        ByteRange::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
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
