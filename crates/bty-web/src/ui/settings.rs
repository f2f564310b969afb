//! The Settings page: DHCP guidance for the host the operator reached
//! bty-web at, the effective configuration (secrets hidden), versions and
//! the TFTP sidecar's health.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::health::{tftp_health, Health};
use super::is_htmx;
use super::render::{page_or_partial, Layout, UiError};
use crate::state::AppState;

/// A configuration value and where it came from.
#[derive(Debug, Serialize)]
struct ConfigRow {
    key: String,
    value: String,
    source: &'static str,
    env: String,
}

/// Keys whose values are never shown.
const SECRET_KEYS: [&str; 5] = [
    "password",
    "password_hash",
    "session_secret",
    "token",
    "relay_key",
];

/// Secrets that only the environment sets, listed even when unset.
const SECRET_ENV: [(&str, &str); 5] = [
    ("[admin] password", "BTY_ADMIN_PASSWORD"),
    ("[admin] password_hash", "BTY_ADMIN_PASSWORD_HASH"),
    ("[server] session_secret", "BTY_SERVER_SESSION_SECRET"),
    ("[withcache] token", "BTY_WITHCACHE_TOKEN"),
    ("[pxe] relay_key", "BTY_PXE_RELAY_KEY"),
];

/// Every effective key, sorted, with where its value came from.
fn config_rows(cfg: &crate::Config) -> Vec<ConfigRow> {
    let value = toml::Value::try_from(cfg).unwrap_or(toml::Value::Table(Default::default()));
    let defaults = crate::Config::from_toml_str("")
        .ok()
        .and_then(|d| toml::Value::try_from(&d).ok());
    let mut rows = Vec::new();
    if let toml::Value::Table(t) = &value {
        for (section, v) in t {
            let toml::Value::Table(keys) = v else {
                continue;
            };
            for (k, val) in keys {
                let default = defaults.as_ref().and_then(|d| d.get(section)?.get(k));
                rows.push(config_row(section, k, val, default));
            }
        }
    }
    let unset: Vec<ConfigRow> = SECRET_ENV
        .into_iter()
        .filter(|(k, _)| !rows.iter().any(|r| r.key == *k))
        .map(|(k, env)| ConfigRow {
            key: k.into(),
            value: "(not set)".into(),
            source: "default",
            env: env.into(),
        })
        .collect();
    rows.extend(unset);
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// One key: its value (hidden for a secret) and whether it came from the
/// environment, the default or bty.toml.
fn config_row(
    section: &str,
    k: &str,
    val: &toml::Value,
    default: Option<&toml::Value>,
) -> ConfigRow {
    let env = format!("BTY_{}_{}", section.to_uppercase(), k.to_uppercase());
    let source = if std::env::var(&env).is_ok_and(|v| !v.is_empty()) {
        "environment"
    } else if default == Some(val) {
        "default"
    } else {
        "bty.toml"
    };
    let value = match val {
        _ if SECRET_KEYS.contains(&k) => "(set, not shown)".to_string(),
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    ConfigRow {
        key: format!("[{section}] {k}"),
        value,
        source,
        env,
    }
}

#[derive(Serialize)]
struct SettingsView {
    layout: Layout,
    dhcp: crate::dhcp::DhcpGuidance,
    config: Vec<ConfigRow>,
    tftp: Health,
    version: &'static str,
    schema: u32,
    plan: u32,
    uptime: String,
    open_mode: bool,
    sticks: Vec<crate::db::sticks::Stick>,
    /// The URL `bty-lab usb build --server` should name (this host).
    server_url: String,
    /// The stick key just revoked (`?revoked=ID`).
    revoked: Option<i64>,
    backups: BackupsView,
    /// The archive "Back up now" just wrote (`?backup=NAME`).
    backed_up: Option<String>,
}

/// The Backups section: [`crate::backups::Overview`] with sizes for people.
#[derive(Serialize)]
struct BackupsView {
    #[serde(flatten)]
    overview: crate::backups::Overview,
    /// Each archive's size for people, in the order of `overview.archives`.
    sizes: Vec<String>,
    /// All archives together, for people.
    total: String,
    /// Whether "Back up now" can work (not on PostgreSQL).
    can_run: bool,
}

async fn backups_view(st: &AppState) -> BackupsView {
    let b = st.backups.clone();
    let overview = match tokio::task::spawn_blocking(move || b.overview()).await {
        Ok(o) => o,
        Err(_) => st.backups.overview(),
    };
    let sizes = overview
        .archives
        .iter()
        .map(|a| bty_ui_kit::human_bytes(a.size))
        .collect();
    let total = bty_ui_kit::human_bytes(overview.archives.iter().map(|a| a.size).sum());
    BackupsView {
        can_run: st.cfg.server.database.is_none(),
        overview,
        sizes,
        total,
    }
}

/// `?revoked=ID` after a revocation.
#[derive(Debug, Default, Deserialize)]
pub struct Shown {
    #[serde(default)]
    revoked: Option<i64>,
    #[serde(default)]
    backup: Option<String>,
}

/// Split a `Host` header. The port the operator reached us on beats the
/// configured one (a container maps ports); no port means 80; no header
/// means the configured port.
fn host_and_port(host: &str, configured: u16) -> (String, u16) {
    if host.is_empty() {
        return (String::new(), configured);
    }
    let split = if host.starts_with('[') {
        host.split_once("]:").map(|(h, p)| (format!("{h}]"), p))
    } else {
        host.rsplit_once(':').map(|(h, p)| (h.to_string(), p))
    };
    match split {
        Some((h, p)) => match p.parse() {
            Ok(p) => (h, p),
            Err(_) => (host.to_string(), configured),
        },
        None => (host.to_string(), 80),
    }
}

/// `GET /ui/settings`.
pub async fn show(
    State(st): State<AppState>,
    Query(shown): Query<Shown>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    // The host the operator reached us by is the best guess for DHCP.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (host_only, port) = host_and_port(
        &host,
        st.cfg.listen_addr().map(|a| a.port()).unwrap_or(8080),
    );
    let view = SettingsView {
        layout: Layout::new(&st, "Settings", "settings"),
        dhcp: crate::dhcp::guidance(&host_only, port),
        config: config_rows(&st.cfg),
        tftp: tftp_health().await,
        version: env!("CARGO_PKG_VERSION"),
        schema: crate::db::schema::LATEST,
        plan: bty_proto::PLAN_VERSION,
        uptime: super::render::human_duration(st.started.elapsed().as_secs_f64()),
        open_mode: st.auth.credentials().is_open(),
        sticks: st.domain.sticks().await?,
        server_url: if bty_proto::text::validate_host(&host).is_err() {
            "http://THIS-HOST:PORT".to_string()
        } else {
            format!("http://{host}")
        },
        revoked: shown.revoked,
        backups: backups_view(&st).await,
        backed_up: shown
            .backup
            .filter(|n| crate::backups::archive_time(n).is_some()),
    };
    page_or_partial(is_htmx(&headers), "settings.html", &view, None)
}

/// `POST /ui/settings/sticks/{id}/revoke`: revoke a stick key (the UI's
/// `DELETE /api/sticks/{id}`).
pub async fn revoke_stick(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    let id: i64 = raw
        .parse()
        .map_err(|_| UiError::not_found(format!("No stick key {raw:?}.")))?;
    st.domain.revoke_stick(id).await?;
    Ok(Redirect::to(&format!("/ui/settings?revoked={id}#sticks")).into_response())
}

/// `POST /ui/settings/backups`: "Back up now" (the UI's
/// `POST /api/backups`). A failure shows in the section, as a scheduled
/// one does.
pub async fn back_up_now(State(st): State<AppState>) -> Response {
    match st.backups.run(&st.domain, &st.metrics).await {
        Ok(a) => Redirect::to(&format!("/ui/settings?backup={}#backups", a.name)).into_response(),
        Err(_) => Redirect::to("/ui/settings#backups").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_port() {
        assert_eq!(
            host_and_port("10.0.0.5:9000", 8080),
            ("10.0.0.5".into(), 9000)
        );
        assert_eq!(host_and_port("bty.lab", 8080), ("bty.lab".into(), 80));
        assert_eq!(
            host_and_port("[fd00::1]:8080", 1),
            ("[fd00::1]".into(), 8080)
        );
        assert_eq!(host_and_port("", 8080), ("".into(), 8080));
    }

    #[test]
    fn secrets_never_shown() {
        let cfg = crate::Config::from_toml_str(
            "[admin]\npassword = \"hunter2\"\n[server]\nsession_secret = \"s3cr3t\"\nlisten = \"127.0.0.1:9\"\n\
             [withcache]\nurl = \"http://wc:3000\"\ntoken = \"service-token-0123456789\"\n\
             [pxe]\nrelay_key = \"relay-key-0123456789\"\n",
        )
        .unwrap();
        let rows = config_rows(&cfg);
        let all = format!("{rows:?}");
        assert!(
            !all.contains("hunter2")
                && !all.contains("s3cr3t")
                && !all.contains("service-token")
                && !all.contains("relay-key"),
            "{all}"
        );
        assert!(
            !format!("{cfg:?}").contains("relay-key"),
            "the relay key is not in the configuration's Debug"
        );
        let listen = rows.iter().find(|r| r.key == "[server] listen").unwrap();
        assert_eq!(listen.source, "bty.toml");
        let kernel = rows.iter().find(|r| r.key == "[boot] kernel").unwrap();
        assert_eq!(kernel.source, "default");
    }
}
