//! bty-web: machine registry, PXE plans, flash cycles, boot artifacts and
//! the REST API.
//!
//! The binary is a thin wrapper around [`Config::load`] and [`serve`];
//! `bty-lab serve` calls the same two. See docs/bty-web.md.
#![deny(missing_docs)]

pub mod catalog;
pub mod config;
pub mod cycle;
pub mod db;
pub mod dhcp;
pub mod error;
pub mod images;
pub mod ipxe;
pub mod metrics;
pub mod openapi;
pub mod pxe;
pub mod routes;
pub mod sse;
pub mod state;
pub mod ui;
pub mod withcache;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{broadcast, watch};

pub use config::Config;
use state::{AppState, Inner};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "bty-session";

/// Largest request body in general (machine PUTs, reports).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest inventory body.
pub const INVENTORY_LIMIT: usize = 4 * 1024 * 1024;

/// Open the database, load the catalog and the account, and build the
/// state. `stop` flips to true when the server stops.
pub async fn build_state(config: Config, stop: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    let db = db::Db::open(&config.db_path())?;
    let boot_dir = config.boot_dir();
    std::fs::create_dir_all(&boot_dir)
        .with_context(|| format!("creating boot directory {}", boot_dir.display()))?;
    let creds = bty_auth::Credentials::new(
        config.admin.user.clone(),
        config.admin.password.clone(),
        config.admin.password_hash.clone(),
    )
    .context("[admin] account")?;
    if creds.is_open() {
        tracing::warn!(
            "NO ADMIN PASSWORD IS SET: the bty-web API is open to anyone who can reach it. \
             Set BTY_ADMIN_PASSWORD_HASH (bty-lab passwd) or BTY_ADMIN_PASSWORD."
        );
    } else if creds.uses_default_password() {
        tracing::warn!(
            "the admin password is the well-known default; change it with `bty-lab passwd`"
        );
    }
    let sessions = match config
        .server
        .session_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(s) => bty_auth::SessionKey::from_secret(s.as_bytes()),
        None => {
            bty_auth::SessionKey::load_or_create(&config.server.state_dir.join("session-secret"))
                .context("session secret")?
        }
    };
    let auth = bty_auth::Auth::new(creds, sessions, COOKIE_NAME);
    let catalog = Arc::new(catalog::Catalog::new(
        config.images.catalog.clone(),
        config.withcache_url().map(str::to_string),
        config.withcache_token(),
    ));
    catalog.refresh(true, false).await;
    if let catalog::SourceStatus::Unreachable { error, .. } = &catalog.snapshot().static_file {
        anyhow::bail!("[images] catalog: {error}");
    }
    {
        // First withcache poll in the background: a slow withcache must not
        // delay PXE answers at start-up.
        let c = catalog.clone();
        tokio::spawn(async move { c.refresh(false, true).await });
    }
    catalog.spawn_refresher(config.withcache.refresh_secs, stop.clone());
    let (bus, _) = broadcast::channel(1024);
    Ok(Arc::new(Inner {
        cfg: config,
        db,
        catalog,
        templates: ipxe::Templates::new(),
        metrics: metrics::Metrics::default(),
        bus,
        auth,
        stop,
        started: Instant::now(),
    }))
}

/// The router over a state.
pub fn router(st: AppState) -> Router {
    let admin = Router::new()
        .route("/api/machines", get(routes::api::list_machines))
        .route(
            "/api/machines/{mac}",
            get(routes::api::get_machine)
                .put(routes::api::put_machine)
                .delete(routes::api::delete_machine),
        )
        .route(
            "/api/machines/{mac}/cycles",
            get(routes::api::machine_cycles),
        )
        .route(
            "/api/images",
            get(routes::api::images).post(routes::api::add_image),
        )
        .route(
            "/api/images/{name}",
            axum::routing::delete(routes::api::delete_image),
        )
        .route(
            "/api/images/refresh",
            post(routes::api::refresh_images).delete(routes::api::delete_image_named_refresh),
        )
        .route("/api/events", get(routes::api::list_events))
        .route("/api/events/stream", get(sse::stream))
        .route("/api/settings/dhcp", get(routes::api::dhcp_settings));
    let admin = ui::gate(&st).guard_api(admin);
    let open = Router::new()
        .route("/", get(routes::api::root))
        .route("/healthz", get(routes::api::healthz))
        .route("/version", get(routes::api::version))
        .route("/metrics", get(routes::api::metrics))
        .route("/catalog.toml", get(routes::api::catalog_toml))
        .route(
            "/api/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/api/login", post(routes::api::login))
        .route("/api/logout", post(routes::api::logout))
        .route("/pxe-bootstrap.ipxe", get(routes::pxe::bootstrap))
        .route("/pxe/{mac}", get(routes::pxe::script))
        .route("/pxe/{mac}/plan", get(routes::pxe::plan))
        .route("/pxe/{mac}/progress", post(routes::pxe::progress))
        .route("/pxe/{mac}/done", post(routes::pxe::done))
        .route("/pxe/{mac}/status", post(routes::pxe::status))
        .route(
            "/pxe/{mac}/inventory",
            post(routes::pxe::inventory).layer(DefaultBodyLimit::max(INVENTORY_LIMIT)),
        )
        .route("/boot/{name}", get(routes::boot::serve_file));
    let app = admin
        .merge(open)
        .merge(ui::router(st.clone()))
        .fallback(routes::fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            routes::count_requests,
        ))
        .with_state(st);
    bty_http::request_id::layer(app)
}

/// Run bty-web on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let st = build_state(config, stop_rx).await?;
    let addr = listener.local_addr().ok();
    tracing::info!(
        "bty-web {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    let app = router(st).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
        .context("serving HTTP")
}
