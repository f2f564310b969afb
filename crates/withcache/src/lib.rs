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
//! Module map: [`db`] (SQLite), [`store`] (blobs, quota, single-flight),
//! `fetch` (the downloader), `blob` (serving, ranges), `fastpath`
//! (sendfile for cached blobs), `api` (JSON), `ui` (HTML).

#![deny(missing_docs)]

mod api;
mod blob;
pub mod db;
mod fastpath;
mod fetch;
pub mod store;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

pub use store::FetchConfig;

/// How a withcache instance runs. Build with [`Options::from_env`] and
/// adjust.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the database, blobs and temp files live.
    pub data_dir: PathBuf,
    /// Disk quota for blobs; `None` = unlimited.
    pub max_bytes: Option<u64>,
    /// Admin account name (`WITHCACHE_ADMIN_USER`, default `bty-lab`).
    pub admin_user: String,
    /// Plain admin password (`WITHCACHE_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
    /// argon2id PHC hash of the admin password
    /// (`WITHCACHE_ADMIN_PASSWORD_HASH`); wins over the plain one.
    pub admin_password_hash: Option<String>,
    /// Session signing secret (`WITHCACHE_SESSION_SECRET`); unset =
    /// `<data_dir>/session-secret`, created on first start.
    pub session_secret: Option<String>,
    /// Download tunables.
    pub fetch: FetchConfig,
    /// Serve cached blobs with `sendfile(2)` on the raw connection
    /// (default on; off forces every request through the generic path).
    pub sendfile: bool,
    /// Service token (`WITHCACHE_API_TOKEN`): a request to the admin API
    /// with `Authorization: Bearer <token>` is let in without a login.
    /// bty-web uses it to add catalog entries. The UI does not take it.
    pub api_token: Option<bty_auth::ServiceToken>,
}

impl Options {
    /// Defaults plus the `WITHCACHE_*` environment.
    pub fn from_env(data_dir: PathBuf) -> Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Options {
            data_dir,
            max_bytes: None,
            admin_user: var("WITHCACHE_ADMIN_USER")
                .unwrap_or_else(|| bty_auth::DEFAULT_USER.to_string()),
            admin_password: var("WITHCACHE_ADMIN_PASSWORD"),
            admin_password_hash: var("WITHCACHE_ADMIN_PASSWORD_HASH"),
            session_secret: var("WITHCACHE_SESSION_SECRET"),
            fetch: FetchConfig::default(),
            sendfile: true,
            api_token: var("WITHCACHE_API_TOKEN").map(bty_auth::ServiceToken::new),
        }
    }
}

/// Parse a size with an optional 1024-based suffix: `500M`, `1.5T`, `42`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 500M, 20G or 1.5T"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

/// Everything that can go wrong, mapped to HTTP statuses in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The quota cannot make room.
    #[error("{0}")]
    Full(String),
    /// The origin failed.
    #[error("{0}")]
    Origin(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Origin(_) => StatusCode::BAD_GATEWAY,
            Error::Db(_) | Error::Io { .. } | Error::Config(_) => {
                tracing::error!(error = %self, "internal error");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "internal error; see the withcache log\n",
                )
                    .into_response();
            }
        };
        (
            status,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// Shared state of a running instance.
pub(crate) struct App {
    pub store: Arc<store::Store>,
    pub auth: Arc<bty_auth::Auth>,
    pub opts: Options,
}

impl App {
    pub fn db(&self) -> &db::Db {
        self.store.db()
    }

    /// Record an event; failures are logged, never fatal.
    pub fn event(
        &self,
        kind: &str,
        subject: &str,
        actor: &str,
        ip: Option<SocketAddr>,
        summary: &str,
    ) {
        let ip = ip.map(|a| a.ip().to_canonical().to_string());
        if let Err(e) = self
            .db()
            .event(kind, subject, actor, ip.as_deref(), summary)
        {
            tracing::warn!(error = %e, kind, "could not record event");
        }
    }
}

fn build_app(opts: Options) -> anyhow::Result<Arc<App>> {
    use anyhow::Context;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data dir {}", opts.data_dir.display()))?;
    let db = Arc::new(
        db::Db::open(&opts.data_dir.join("withcache.db")).context("opening the database")?,
    );
    let store = Arc::new(
        store::Store::open(&opts.data_dir, db, opts.max_bytes, opts.fetch.clone())
            .context("opening the blob store")?,
    );
    let creds = bty_auth::Credentials::new(
        opts.admin_user.clone(),
        opts.admin_password.clone(),
        opts.admin_password_hash.clone(),
    )
    .context("setting up the admin account")?;
    if creds.is_open() {
        tracing::warn!(
            "no WITHCACHE_ADMIN_PASSWORD or WITHCACHE_ADMIN_PASSWORD_HASH set: the catalog API \
             and the UI are OPEN to anyone who can reach this port"
        );
    } else if creds.uses_default_password() {
        tracing::warn!("the admin password is the default one; change it");
    }
    if let Some(t) = &opts.api_token {
        t.check().context("WITHCACHE_API_TOKEN")?;
        tracing::info!(
            "a service token is set: the admin API also accepts it as Authorization: Bearer"
        );
    }
    let sessions = match &opts.session_secret {
        Some(s) => bty_auth::SessionKey::from_secret(s.as_bytes()),
        None => bty_auth::SessionKey::load_or_create(&opts.data_dir.join("session-secret"))
            .context("loading the session secret")?,
    };
    let auth = bty_auth::Auth::new(creds, sessions, "withcache_session");
    Ok(Arc::new(App { store, auth, opts }))
}

fn router(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .merge(blob::routes())
        .merge(api::routes(app.clone()))
        .merge(ui::routes(app.clone()))
        .with_state(app)
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
    let flusher = {
        let store = app.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = store.flush_access() {
                    tracing::warn!(error = %e, "could not save hit counters");
                }
            }
        })
    };
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                conns.spawn(fastpath::connection(app.clone(), router.clone(), stream, peer));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    flusher.abort();
    for dl in app.store.downloads() {
        dl.cancelled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    app.store.flush_access()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("42").unwrap(), 42);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size(" 2G ").unwrap(), 2 << 30);
        for bad in ["", "G", "-1G", "0", "1X", "nan"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
