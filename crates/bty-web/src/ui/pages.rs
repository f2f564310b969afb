//! Dashboard, Images, Events and Settings.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::{ImageFormat, Mac};
use serde::{Deserialize, Serialize};

use super::data::{self, ActiveFlash, Counts, EventQuery, EventView};
use super::is_htmx;
use super::render::{page_or_partial, Layout, UiError};
use crate::catalog::{Image, SourceStatus};
use crate::domain::images::{AddError, NewImage};
use crate::domain::DomainError;
use crate::state::AppState;

/// A health line of the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// What.
    pub name: String,
    /// `ok`, `warn`, `bad` or `off`.
    pub level: &'static str,
    /// Details.
    pub text: String,
    /// Where to look.
    pub link: Option<String>,
}

fn source_health(name: &str, s: &SourceStatus, link: Option<String>) -> Health {
    let (level, text) = match s {
        SourceStatus::Off => ("off", "not configured".to_string()),
        SourceStatus::Pending => ("warn", "not read yet".to_string()),
        SourceStatus::Ok { entries, skipped, .. } => (
            if *skipped > 0 { "warn" } else { "ok" },
            if *skipped > 0 {
                format!("{entries} images ({skipped} invalid entries skipped)")
            } else {
                format!("{entries} images")
            },
        ),
        SourceStatus::Unreachable { error, entries, since } => (
            "bad",
            format!("unreachable since {since}: {error}; still serving {entries} images from the last good read"),
        ),
    };
    Health {
        name: name.into(),
        level,
        text,
        link,
    }
}

/// Where the TFTP sidecar is probed: `BTY_TFTP_PROBE` (`host:port`), else
/// `127.0.0.1:69` (the sidecar runs on the bty host).
fn tftp_target() -> String {
    std::env::var("BTY_TFTP_PROBE")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "127.0.0.1:69".into())
}

/// One TFTP read request for `ipxe.efi`: DATA means serving, ERROR means
/// up but missing the file, silence means down. Cached for 30 s; a page
/// waits at most 300 ms for a fresh probe (a silent target takes 0.8 s to
/// time out, which then finishes in the background and fills the cache).
async fn tftp_health() -> Health {
    static CACHE: Mutex<Option<(Instant, Health)>> = Mutex::new(None);
    let cached = CACHE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some((at, h)) = &cached {
        if at.elapsed() < Duration::from_secs(30) {
            return h.clone();
        }
    }
    let probe = tokio::spawn(async {
        let target = tftp_target();
        let (level, text) = match probe_tftp(&target).await {
            Ok(Some(msg)) => ("warn", format!("{target} answers but: {msg}")),
            Ok(None) => ("ok", format!("{target} serves ipxe.efi")),
            Err(e) => ("bad", format!("{target}: {e}")),
        };
        let h = Health {
            name: "TFTP sidecar".into(),
            level,
            text,
            link: None,
        };
        *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), h.clone()));
        h
    });
    match tokio::time::timeout(Duration::from_millis(300), probe).await {
        Ok(Ok(h)) => h,
        _ => cached.map(|(_, h)| h).unwrap_or_else(|| Health {
            name: "TFTP sidecar".into(),
            level: "warn",
            text: format!(
                "{}: no answer yet, still checking (reload in a second)",
                tftp_target()
            ),
            link: None,
        }),
    }
}

async fn probe_tftp(target: &str) -> Result<Option<String>, String> {
    let addr: SocketAddr = target
        .to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or("not an address")?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let mut rrq = vec![0u8, 1];
    rrq.extend_from_slice(b"ipxe.efi\0octet\0");
    sock.send_to(&rrq, addr).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 600];
    let (n, from) = tokio::time::timeout(Duration::from_millis(800), sock.recv_from(&mut buf))
        .await
        .map_err(|_| "no answer within 0.8 s".to_string())?
        .map_err(|e| e.to_string())?;
    match (n >= 4, buf[1]) {
        (true, 3) => {
            // Stop the transfer politely so the server does not retransmit.
            let _ = sock
                .send_to(&[0, 5, 0, 0, b'p', b'r', b'o', b'b', b'e', 0], from)
                .await;
            Ok(None)
        }
        (true, 5) => Ok(Some(format!(
            "error {}",
            String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
        ))),
        (true, 6) => {
            let _ = sock
                .send_to(&[0, 5, 0, 0, b'p', b'r', b'o', b'b', b'e', 0], from)
                .await;
            Ok(None)
        }
        _ => Ok(Some("an answer that is not TFTP".into())),
    }
}

#[derive(Serialize)]
struct DashboardView {
    layout: Layout,
    counts: Counts,
    flashes: Vec<ActiveFlash>,
    events: Vec<EventView>,
    health: Vec<Health>,
}

/// `GET /ui/dashboard`.
pub async fn dashboard(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let (counts, flashes, events, unacked) = st
        .db
        .call(|c| -> rusqlite::Result<_> {
            Ok((
                data::counts(c)?,
                data::active_flashes(c, 50)?,
                data::events(
                    c,
                    &EventQuery {
                        limit: 10,
                        ..Default::default()
                    },
                )?,
                data::unacked_problems(c)?,
            ))
        })
        .await??;
    let snap = st.catalog.snapshot();
    let wc = st
        .catalog
        .withcache_url()
        .map(|u| format!("{u}/ui/catalog"));
    let mut health = vec![
        source_health("withcache", &snap.withcache, wc),
        source_health("Static catalog", &snap.static_file, None),
        tftp_health().await,
    ];
    health.push(Health {
        name: "Failures".into(),
        level: if unacked > 0 { "warn" } else { "ok" },
        text: if unacked > 0 {
            format!("{unacked} failure event(s) not acknowledged")
        } else {
            "no unacknowledged failures".into()
        },
        link: Some("/ui/events?only=failed".into()),
    });
    let view = DashboardView {
        layout: Layout::new(&st, "Dashboard", "dashboard"),
        counts,
        flashes,
        events,
        health,
    };
    page_or_partial(is_htmx(&headers), "dashboard.html", &view, None)
}

#[derive(Serialize)]
struct ImagesView {
    layout: Layout,
    images: Vec<Image>,
    withcache_url: Option<String>,
    static_file: Option<String>,
    health: Vec<Health>,
    problems: Vec<String>,
    notice: Option<String>,
    /// A refused delete.
    error: Option<String>,
    /// withcache is configured: the Add form is shown.
    can_add: bool,
    form: ImageForm,
    errors: BTreeMap<&'static str, String>,
    formats: Vec<&'static str>,
}

/// `GET /ui/images` query: the notice after a redirect.
#[derive(Deserialize)]
pub struct ImagesQuery {
    refreshed: Option<String>,
    added: Option<String>,
    deleted: Option<String>,
}

/// The Add image form as typed.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct ImageForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    format: String,
}

/// What one rendering of the Images page says besides the catalog.
#[derive(Default)]
struct ImagesPage {
    notice: Option<String>,
    error: Option<String>,
    form: ImageForm,
    errors: BTreeMap<&'static str, String>,
}

fn images_page(
    st: &AppState,
    hx: bool,
    status: StatusCode,
    page: ImagesPage,
) -> Result<Response, UiError> {
    let snap = st.catalog.snapshot();
    let view = ImagesView {
        layout: Layout::new(st, "Images", "images"),
        images: snap.images.values().cloned().collect(),
        withcache_url: st.catalog.withcache_url().map(str::to_string),
        static_file: st.catalog.file().map(|p| p.display().to_string()),
        health: vec![
            source_health("withcache", &snap.withcache, None),
            source_health("Static catalog", &snap.static_file, None),
        ],
        problems: snap.problems.clone(),
        notice: page.notice,
        error: page.error,
        can_add: st.catalog.withcache().is_some(),
        form: page.form,
        errors: page.errors,
        formats: ImageFormat::ALL.iter().map(|f| f.as_str()).collect(),
    };
    let mut r = page_or_partial(hx, "images.html", &view, None)?;
    *r.status_mut() = status;
    Ok(r)
}

/// Only names that pass the catalog's rules are echoed in a notice.
fn valid_image_name(n: Option<&str>) -> Option<&str> {
    n.filter(|n| bty_proto::text::validate_image_name(n).is_ok())
}

/// `GET /ui/images`.
pub async fn images(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ImagesQuery>,
) -> Result<Response, UiError> {
    let notice = if let Some(n) = valid_image_name(q.added.as_deref()) {
        Some(format!(
            "Image {n} added: withcache is downloading it, and machines can be assigned it now."
        ))
    } else if let Some(n) = valid_image_name(q.deleted.as_deref()) {
        Some(format!("Image {n} removed from the catalog."))
    } else {
        q.refreshed
            .is_some()
            .then(|| "Catalog re-read.".to_string())
    };
    let page = ImagesPage {
        notice,
        ..Default::default()
    };
    images_page(&st, is_htmx(&headers), StatusCode::OK, page)
}

/// `POST /ui/images/refresh`: re-read the file and poll withcache now.
pub async fn refresh_images(State(st): State<AppState>) -> Response {
    st.catalog.refresh(true, true).await;
    Redirect::to("/ui/images?refreshed=1").into_response()
}

/// `POST /ui/images`: the Add image form, through [`crate::domain::images::add`]
/// (the REST API's path). Bad input shows the page again with each
/// field's message and the typed values; nothing is saved.
pub async fn add_image(
    State(st): State<AppState>,
    form: Result<Form<ImageForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(f) = form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let size = match f.size.trim() {
        "" => Ok(None),
        s => s.parse::<u64>().map(Some).map_err(|_| {
            "size: must be a whole number of bytes greater than 0 (or empty)".to_string()
        }),
    };
    let new = NewImage {
        name: f.name.clone(),
        url: f.url.clone(),
        sha256: Some(f.sha256.clone()),
        size: size.clone().unwrap_or(None),
        format: Some(f.format.clone()),
    };
    let result = match size {
        // Report the size together with every other field's problem.
        Err(msg) => {
            let mut errors = match st.domain.validate_image(&new) {
                Ok(_) => BTreeMap::new(),
                Err(e) => e,
            };
            errors.insert("size", msg);
            Err(AddError::Fields(errors))
        }
        Ok(_) => st.domain.add_image(&new).await,
    };
    match result {
        Ok(img) => Ok(Redirect::to(&format!(
            "/ui/images?added={}",
            img.entry.name.replace('+', "%2B")
        ))
        .into_response()),
        Err(AddError::Fields(errors)) => images_page(
            &st,
            false,
            StatusCode::UNPROCESSABLE_ENTITY,
            ImagesPage {
                form: f,
                errors,
                ..Default::default()
            },
        ),
        Err(e @ (AddError::NoWithcache(_) | AddError::Withcache(_))) => {
            let mut errors = BTreeMap::new();
            errors.insert("form", e.reason());
            images_page(
                &st,
                false,
                UiError::from(DomainError::from(e)).status,
                ImagesPage {
                    form: f,
                    errors,
                    ..Default::default()
                },
            )
        }
    }
}

/// `POST /ui/images/{name}/delete`: remove a withcache-sourced image.
pub async fn delete_image(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    match st.domain.remove_image(&name).await {
        Ok(()) => Ok(
            Redirect::to(&format!("/ui/images?deleted={}", name.replace('+', "%2B")))
                .into_response(),
        ),
        Err(e) => {
            let page = ImagesPage {
                error: Some(format!("Nothing was removed: {}", e.message())),
                ..Default::default()
            };
            images_page(&st, false, UiError::from(DomainError::from(e)).status, page)
        }
    }
}

/// `GET /ui/events` query.
#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    only: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    acked: Option<String>,
}

#[derive(Serialize)]
struct EventsView {
    layout: Layout,
    events: Vec<EventView>,
    q: String,
    only: String,
    mac: String,
    before: Option<i64>,
    older: Option<i64>,
    error: Option<String>,
    notice: Option<String>,
    return_to: String,
}

/// Page size of the Events page.
const EVENTS_PAGE: u32 = 50;

/// `GET /ui/events`.
pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(p): Query<EventsParams>,
) -> Result<Response, UiError> {
    let mut error = None;
    let mac = match p.mac.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => match m.parse::<Mac>() {
            Ok(m) => Some(m.to_string()),
            Err(e) => {
                error = Some(format!("MAC filter {m:?}: {e}; showing all machines"));
                None
            }
        },
    };
    let only = match p.only.as_deref() {
        Some(o @ ("failed" | "unacked")) => o.to_string(),
        _ => String::new(),
    };
    let query = EventQuery {
        q: p.q.clone().unwrap_or_default().chars().take(100).collect(),
        only: only.clone(),
        mac: mac.clone(),
        before_id: p.before,
        limit: EVENTS_PAGE + 1,
    };
    let mut evs = st.db.call(move |c| data::events(c, &query)).await??;
    let older = if evs.len() as u32 > EVENTS_PAGE {
        evs.truncate(EVENTS_PAGE as usize);
        evs.last().map(|e| e.event.id)
    } else {
        None
    };
    let notice = p
        .acked
        .as_deref()
        .and_then(|n| n.parse::<i64>().ok())
        .map(|n| format!("{} event(s) changed.", n.abs()));
    let view = EventsView {
        layout: Layout::new(&st, "Events", "events"),
        events: evs,
        q: p.q.unwrap_or_default(),
        only,
        mac: mac.unwrap_or_default(),
        before: p.before,
        older,
        error,
        notice,
        return_to: uri
            .path_and_query()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
    };
    page_or_partial(is_htmx(&headers), "events.html", &view, None)
}

/// `POST /ui/events/ack`: `id` repeated, `action` = `ack` or `unack`,
/// `return_to` (a local Events URL).
pub async fn ack_events(
    State(st): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(pairs) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let mut ids = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "id") {
        ids.push(v.parse::<i64>().map_err(|_| {
            UiError::bad_request(format!(
                "event id {v:?} is not a number; nothing was changed"
            ))
        })?);
    }
    if ids.is_empty() {
        return Err(UiError::bad_request(
            "Select at least one event (the check boxes in the first column); nothing was changed.",
        ));
    }
    let on = match pairs
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.as_str())
    {
        Some("ack") | None => true,
        Some("unack") => false,
        Some(other) => {
            return Err(UiError::bad_request(format!(
                "unknown action {other:?} (ack or unack); nothing was changed"
            )))
        }
    };
    let now = crate::db::now();
    let n = st.db.call(move |c| data::ack(c, &ids, on, &now)).await??;
    let back = pairs
        .iter()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.as_str())
        .filter(|v| v.starts_with("/ui/events") && !v.contains("//"))
        .unwrap_or("/ui/events");
    let back = strip_param(back, "acked");
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}acked={n}")).into_response())
}

fn strip_param(url: &str, name: &str) -> String {
    match url.split_once('?') {
        None => url.to_string(),
        Some((path, q)) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|kv| !kv.starts_with(&format!("{name}=")))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

/// A configuration value and where it came from.
#[derive(Debug, Serialize)]
struct ConfigRow {
    key: String,
    value: String,
    source: &'static str,
    env: String,
}

fn config_rows(cfg: &crate::Config) -> Vec<ConfigRow> {
    let defaults = crate::Config::from_toml_str("").ok();
    let value = toml::Value::try_from(cfg).unwrap_or(toml::Value::Table(Default::default()));
    let dvalue = defaults.and_then(|d| toml::Value::try_from(&d).ok());
    let mut rows = Vec::new();
    let secret = ["password", "password_hash", "session_secret", "token"];
    if let toml::Value::Table(t) = &value {
        for (section, v) in t {
            let toml::Value::Table(keys) = v else {
                continue;
            };
            for (k, val) in keys {
                let env = format!("BTY_{}_{}", section.to_uppercase(), k.to_uppercase());
                let from_env = std::env::var(&env).is_ok_and(|v| !v.is_empty());
                let default = dvalue
                    .as_ref()
                    .and_then(|d| d.get(section))
                    .and_then(|s| s.get(k));
                let source = if from_env {
                    "environment"
                } else if default == Some(val) {
                    "default"
                } else {
                    "bty.toml"
                };
                let shown = if secret.contains(&k.as_str()) {
                    "(set, not shown)".to_string()
                } else {
                    match val {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                };
                rows.push(ConfigRow {
                    key: format!("[{section}] {k}"),
                    value: shown,
                    source,
                    env,
                });
            }
        }
    }
    for (k, env) in [
        ("[admin] password", "BTY_ADMIN_PASSWORD"),
        ("[admin] password_hash", "BTY_ADMIN_PASSWORD_HASH"),
        ("[server] session_secret", "BTY_SERVER_SESSION_SECRET"),
        ("[withcache] token", "BTY_WITHCACHE_TOKEN"),
    ] {
        if !rows.iter().any(|r| r.key == k) {
            rows.push(ConfigRow {
                key: k.into(),
                value: "(not set)".into(),
                source: "default",
                env: env.into(),
            });
        }
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
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
pub async fn settings(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, UiError> {
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
    };
    page_or_partial(is_htmx(&headers), "settings.html", &view, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TFTP responder written here: answers the first request with
    /// `reply` (or stays silent).
    async fn responder(reply: Option<Vec<u8>>) -> String {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 600];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"\0\x01ipxe.efi\0octet\0");
            if let Some(r) = reply {
                sock.send_to(&r, from).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn tftp_probe_reads_the_answer() {
        let data = responder(Some(b"\0\x03\0\x01MZ...".to_vec())).await;
        assert_eq!(probe_tftp(&data).await, Ok(None));
        let missing = responder(Some(b"\0\x05\0\x01File not found\0".to_vec())).await;
        assert_eq!(
            probe_tftp(&missing).await,
            Ok(Some("error File not found".into()))
        );
        let silent = responder(None).await;
        assert_eq!(
            probe_tftp(&silent).await,
            Err("no answer within 0.8 s".into())
        );
        assert!(probe_tftp("not an address").await.is_err());
    }

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
    fn strip() {
        assert_eq!(
            strip_param("/ui/events?q=a&acked=3", "acked"),
            "/ui/events?q=a"
        );
        assert_eq!(strip_param("/ui/events?acked=3", "acked"), "/ui/events");
    }

    #[test]
    fn secrets_never_shown() {
        let cfg = crate::Config::from_toml_str(
            "[admin]\npassword = \"hunter2\"\n[server]\nsession_secret = \"s3cr3t\"\nlisten = \"127.0.0.1:9\"\n\
             [withcache]\nurl = \"http://wc:3000\"\ntoken = \"service-token-0123456789\"\n",
        )
        .unwrap();
        let rows = config_rows(&cfg);
        let all = format!("{rows:?}");
        assert!(
            !all.contains("hunter2") && !all.contains("s3cr3t") && !all.contains("service-token"),
            "{all}"
        );
        let listen = rows.iter().find(|r| r.key == "[server] listen").unwrap();
        assert_eq!(listen.source, "bty.toml");
        let kernel = rows.iter().find(|r| r.key == "[boot] kernel").unwrap();
        assert_eq!(kernel.source, "default");
    }
}
