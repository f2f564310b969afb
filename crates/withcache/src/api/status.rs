//! The open reads: `/healthz`, `/catalog` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bty_http::metrics::{Exposition, Kind, CONTENT_TYPE};
use bty_proto::catalog::CatalogResponse;

use crate::app::App;
use crate::error::Error;

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "service": "withcache",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /catalog`: only entries whose bytes are cached and verified, each
/// with the measured sha256 and size.
pub(super) async fn catalog(State(app): State<Arc<App>>) -> Result<Json<CatalogResponse>, Error> {
    Ok(Json(CatalogResponse {
        entries: app.catalog.cached()?,
    }))
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.store.metrics;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (used, reserved, max) = app.store.usage();
    let mut out = Exposition::new();
    for (name, help, v) in [
        (
            "hits_total",
            "GET requests served from a cached blob.",
            c(&m.hits),
        ),
        (
            "misses_total",
            "Requests for URLs neither cached nor in the catalog.",
            c(&m.misses),
        ),
        (
            "bytes_served_total",
            "Body bytes sent to clients.",
            c(&m.bytes_served),
        ),
        (
            "downloads_started_total",
            "Origin downloads started.",
            c(&m.downloads_started),
        ),
        (
            "downloads_completed_total",
            "Origin downloads verified and stored.",
            c(&m.downloads_completed),
        ),
        (
            "downloads_failed_total",
            "Origin downloads that failed.",
            c(&m.downloads_failed),
        ),
        (
            "origin_bytes_total",
            "Bytes received from origins.",
            c(&m.origin_bytes),
        ),
        (
            "evictions_total",
            "Blobs evicted to make room.",
            c(&m.evictions),
        ),
    ] {
        out.single(&format!("withcache_{name}"), Kind::Counter, help, v);
    }
    let active = app.store.downloads().len() as u64;
    for (name, help, v) in [
        ("stored_bytes", "Bytes of cached blobs.", used),
        (
            "reserved_bytes",
            "Quota reserved by running downloads.",
            reserved,
        ),
        ("max_bytes", "Quota (0 = unlimited).", max.unwrap_or(0)),
        ("downloads_active", "Downloads in progress.", active),
    ] {
        out.single(&format!("withcache_{name}"), Kind::Gauge, help, v);
    }
    ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], out.finish()).into_response()
}
