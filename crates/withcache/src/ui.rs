//! The operator UI: a few server-rendered pages with plain forms (they work
//! without JavaScript). Catalog progress refreshes itself with a
//! meta-refresh while downloads run. Templates are compiled in; nothing is
//! loaded from a CDN.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, Form, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::header::SET_COOKIE;
use http::StatusCode;
use minijinja::{context, Environment};
use serde::Deserialize;

use crate::api::{self, EntryBody};
use crate::{App, Error};

const LAYOUT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<title>withcache · {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1d2329;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header b{color:#fff}
main{padding:1rem;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #dde1e6;padding:.35rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
td.url{word-break:break-all;max-width:28rem}
.pill{padding:.1rem .45rem;border-radius:.6rem;font-size:.8rem;background:#e6e9ed}
.cached{background:#cdeccf}.downloading,.queued{background:#fff0c2}
progress{width:8rem}form.inline{display:inline}
.err{background:#fde2e2;padding:.5rem;border-radius:.3rem}
fieldset{border:1px solid #dde1e6;background:#fff;margin:1rem 0}
input[type=text],input[type=password]{width:18rem}
</style></head><body>
<header><b>withcache</b>
<a href="/ui/catalog">Catalog</a><a href="/ui/misses">Misses</a>
<a href="/ui/events">Events</a><a href="/ui/settings">Settings</a>
{% if logged_in %}<form class="inline" method="post" action="/ui/logout"><button>Log out</button></form>{% endif %}
</header><main>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% block body %}{% endblock %}
</main></body></html>"#;

const LOGIN: &str = r#"{% extends "layout.html" %}{% block body %}
<h1>Log in</h1>
<form method="post" action="/ui/login">
<p><label>User <input type="text" name="user" value="{{ user }}" autocomplete="username"></label></p>
<p><label>Password <input type="password" name="password" autocomplete="current-password"></label></p>
<p><button>Log in</button></p></form>{% endblock %}"#;

const CATALOG: &str = r#"{% extends "layout.html" %}{% block body %}
<h1>Catalog</h1>
<p>Stored {{ used }} bytes{% if max %} of {{ max }}{% endif %}; {{ active }} download(s) running.</p>
<table><tr><th>Name</th><th>Source</th><th>Format</th><th>Size</th><th>State</th><th></th></tr>
{% for e in entries %}<tr>
<td>{{ e.name }}{% if e.pinned %} <span class="pill">pinned</span>{% endif %}</td>
<td class="url">{{ e.src }}</td><td>{{ e.format or "" }}</td>
<td>{{ e.total or e.size or "" }}</td>
<td><span class="pill {{ e.state }}">{{ e.state }}</span>
{% if e.state == "downloading" %}{% if e.total %}<progress max="{{ e.total }}" value="{{ e.written }}"></progress>{% endif %} {{ e.written }} B{% endif %}</td>
<td><form class="inline" method="post" action="/ui/catalog/download"><input type="hidden" name="name" value="{{ e.name }}">
<button>{% if e.state == "cached" %}Redownload{% else %}Download{% endif %}</button></form>
<form class="inline" method="post" action="/ui/catalog/delete"><input type="hidden" name="name" value="{{ e.name }}"><button>Delete</button></form></td>
</tr>{% else %}<tr><td colspan="6">No entries yet.</td></tr>{% endfor %}
</table>
<fieldset><legend>Add an entry</legend>
<form method="post" action="/ui/catalog/add">
<p><label>Name <input type="text" name="name" required></label>
<label>Source URL <input type="text" name="src" required></label></p>
<p><label>sha256 <input type="text" name="sha256"></label>
<label>Size <input type="text" name="size"></label>
<label><input type="checkbox" name="pinned" value="on"> pinned</label></p>
<p><button>Add</button></p></form></fieldset>
<fieldset><legend>Import a catalog (version = 1 TOML)</legend>
<form method="post" action="/ui/catalog/import"><label>URL <input type="text" name="url" required></label>
<button>Import (merge)</button></form></fieldset>
{% endblock %}"#;

const MISSES: &str = r#"{% extends "layout.html" %}{% block body %}
<h1>Misses</h1>
<p>URLs clients asked for that are neither cached nor in the catalog.</p>
<table><tr><th>URL</th><th>Count</th><th>Last seen</th><th></th></tr>
{% for m in misses %}<tr><td class="url">{{ m.src }}</td><td>{{ m.count }}</td><td>{{ m.last_seen }}</td>
<td><form class="inline" method="post" action="/ui/misses/fetch"><input type="hidden" name="url" value="{{ m.src }}"><button>Fetch</button></form>
<form class="inline" method="post" action="/ui/misses/dismiss"><input type="hidden" name="url" value="{{ m.src }}"><button>Dismiss</button></form></td></tr>
{% else %}<tr><td colspan="4">No misses.</td></tr>{% endfor %}</table>{% endblock %}"#;

const EVENTS: &str = r#"{% extends "layout.html" %}{% block body %}
<h1>Events</h1>
<table><tr><th>Time</th><th>Kind</th><th>Subject</th><th>Actor</th><th>Address</th><th>Summary</th></tr>
{% for e in events %}<tr><td>{{ e.ts }}</td><td>{{ e.kind }}</td><td class="url">{{ e.subject }}</td>
<td>{{ e.actor }}</td><td>{{ e.source_ip or "" }}</td><td>{{ e.summary }}</td></tr>
{% else %}<tr><td colspan="6">No events.</td></tr>{% endfor %}</table>{% endblock %}"#;

const SETTINGS: &str = r#"{% extends "layout.html" %}{% block body %}
<h1>Settings</h1>
<table>
<tr><th>Version</th><td>{{ version }}</td></tr>
<tr><th>Data directory</th><td>{{ data_dir }}</td></tr>
<tr><th>Quota (--max-bytes)</th><td>{{ max or "unlimited" }}</td></tr>
<tr><th>Stored / reserved bytes</th><td>{{ used }} / {{ reserved }}</td></tr>
<tr><th>Concurrent downloads</th><td>{{ max_downloads }}</td></tr>
<tr><th>Admin user</th><td>{{ admin }}</td></tr>
<tr><th>Authentication</th><td>{{ auth }}</td></tr>
</table>{% endblock %}"#;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("layout.html", LAYOUT),
            ("login.html", LOGIN),
            ("catalog.html", CATALOG),
            ("misses.html", MISSES),
            ("events.html", EVENTS),
            ("settings.html", SETTINGS),
        ] {
            env.add_template(name, src)
                .expect("built-in templates parse");
        }
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering failed; see the log\n",
            )
                .into_response()
        }
    }
}

pub(crate) fn routes(app: Arc<App>) -> axum::Router<Arc<App>> {
    let guarded = axum::Router::new()
        .route("/ui/catalog", get(catalog))
        .route("/ui/catalog/add", post(catalog_add))
        .route("/ui/catalog/download", post(catalog_download))
        .route("/ui/catalog/delete", post(catalog_delete))
        .route("/ui/catalog/import", post(catalog_import))
        .route("/ui/misses", get(misses))
        .route("/ui/misses/fetch", post(misses_fetch))
        .route("/ui/misses/dismiss", post(misses_dismiss))
        .route("/ui/events", get(events))
        .route("/ui/settings", get(settings))
        .route_layer(axum::middleware::from_fn_with_state(app, require_session));
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui", get(|| async { Redirect::to("/ui/catalog") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .merge(guarded)
}

async fn require_session(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response();
    }
    match app.auth.authorize(peer.ip(), req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(_) => Redirect::to("/ui/login").into_response(),
    }
}

fn logged_in(app: &App) -> bool {
    !app.auth.credentials().is_open()
}

async fn login_page(State(app): State<Arc<App>>) -> Response {
    render(
        "login.html",
        context! { title => "Log in", user => app.auth.credentials().user(), logged_in => false },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    if app.auth.credentials().is_open() {
        return Redirect::to("/ui/catalog").into_response();
    }
    match app.auth.login(peer.ip(), &f.user, &f.password).await {
        Ok(cookie) => {
            app.event(
                "auth.login.succeeded",
                &f.user,
                "operator",
                Some(peer),
                "logged in",
            );
            ([(SET_COOKIE, cookie)], Redirect::to("/ui/catalog")).into_response()
        }
        Err(e) => {
            app.event(
                "auth.login.failed",
                &f.user,
                "client",
                Some(peer),
                &e.to_string(),
            );
            let mut resp = render(
                "login.html",
                context! { title => "Log in", user => f.user, error => e.to_string(), logged_in => false },
            );
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
    }
}

async fn logout(State(app): State<Arc<App>>) -> Response {
    (
        [(SET_COOKIE, app.auth.logout_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct ErrorQuery {
    error: Option<String>,
}

async fn catalog(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<ErrorQuery>,
) -> Result<Response, Error> {
    let entries: Vec<_> = app
        .db()
        .entries()?
        .into_iter()
        .map(|r| api::entry_state(&app, r))
        .collect();
    let active = app.store.downloads().len();
    let (used, _, max) = app.store.usage();
    Ok(render(
        "catalog.html",
        context! { title => "Catalog", entries, active, used, max, error => q.error,
        refresh => if active > 0 { Some(2) } else { None },
        logged_in => logged_in(&app) },
    ))
}

fn back(page: &str, r: Result<(), Error>) -> Response {
    match r {
        Ok(()) => Redirect::to(page).into_response(),
        Err(e) => {
            let msg: String = e.to_string();
            let q = serde_urlencoded_escape(&msg);
            Redirect::to(&format!("{page}?error={q}")).into_response()
        }
    }
}

/// Percent-encode for a query value (the error text after a failed form).
fn serde_urlencoded_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.trim().bytes().take(500) {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct AddForm {
    name: String,
    src: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    size: String,
    pinned: Option<String>,
}

async fn catalog_add(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<AddForm>,
) -> Response {
    let r = (|| {
        let size =
            match f.size.trim() {
                "" => None,
                s => Some(s.parse::<u64>().map_err(|_| {
                    Error::BadRequest("size: must be a whole number of bytes".into())
                })?),
            };
        let body = EntryBody {
            name: Some(f.name.trim().to_string()),
            src: f.src.trim().to_string(),
            sha256: Some(f.sha256.trim().to_string()),
            size,
            format: None,
            arch: None,
            description: None,
            pinned: Some(f.pinned.is_some()),
        };
        let row = crate::api::entry_from_body_pub(f.name.trim().to_string(), body)?;
        api::add_entry(&app, &row, peer)
    })();
    back("/ui/catalog", r)
}

#[derive(Deserialize)]
struct NameForm {
    name: String,
}

async fn catalog_download(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let force = app
        .db()
        .entry(&f.name)
        .ok()
        .flatten()
        .is_some_and(|e| app.store.lookup(&e.entry.src).is_some());
    back(
        "/ui/catalog",
        api::download_by_name(&app, &f.name, force, peer).map(|_| ()),
    )
}

async fn catalog_delete(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<NameForm>,
) -> Response {
    let r = app.db().delete_entry(&f.name).map(|deleted| {
        if deleted {
            app.event(
                "catalog.entry.deleted",
                &f.name,
                "operator",
                Some(peer),
                "deleted",
            );
        }
    });
    back("/ui/catalog", r)
}

#[derive(Deserialize)]
struct UrlForm {
    url: String,
}

async fn catalog_import(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    let r = async {
        let text = api::fetch_catalog(&app, f.url.trim()).await?;
        let report = api::merge_catalog(&app, &text)?;
        app.event(
            "catalog.imported",
            f.url.trim(),
            "operator",
            Some(peer),
            &format!(
                "{} added, {} updated, {} operator entries kept, {} rejected",
                report.added.len(),
                report.updated.len(),
                report.kept_operator.len(),
                report.rejected.len()
            ),
        );
        Ok(())
    }
    .await;
    back("/ui/catalog", r)
}

async fn misses(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<ErrorQuery>,
) -> Result<Response, Error> {
    let misses = app.db().misses()?;
    Ok(render(
        "misses.html",
        context! { title => "Misses", misses, error => q.error, logged_in => logged_in(&app) },
    ))
}

async fn misses_fetch(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    match api::promote_miss(&app, &f.url, peer) {
        Ok(_) => Redirect::to("/ui/catalog").into_response(),
        Err(e) => back("/ui/misses", Err(e)),
    }
}

async fn misses_dismiss(State(app): State<Arc<App>>, Form(f): Form<UrlForm>) -> Response {
    back("/ui/misses", app.db().dismiss_miss(&f.url).map(|_| ()))
}

async fn events(State(app): State<Arc<App>>) -> Result<Response, Error> {
    let events = app.db().events(200, None)?;
    Ok(render(
        "events.html",
        context! { title => "Events", events, logged_in => logged_in(&app) },
    ))
}

async fn settings(State(app): State<Arc<App>>) -> Response {
    let (used, reserved, max) = app.store.usage();
    let creds = app.auth.credentials();
    let auth = if creds.is_open() {
        "OPEN: no password set (set WITHCACHE_ADMIN_PASSWORD_HASH)"
    } else if creds.uses_default_password() {
        "password set, but it is the default one: change it"
    } else {
        "password set"
    };
    render(
        "settings.html",
        context! { title => "Settings", version => env!("CARGO_PKG_VERSION"),
        data_dir => app.opts.data_dir.display().to_string(), max, used, reserved,
        max_downloads => app.opts.fetch.max_downloads, admin => creds.user(), auth,
        logged_in => logged_in(&app) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        for (name, ctx) in [
            ("login.html", context! { title => "x", user => "bty-lab" }),
            (
                "catalog.html",
                context! { title => "x", entries => Vec::<u8>::new(), active => 0, used => 0 },
            ),
            (
                "misses.html",
                context! { title => "x", misses => Vec::<u8>::new() },
            ),
            (
                "events.html",
                context! { title => "x", events => Vec::<u8>::new() },
            ),
            ("settings.html", context! { title => "x" }),
        ] {
            let html = env().get_template(name).unwrap().render(ctx).unwrap();
            assert!(html.contains("<title>withcache"), "{name}");
        }
        let html = env()
            .get_template("misses.html")
            .unwrap()
            .render(context! { misses => vec![context!{ src => "<script>", count => 1 }] })
            .unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
