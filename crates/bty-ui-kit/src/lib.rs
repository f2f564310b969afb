//! The look shared by the operator UIs of bty-web and withcache: one
//! stylesheet (light and dark, phone layout), the small helper script
//! (time localisation, confirmations, closing live streams), vendored htmx
//! with its SSE extension, and the page shell template every page of both
//! services extends. Assets are compiled in; nothing comes from a CDN.
//!
//! The shell (`shell.html`, see [`SHELL`]) expects a `layout` object with
//! `title`, `product` (brand and `<title>` suffix), `product_long`
//! (footer, optional), `home` (brand link), `nav` (current entry id, empty
//! or `login` hides the navigation), `nav_items` (a list of `[id, label]`
//! pairs linking to `/ui/{id}`), `user` (shows the logout button) and
//! `version`. Pages fill the `main` block (and may add to `head`); a
//! service's own base template (`base.html`, extending the shell) may fill
//! `banners`. [`install`] adds the shell, the shared macros (`macros.html`:
//! `ts`, `err`, `described`), the login and error pages every service
//! shows alike (`login.html`, `error.html`, both extending the service's
//! `base.html`) and the filters they use.
//!
//! This crate is the look only and knows no web framework; `bty-http`
//! serves these assets, renders these pages and runs the login flow.

// A server or the agent must not panic on what it is sent (a request, a
// packet, an image): no unwrap/expect/[] in non-test code. An `allow` names
// the invariant that makes it safe. Tests keep them.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

/// Name to register [`SHELL`] under in a minijinja environment.
pub const SHELL_NAME: &str = "shell.html";

/// The page shell (minijinja source).
pub const SHELL: &str = include_str!("../templates/shell.html");

/// Shared macros: `ts(t)` (a `<time>` the script localises), `err(errors,
/// name)` and `described(errors, name)` (a field's message and its ARIA
/// link).
pub const MACROS: &str = include_str!("../templates/macros.html");

/// The login page: `layout`, `user` (typed name), `next` (where to go
/// after) and `error`; in open mode (`layout.open_mode`) it says there is
/// nothing to log in to instead of showing the form.
pub const LOGIN: &str = include_str!("../templates/login.html");

/// The error page: `layout`, `status`, `reason`, `message`, `request_id`
/// and `home_label` (the words for `layout.home`).
pub const ERROR: &str = include_str!("../templates/error.html");

/// Add the shell, the macros, `login.html`, `error.html` and the filters
/// `utc` (RFC 3339 → UTC text) and `bytes` (human size, `–` for none) to
/// `env`.
///
/// # Panics
///
/// If a compiled-in template does not parse: a build defect, which this
/// crate's tests and every service's template test catch.
#[allow(
    clippy::expect_used,
    reason = "the templates are compiled in (include_str!); the tests parse each one"
)]
pub fn install(env: &mut minijinja::Environment<'static>) {
    env.add_filter("utc", |s: Option<String>| {
        s.map(|s| utc_text(&s)).unwrap_or_default()
    });
    env.add_filter("bytes", |n: Option<u64>| {
        n.map(human_bytes).unwrap_or_else(|| "–".into())
    });
    env.add_template(SHELL_NAME, SHELL)
        .expect("the shared page shell parses");
    env.add_template("macros.html", MACROS)
        .expect("the shared macros parse");
    env.add_template("login.html", LOGIN)
        .expect("the shared login page parses");
    env.add_template("error.html", ERROR)
        .expect("the shared error page parses");
}

/// `Cache-Control` for assets. Their URLs do not change with the content,
/// so only a short cache: an upgrade shows its assets within minutes.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=300";

/// A compiled-in file served under `/ui/static/{name}` (and the icon also
/// as `/favicon.ico`, which browsers ask for on their own).
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The bytes.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], &'static str) = match name {
        "app.css" => (
            include_bytes!("../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (include_bytes!("../static/app.js"), JS),
        "htmx.min.js" => (include_bytes!("../static/htmx.min.js"), JS),
        "htmx-ext-sse.js" => (include_bytes!("../static/htmx-ext-sse.js"), JS),
        "htmx.LICENSE" => (include_bytes!("../static/htmx.LICENSE"), TEXT),
        "htmx-ext-sse.LICENSE" => (include_bytes!("../static/htmx-ext-sse.LICENSE"), TEXT),
        // The icon: the shell links the SVG; favicon.ico (from
        // favicon.gen.py) is for what browsers fetch without a page.
        "favicon.svg" => (include_bytes!("../static/favicon.svg"), "image/svg+xml"),
        "favicon.ico" => (include_bytes!("../static/favicon.ico"), "image/x-icon"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// `2026-05-17T20:21:09Z` → `2026-05-17 20:21:09 UTC`: what a browser
/// without JavaScript shows inside `<time datetime>`; the script then
/// localises it. Text that is not RFC 3339 comes back unchanged.
pub fn utc_text(rfc3339: &str) -> String {
    match time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = None;
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(u);
    }
    match unit {
        None => format!("{n} B"),
        Some(u) => format!("{v:.1} {u}"),
    }
}

/// `95` → `1m 35s`; negative or infinite → `–`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "–".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there() {
        for n in [
            "app.css",
            "app.js",
            "htmx.min.js",
            "htmx-ext-sse.js",
            "htmx.LICENSE",
            "htmx-ext-sse.LICENSE",
            "favicon.svg",
            "favicon.ico",
        ] {
            let a = asset(n).unwrap_or_else(|| panic!("{n}"));
            assert!(!a.body.is_empty(), "{n}");
        }
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }

    #[test]
    fn stylesheet_has_dark_and_phone_layouts() {
        let css = std::str::from_utf8(asset("app.css").unwrap().body).unwrap();
        assert!(css.contains("prefers-color-scheme: dark"));
        assert!(css.contains("max-width: 640px"));
    }

    #[test]
    fn shell_renders_nav_and_escapes() {
        let mut env = minijinja::Environment::new();
        install(&mut env);
        env.add_template(
            "page.html",
            "{% extends \"shell.html\" %}{% block main %}{% from \"macros.html\" import ts %}{{ ts(t) }}{% endblock %}",
        )
        .unwrap();
        let html = env
            .get_template("page.html")
            .unwrap()
            .render(minijinja::context! {
                layout => minijinja::context! {
                    title => "<x>", product => "withcache", home => "/ui/catalog",
                    nav => "catalog", nav_items => vec![("catalog", "Catalog"), ("misses", "Misses")],
                    user => "bty-lab", version => "0.1.0",
                },
                t => "2026-05-17T20:21:09Z",
            })
            .unwrap();
        assert!(
            html.contains("<title>&lt;x&gt; · withcache</title>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/ui/catalog\" aria-current=\"page\">Catalog</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"/ui/misses\">Misses</a>"), "{html}");
        assert!(html.contains("id=\"logout\""), "{html}");
        assert!(
            html.contains("<time datetime=\"2026-05-17T20:21:09Z\">2026-05-17 20:21:09 UTC</time>"),
            "{html}"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_duration(95.0), "1m 35s");
        assert_eq!(human_duration(-1.0), "–");
        assert_eq!(utc_text("2026-05-17T20:21:09Z"), "2026-05-17 20:21:09 UTC");
        assert_eq!(utc_text("not a time"), "not a time");
    }
}
