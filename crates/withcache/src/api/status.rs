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
use crate::store::Metrics;

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

/// Where a counter is kept.
type Counter = fn(&Metrics) -> &AtomicU64;

/// The counters of `/metrics`: name (after `withcache_`), help, which.
const COUNTERS: [(&str, &str, Counter); 8] = [
    (
        "hits_total",
        "GET requests served from a cached blob.",
        |m| &m.hits,
    ),
    (
        "misses_total",
        "Requests for URLs neither cached nor in the catalog.",
        |m| &m.misses,
    ),
    ("bytes_served_total", "Body bytes sent to clients.", |m| {
        &m.bytes_served
    }),
    (
        "downloads_started_total",
        "Origin downloads started.",
        |m| &m.downloads_started,
    ),
    (
        "downloads_completed_total",
        "Origin downloads verified and stored.",
        |m| &m.downloads_completed,
    ),
    (
        "downloads_failed_total",
        "Origin downloads that failed.",
        |m| &m.downloads_failed,
    ),
    ("origin_bytes_total", "Bytes received from origins.", |m| {
        &m.origin_bytes
    }),
    ("evictions_total", "Blobs evicted to make room.", |m| {
        &m.evictions
    }),
];

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = Exposition::new();
    for (name, help, counter) in COUNTERS {
        let v = counter(&app.store.metrics).load(Ordering::Relaxed);
        out.single(&format!("withcache_{name}"), Kind::Counter, help, v);
    }
    let (used, reserved, max) = app.store.usage();
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
