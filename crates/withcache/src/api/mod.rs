//! The JSON API: catalog, downloads, blobs, misses, events, metrics and
//! health. Reads a fleet needs (`/catalog`, `/metrics`, `/healthz`) are
//! open; everything else is behind the kit's API guard (HTTP Basic, a UI
//! session, or the service token). Errors are `bty_proto::ErrorBody` with
//! the request id.
//!
//! The handlers are thin: they parse, call [`crate::catalog`] or the
//! store, and shape the answer.

mod cache;
mod entries;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bty_http::{Caller, Gate, JsonError};

use crate::app::App;
use crate::catalog::Who;
use crate::error::Error;

pub(crate) fn routes(gate: &Gate) -> axum::Router<Arc<App>> {
    let admin = axum::Router::new()
        .route(
            "/catalog/entries",
            get(entries::list)
                .post(entries::create)
                .delete(entries::delete_by_query),
        )
        .route(
            "/catalog/entries/{name}",
            get(entries::get).put(entries::put).delete(entries::delete),
        )
        .route("/catalog/entries/{name}/download", post(entries::download))
        .route("/catalog/import", post(entries::import))
        .route("/blobs", get(cache::blobs))
        .route("/blobs/{digest}", delete(cache::delete_blob))
        .route("/misses", get(cache::misses).delete(cache::dismiss_miss))
        .route("/misses/fetch", post(cache::fetch_miss))
        .route("/events", get(cache::events))
        .route("/downloads", get(cache::downloads));
    axum::Router::new()
        .route("/healthz", get(status::healthz))
        .route("/catalog", get(status::catalog))
        .route("/metrics", get(status::metrics))
        .merge(gate.guard_api(admin))
}

/// Every API error as `ErrorBody`; withcache's own failures are logged in
/// full and answered with a pointer to the log.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = if self.is_internal() {
            tracing::error!(error = %self, "internal error");
            "internal error; see the withcache log".to_string()
        } else {
            self.to_string()
        };
        JsonError::new(self.status(), message).into_response()
    }
}

/// Who the caller is, for the event log and `added_by`.
fn who(caller: &Caller, peer: SocketAddr) -> Who<'static> {
    Who {
        actor: added_by(caller),
        ip: Some(peer.ip()),
    }
}

/// Entries written with the service token are recorded as bty-web's, so
/// bty-web can tell the entries it owns (and may update) from an
/// operator's (which it never overwrites).
fn added_by(caller: &Caller) -> &'static str {
    match caller {
        Caller::Service => "bty-web",
        _ => "operator",
    }
}

/// A JSON body, with the serde error as the message.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// `?force=1`, `?download=true` and the like.
fn yes(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "yes"))
}
