//! withcache: the URL-keyed image cache that lets a fleet pull each image
//! once.
//!
//! Operators curate a catalog of images (name → origin URL, optional
//! sha256 and size). A request for an entry's bytes (`GET /b/{key}/{name}`,
//! key = [`bty_proto::catalog::blob_key`] of the origin URL) is served from
//! disk when cached; when not, the first request starts the one download of
//! that URL and every client, first or later, is streamed the bytes as they
//! land. A URL that is not in the catalog is a miss: 404, recorded for the
//! operator, never fetched on a client's say-so.
//!
//! Module map, each depending only on the ones before it:
//! [`error`], [`db`] (SQLite), `origin` (which origin addresses may be
//! connected to), [`store`] (blobs, quota, the single-flight map), `fetch` (the downloader), `catalog` (the catalog's rules, no
//! HTTP), `app` (the shared state); the HTTP surfaces `blob` (serving,
//! ranges), `fastpath` (sendfile for cached blobs), `api` (JSON) and `ui`
//! (HTML), on the kit in `bty-http`.

#![deny(missing_docs)]
// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod api;
mod app;
mod blob;
mod catalog;
pub mod db;
pub mod error;
mod fastpath;
mod fetch;
mod options;
mod origin;
pub mod store;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use app::App;

pub use error::Error;
pub use options::{parse_size, Options};
pub use store::FetchConfig;

fn build_app(opts: Options) -> anyhow::Result<Arc<App>> {
    use anyhow::Context;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data dir {}", opts.data_dir.display()))?;
    let db = Arc::new(
        db::Db::open(&opts.data_dir.join("withcache.db")).context("opening the database")?,
    );
    let store = Arc::new(
        store::Store::open(
            &opts.data_dir,
            db,
            opts.max_bytes,
            opts.fetch.clone(),
            opts.allow_private_origins,
        )
        .context("opening the blob store")?
        .with_upstream(opts.upstream.as_deref())
        .context("WITHCACHE_UPSTREAM")?,
    );
    let creds = bty_auth::Credentials::new(
        opts.admin_user.clone(),
        opts.admin_password.clone(),
        opts.admin_password_hash.clone(),
    )
    .context("setting up the admin account")?;
    warn_if_weak(&creds);
    warn_if_private_origins(&opts);
    if let Some(up) = &store.upstream {
        tracing::info!(
            upstream = %up.base,
            "blobs not cached here are fetched from the upstream withcache, never from origins"
        );
    }
    if let Some(t) = &opts.api_token {
        t.check().context("WITHCACHE_API_TOKEN")?;
        tracing::info!(
            "a service token is set: the admin API also accepts it as Authorization: Bearer"
        );
    }
    let sessions = session_key(&opts)?;
    let auth = bty_auth::Auth::new(creds, sessions, "withcache_session");
    let catalog = catalog::Catalog::new(store.clone());
    Ok(Arc::new(App {
        store,
        catalog,
        auth,
        opts,
    }))
}

/// An open or default-password account is the operator's choice, but
/// never a silent one.
fn warn_if_weak(creds: &bty_auth::Credentials) {
    if creds.is_open() {
        tracing::warn!(
            "no WITHCACHE_ADMIN_PASSWORD or WITHCACHE_ADMIN_PASSWORD_HASH set: the catalog API \
             and the UI are OPEN to anyone who can reach this port"
        );
    } else if creds.uses_default_password() {
        tracing::warn!("the admin password is the default one; change it");
    }
}

/// Private origins are the operator's choice too, never a silent one.
fn warn_if_private_origins(opts: &Options) {
    if opts.allow_private_origins {
        tracing::warn!(
            "allow-private-origins is on: origins on loopback and link-local addresses (this \
             host, the cloud metadata service) are allowed, so anyone who can add a catalog \
             entry can read them through the cache"
        );
    }
}

/// The key of UI sessions: the configured secret, else one kept in the
/// data dir so sessions survive a restart.
fn session_key(opts: &Options) -> anyhow::Result<bty_auth::SessionKey> {
    use anyhow::Context;
    Ok(match &opts.session_secret {
        Some(s) => bty_auth::SessionKey::from_secret(s.as_bytes()),
        None => bty_auth::SessionKey::load_or_create(&opts.data_dir.join("session-secret"))
            .context("loading the session secret")?,
    })
}

/// Largest request body (catalog entries, settings, form posts).
const BODY_LIMIT: usize = 1 << 20;

/// Every route, behind request ids and spans. The API takes the service
/// token, the UI does not; UI logins are recorded as events.
fn router(app: Arc<App>) -> axum::Router {
    let events = app.clone();
    let gate = bty_http::Gate::new(app.auth.clone(), &ui::PAGES)
        .with_service_token(app.opts.api_token.clone())
        .on_login(move |a| {
            let (kind, actor, summary) = match a.outcome {
                Ok(()) => (
                    "auth.login.succeeded",
                    "operator",
                    "logged in to the UI".into(),
                ),
                Err(e) if a.suppressed > 0 => (
                    "auth.login.failed",
                    "client",
                    format!("{e} ({} more failed logins not recorded)", a.suppressed),
                ),
                Err(e) => ("auth.login.failed", "client", e.to_string()),
            };
            let who = catalog::Who {
                actor,
                ip: Some(a.peer.ip()),
            };
            events.catalog.event(kind, a.user, who, &summary);
        });
    let router = axum::Router::new()
        .merge(blob::routes())
        .merge(api::routes(&gate))
        .merge(ui::routes(&gate))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app);
    bty_http::request_id::layer(router)
}

/// Run withcache on `listener` until `shutdown` resolves.
pub async fn serve(
    opts: Options,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = build_app(opts)?;
    let router = router(app.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, data_dir = %app.opts.data_dir.display(), "withcache listening");
    }
    let flusher = tokio::spawn(flush_access_every(
        app.store.clone(),
        Duration::from_secs(5),
    ));
    accept_until(&listener, &app, &router, shutdown).await;
    flusher.abort();
    for dl in app.store.downloads() {
        dl.cancelled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    app.store.flush_access()?;
    Ok(())
}

/// Hit counters are kept in memory and saved now and then, not on every
/// request.
async fn flush_access_every(store: Arc<store::Store>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = store.flush_access() {
            tracing::warn!(error = %e, "could not save hit counters");
        }
    }
}

/// Serve connections until `shutdown` resolves, then drop the open ones;
/// bty-http's accept loop caps the connections, the fast path or hyper
/// serves each.
async fn accept_until(
    listener: &tokio::net::TcpListener,
    app: &Arc<App>,
    router: &axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let router = app.opts.http.limit_bodies(router.clone());
    bty_http::serve::accept_until(listener, app.opts.http, shutdown, |stream, conn| {
        fastpath::connection(app.clone(), router.clone(), stream, conn)
    })
    .await;
}
