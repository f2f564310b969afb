//! The Secure Boot chain's GRUB reads, relayed from TFTP by bty-tftp
//! (`bty_proto::relay`): the common config, the per-MAC config from the
//! same decision as `GET /pxe/{mac}`, and the boot files.
//!
//! The machine is [`Client`]: the relayed TFTP client when bty-tftp sends
//! the right key, else the HTTP peer.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::{host, ipxe_response, parse_mac, Client};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /grub/grub.cfg`: the same for every machine; it sources the
/// per-MAC config. The [`Client`] is not needed for the answer; taking it
/// refuses a relay with the wrong key at the first file GRUB reads, where
/// the operator looks first.
pub async fn config(State(st): State<AppState>, _client: Client) -> Response {
    ipxe_response(st.templates.grub_cfg())
}

/// `GET /grub/{name}`: `grub.cfg-{mac}`, the per-MAC config. Routed as
/// one segment because the MAC is glued to the name.
pub async fn mac_config(
    State(st): State<AppState>,
    client: Client,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(raw) = name.strip_prefix("grub.cfg-") else {
        return Err(ApiError::not_found(format!(
            "no GRUB file {:?}: bty-web serves grub.cfg, grub.cfg-<mac> and boot/<mac>/<file>",
            name.chars().take(64).collect::<String>()
        )));
    };
    let mac = parse_mac(raw)?;
    let host = host(&headers)?;
    let answer = super::pxe::boot_answer(&st, mac, &client, &headers).await?;
    Ok(ipxe_response(st.templates.grub_answer(
        &host,
        &st.cfg.boot,
        &answer,
    )))
}

/// `GET`/`HEAD /grub/boot/{mac}/{name}`: exactly
/// `GET /boot/{name}?mac={mac}` (the kernel's fetch marks the cycle
/// booted for the machine's address).
pub async fn boot_file(
    State(st): State<AppState>,
    client: Client,
    method: Method,
    Path((raw, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    super::boot::check_name(&name)?;
    let mac = parse_mac(&raw)?;
    super::boot::send(&st, client, &method, &name, Some(mac), &headers).await
}
