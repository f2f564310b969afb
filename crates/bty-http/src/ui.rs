//! Pages: who a service is ([`Brand`]), the page shell's [`Layout`], the
//! template environment ([`Templates`]) with whole pages and error pages,
//! and the compiled-in assets with the favicon.

use axum::extract::Path;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::request_id;

/// Who a service is, as its pages show it.
#[derive(Debug)]
pub struct Brand {
    /// Brand and `<title>` suffix: `bty`, `withcache`.
    pub product: &'static str,
    /// The footer's name: `bty-web`, `withcache`.
    pub product_long: &'static str,
    /// The start page, where the brand links and a login lands.
    pub home: &'static str,
    /// The start page in words, for "Back to …": `the dashboard`.
    pub home_label: &'static str,
    /// The navigation: `/ui/{id}` and the label.
    pub nav: &'static [(&'static str, &'static str)],
    /// The version in the footer.
    pub version: &'static str,
    /// The HTTP Basic realm of the service's API.
    pub realm: &'static str,
}

/// What a page needs to know about the service it is a page of.
pub trait Site {
    /// The service.
    fn brand(&self) -> &'static Brand;
    /// The account (open, default password, user name).
    fn credentials(&self) -> &bty_auth::Credentials;
}

impl<T: Site + ?Sized> Site for &T {
    fn brand(&self) -> &'static Brand {
        (**self).brand()
    }
    fn credentials(&self) -> &bty_auth::Credentials {
        (**self).credentials()
    }
}

impl<T: Site + ?Sized> Site for std::sync::Arc<T> {
    fn brand(&self) -> &'static Brand {
        (**self).brand()
    }
    fn credentials(&self) -> &bty_auth::Credentials {
        (**self).credentials()
    }
}

/// What the shared shell (`bty-ui-kit`'s `shell.html`) needs; every page
/// context carries it as `layout`.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// `<title>` and the heading.
    pub title: String,
    /// Which nav entry is current (`login` or empty: no navigation).
    pub nav: &'static str,
    /// The logged-in user (empty in open mode: no logout button).
    pub user: String,
    /// No password is configured: the UI is open to everybody.
    pub open_mode: bool,
    /// The well-known default password is in use.
    pub default_password: bool,
    /// The service's version.
    pub version: &'static str,
    /// Brand and `<title>` suffix.
    pub product: &'static str,
    /// The brand's link.
    pub home: &'static str,
    /// The navigation entries.
    pub nav_items: &'static [(&'static str, &'static str)],
    /// The footer's name.
    pub product_long: &'static str,
}

impl Layout {
    /// The shell for a page of `site`.
    pub fn new(site: &impl Site, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout::of(site.brand(), site.credentials(), title, nav)
    }

    /// The shell for a page of the service `brand` with account `creds`.
    pub fn of(
        brand: &'static Brand,
        creds: &bty_auth::Credentials,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Layout {
        let mut l = Layout::bare(brand, title, nav);
        if !creds.is_open() {
            l.user = creds.user().to_string();
        }
        l.open_mode = creds.is_open();
        l.default_password = !creds.is_open() && creds.uses_default_password();
        l
    }

    /// The shell without a user or banners (error pages).
    pub fn bare(brand: &'static Brand, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            user: String::new(),
            open_mode: false,
            default_password: false,
            version: brand.version,
            product: brand.product,
            home: brand.home,
            nav_items: brand.nav,
            product_long: brand.product_long,
        }
    }
}

/// A service's templates: its own plus `bty-ui-kit`'s shell, macros,
/// login and error pages, with the kit's filters and `urlencode`. Built
/// once (a `static`), since templates are compiled in.
pub struct Templates {
    env: Environment<'static>,
    brand: &'static Brand,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("brand", &self.brand.product)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The environment for `brand`'s `templates` (name, source; `.html`
    /// names are auto-escaped). `setup` adds the service's own filters.
    /// One of the templates must be `base.html`, extending `shell.html`.
    ///
    /// # Panics
    ///
    /// If a compiled-in template does not parse: a build defect that every
    /// service's template test catches.
    pub fn new(
        brand: &'static Brand,
        templates: &[(&'static str, &'static str)],
        setup: impl FnOnce(&mut Environment<'static>),
    ) -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        bty_ui_kit::install(&mut env);
        env.add_filter("urlencode", |s: Option<String>| {
            crate::encode::query_value(&s.unwrap_or_default())
        });
        setup(&mut env);
        for (name, src) in templates {
            if let Err(e) = env.add_template(name, src) {
                panic!("built-in UI template {name} is broken: {e:#}");
            }
        }
        Templates { env, brand }
    }

    /// The service.
    pub fn brand(&self) -> &'static Brand {
        self.brand
    }

    /// Every template's name (for a test that each compiles).
    pub fn names(&self) -> Vec<&str> {
        self.env.templates().map(|(n, _)| n).collect()
    }

    /// Render `name` with `ctx`; `block` renders only that block.
    pub fn render(
        &self,
        name: &str,
        ctx: &impl Serialize,
        block: Option<&str>,
    ) -> Result<String, minijinja::Error> {
        let t = self.env.get_template(name)?;
        let value = Value::from_serialize(ctx);
        match block {
            None => t.render(value),
            Some(b) => t
                .render_captured_to(value, std::io::sink())
                .and_then(|mut c| c.with_state_mut(|s| s.render_block(b))),
        }
    }

    /// A whole page with `status`, never cached (pages show live state).
    /// A template that fails is logged and answered with the error page.
    pub fn page(&self, status: StatusCode, name: &str, ctx: &impl Serialize) -> Response {
        match self.render(name, ctx, None) {
            Ok(html) => {
                let mut r = (status, Html(html)).into_response();
                no_store(&mut r);
                r
            }
            Err(e) => self.error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering {name}: {e:#}"),
            ),
        }
    }

    /// The error page: the status, the message and the request id. A 5xx
    /// message is only logged (with the id); the page says where to look.
    pub fn error_page(&self, status: StatusCode, message: &str) -> Response {
        let id = request_id::current().unwrap_or_else(request_id::RequestId::generate);
        let product = self.brand.product_long;
        let shown = if status.is_server_error() {
            tracing::error!(request_id = %id, "{message}");
            format!(
                "{product} hit an internal error. Its log has the details under request id {id}."
            )
        } else {
            tracing::debug!(request_id = %id, "refused: {message}");
            message.to_string()
        };
        #[derive(Serialize)]
        struct Ctx<'a> {
            layout: Layout,
            status: u16,
            reason: &'a str,
            message: &'a str,
            request_id: &'a str,
            home_label: &'a str,
        }
        let ctx = Ctx {
            layout: Layout::bare(self.brand, format!("Error {}", status.as_u16()), ""),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or(""),
            message: &shown,
            request_id: id.as_str(),
            home_label: self.brand.home_label,
        };
        let body = self
            .render("error.html", &ctx, None)
            .unwrap_or_else(|_| format!("<h1>{status}</h1><p>request id {id}</p>"));
        let mut r = (status, Html(body)).into_response();
        no_store(&mut r);
        r
    }
}

/// Never from a cache.
pub fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `GET /ui/static/{name}` (the kit's assets) and `GET /favicon.ico`.
pub fn assets<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/ui/static/{name}",
            get(|Path(name): Path<String>| async move { asset(&name) }),
        )
        .route("/favicon.ico", get(|| async { asset("favicon.ico") }))
}

fn asset(name: &str) -> Response {
    match bty_ui_kit::asset(name) {
        Some(a) => (
            [
                (CONTENT_TYPE, a.content_type),
                (CACHE_CONTROL, bty_ui_kit::ASSET_CACHE_CONTROL),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;

    pub(crate) static BRAND: Brand = Brand {
        product: "kit",
        product_long: "kit-web",
        home: "/ui/home",
        home_label: "the start",
        nav: &[("home", "Home")],
        version: "9.9",
        realm: "kit",
    };

    pub(crate) fn templates() -> Templates {
        Templates::new(
            &BRAND,
            &[
                ("base.html", "{% extends \"shell.html\" %}"),
                ("page.html", "{% extends \"base.html\" %}{% block main %}<p>{{ x|urlencode }}</p>{% endblock %}"),
            ],
            |_| {},
        )
    }

    async fn get(uri: &str) -> Response {
        let app: Router = assets();
        app.oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn favicon_and_assets_are_served() {
        let r = get("/favicon.ico").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/x-icon");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&body[..4], b"\0\0\x01\0", "an ICO header");
        let r = get("/ui/static/favicon.svg").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let r = get("/ui/static/app.css").await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"));
        assert_eq!(get("/ui/static/nope.js").await.status(), 404);
    }

    #[test]
    fn shell_links_the_icon_and_pages_render() {
        let t = templates();
        let html = t
            .render(
                "page.html",
                &minijinja::context! { layout => Layout::bare(&BRAND, "T", "home"), x => "a b" },
                None,
            )
            .unwrap();
        assert!(
            html.contains("rel=\"icon\" href=\"/ui/static/favicon.svg\""),
            "{html}"
        );
        assert!(html.contains("<p>a%20b</p>"), "{html}");
        assert!(html.contains("<title>T · kit</title>"), "{html}");
        for n in t.names() {
            assert!(t.env.get_template(n).is_ok(), "{n}");
        }
    }

    #[tokio::test]
    async fn error_pages_show_the_request_id_and_hide_internals() {
        let t = templates();
        let r = t.error_page(StatusCode::NOT_FOUND, "no such <thing>");
        assert_eq!(r.status(), 404);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(html.contains("no such &lt;thing&gt;"), "{html}");
        assert!(html.contains("Back to the start"), "{html}");
        let r = t.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "db: disk I/O secret detail",
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("secret detail"), "{html}");
        assert!(html.contains("kit-web hit an internal error"), "{html}");
    }
}
