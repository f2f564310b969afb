//! bty-web: machine registry, PXE plans, flash cycles, boot artifacts and
//! the REST API.
//!
//! The binary is a thin wrapper around [`Config::load`] and [`serve`];
//! `bty-lab serve` calls the same two. See docs/bty-web.md.
#![deny(missing_docs)]
// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod backup;
pub mod backups;
pub mod catalog;
pub mod config;
pub mod db;
pub mod dhcp;
pub mod domain;
pub mod error;
pub mod ipxe;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sites;
pub mod sse;
pub mod state;
pub mod ui;
pub mod withcache;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

pub use config::Config;
use state::{AppState, Inner};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "bty-session";

/// Largest request body in general (machine PUTs, reports).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest inventory body.
pub const INVENTORY_LIMIT: usize = 4 * 1024 * 1024;
/// Largest machines file `POST /api/machines/import` (and the UI's
/// import) takes: some 60 000 CSV rows, far beyond a lab.
pub const IMPORT_LIMIT: usize = 8 * 1024 * 1024;

/// Open the database, load the catalog and the account, and build the
/// state. `stop` flips to true when the server stops.
pub async fn build_state(config: Config, stop: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    check_boot_dir(&config)?;
    let db = match &config.server.database {
        Some(url) => db::Db::connect(url, config.server.database_pool)?,
        None => db::Db::open(&config.db_path())?,
    };
    let auth = admin_auth(&config)?;
    let catalog = open_catalog(&config, &stop).await?;
    let bus = match &config.server.database {
        Some(url) => domain::bus::Bus::shared(url)?,
        None => domain::bus::Bus::default(),
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let domain = domain::Domain::new(
        db.clone(),
        catalog.clone(),
        bus.clone(),
        metrics.clone(),
        domain::Policy::of(&config),
    );
    let backups = Arc::new(backups::Backups::new(&config));
    Ok(Arc::new(Inner {
        backups,
        cfg: config,
        domain,
        db,
        catalog,
        templates: ipxe::Templates::new(),
        metrics,
        bus,
        auth,
        stop,
        started: Instant::now(),
    }))
}

/// Create the boot directory and refuse one that is the state directory or
/// holds it: `/boot/` serves every file in it to anyone, and the state
/// directory holds the database (tokens) and the session secret.
fn check_boot_dir(config: &Config) -> anyhow::Result<()> {
    let boot_dir = config.boot_dir();
    let state_dir = &config.server.state_dir;
    for (what, d) in [
        ("boot directory", &boot_dir),
        ("state directory", state_dir),
    ] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {what} {}", d.display()))?;
    }
    let real = |d: &std::path::Path| {
        std::fs::canonicalize(d).with_context(|| format!("resolving {}", d.display()))
    };
    let (boot, state) = (real(&boot_dir)?, real(state_dir)?);
    if state.starts_with(&boot) {
        anyhow::bail!(
            "[boot] dir {} is or contains [server] state_dir {}: /boot/ would serve the \
             database and the session secret to anyone on the network. Point [boot] dir at \
             a directory outside the state directory (the default is <state_dir>/boot)",
            boot.display(),
            state.display()
        );
    }
    Ok(())
}

/// The admin account (warning when it is open or uses the default
/// password) and the session key.
fn admin_auth(config: &Config) -> anyhow::Result<Arc<bty_auth::Auth>> {
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
    Ok(bty_auth::Auth::new(creds, sessions, COOKIE_NAME))
}

/// The catalog, its static file read (a broken file stops the start),
/// withcache polled in the background and kept fresh until `stop`.
async fn open_catalog(
    config: &Config,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<catalog::Catalog>> {
    let catalog = Arc::new(
        catalog::Catalog::new(
            config.images.catalog.clone(),
            config.withcache_url().map(str::to_string),
            config.withcache_token(),
        )
        .with_sites(sites::Sites::new(&config.sites)?),
    );
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
    Ok(catalog)
}

/// The router over a state.
pub fn router(st: AppState) -> Router {
    let admin = ui::gate(&st).guard_api(admin_routes());
    let open = open_routes().merge(pxe_routes());
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

/// `/api/*` for the admin (or everyone in open mode); the kit's gate
/// guards them.
fn admin_routes() -> Router<AppState> {
    use routes::api;
    Router::new()
        .route("/api/machines", get(api::list_machines))
        .route(
            "/api/machines/{mac}",
            get(api::get_machine)
                .put(api::put_machine)
                .delete(api::delete_machine),
        )
        .route("/api/machines/export", get(routes::bulk::export))
        .route(
            "/api/machines/import",
            post(routes::bulk::import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/api/machines/{mac}/cycles", get(api::machine_cycles))
        .route("/api/images", get(api::images).post(api::add_image))
        .route(
            "/api/images/{name}",
            axum::routing::delete(api::delete_image),
        )
        .route(
            "/api/images/refresh",
            post(api::refresh_images).delete(api::delete_image_named_refresh),
        )
        .route("/api/events", get(api::list_events))
        .route("/api/events/stream", get(sse::stream))
        .route("/api/settings/dhcp", get(api::dhcp_settings))
        .route("/api/sticks", get(api::list_sticks).post(api::mint_stick))
        .route("/api/sticks/{id}", axum::routing::delete(api::revoke_stick))
        .route(
            "/api/backups",
            get(routes::backups::list).post(routes::backups::create),
        )
        .route("/api/backups/{name}", get(routes::backups::download))
}

/// Health, version, metrics, the catalog, the OpenAPI document, login.
fn open_routes() -> Router<AppState> {
    use routes::api;
    Router::new()
        .route("/", get(api::root))
        .route("/healthz", get(api::healthz))
        .route("/version", get(api::version))
        .route("/metrics", get(api::metrics))
        .route("/catalog.toml", get(api::catalog_toml))
        .route(
            "/api/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
}

/// What firmware, iPXE and the agent reach: open by design.
fn pxe_routes() -> Router<AppState> {
    use routes::pxe;
    Router::new()
        .route("/pxe-bootstrap.ipxe", get(pxe::bootstrap))
        .route("/pxe/{mac}", get(pxe::script))
        .route("/pxe/{mac}/plan", get(pxe::plan))
        .route("/pxe/{mac}/progress", post(pxe::progress))
        .route("/pxe/{mac}/done", post(pxe::done))
        .route("/pxe/{mac}/status", post(pxe::status))
        .route(
            "/pxe/{mac}/inventory",
            post(pxe::inventory).layer(DefaultBodyLimit::max(INVENTORY_LIMIT)),
        )
        .route("/boot/{name}", get(routes::boot::serve_file))
        // The Secure Boot chain: GRUB's TFTP reads, relayed by bty-tftp.
        .route("/grub/grub.cfg", get(routes::grub::config))
        .route("/grub/{name}", get(routes::grub::mac_config))
        .route("/grub/boot/{mac}/{name}", get(routes::grub::boot_file))
        // Open to the LAN like the PXE routes, gated by the stick key.
        .route(bty_proto::stick::CATALOG_PATH, get(routes::stick::catalog))
        .route(bty_proto::stick::FLASH_PATH, post(routes::stick::flash))
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
    let limits = st.cfg.http.limits();
    let schedule = st
        .backups
        .spawn(st.domain.clone(), st.metrics.clone(), st.stop.clone());
    let stop = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    bty_http::serve::serve(&listener, router(st), limits, stop).await;
    if let Some(task) = schedule {
        // A backup under way is finished before bty-web exits.
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// No two modules import each other in a circle (issue 11); the
    /// script and its rule: scripts/check-module-cycles.py.
    #[test]
    fn no_module_cycles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = dir.join("../../scripts/check-module-cycles.py");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(dir.join("src"))
            .output()
            .expect("running python3 (scripts/setup.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The domain layer knows nothing of HTTP or of the layers above it.
    #[test]
    fn the_domain_imports_no_http() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
        let mut stack = vec![root];
        let mut seen = 0;
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            seen += 1;
            for banned in [
                "axum",
                "http::",
                "crate::routes",
                "crate::ui",
                "crate::error",
                "crate::state",
                "crate::sse",
            ] {
                assert!(!text.contains(banned), "{} mentions {banned}", p.display());
            }
        }
        assert!(seen > 5, "read {seen} files of src/domain");
    }
}
