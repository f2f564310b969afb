//! The login flow at `/ui/login` and `/ui/logout`, the same for every
//! service: the form, the session cookie, the rate limit's message, the
//! way back to the page asked for, and in open mode a page that says there
//! is nothing to log in to.

use std::net::SocketAddr;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Router};
use http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::auth::{loggable_user, safe_next, Gate, LoginAttempt};
use crate::ui::Layout;

impl Gate {
    /// A service's whole UI: `pages` behind the UI guard, the login flow
    /// ([`Gate::login_routes`]) and the static assets
    /// ([`crate::ui::assets`]).
    pub fn ui<S>(&self, pages: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.guard_ui(pages)
            .merge(self.login_routes())
            .merge(crate::ui::assets())
    }

    /// `GET|POST /ui/login` (open) and `POST /ui/logout` (guarded).
    pub fn login_routes<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let logout = self.guard_ui(Router::new().route("/ui/logout", axum::routing::post(logout)));
        Router::new()
            .route("/ui/login", axum::routing::get(form).post(submit))
            .merge(logout)
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

#[derive(Serialize)]
struct LoginView<'a> {
    layout: Layout,
    user: &'a str,
    next: &'a str,
    error: Option<String>,
}

fn page(
    gate: &Gate,
    status: StatusCode,
    user: &str,
    next: &str,
    error: Option<String>,
) -> Response {
    let g = gate.inner();
    let view = LoginView {
        layout: Layout::of(g.templates.brand(), g.auth.credentials(), "Log in", "login"),
        user,
        next,
        error,
    };
    g.templates.page(status, "login.html", &view)
}

/// `GET /ui/login`: the form; straight on when a session cookie is
/// already good; in open mode a page saying the UI is open.
pub(crate) async fn form(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let g = gate.inner();
    let next = safe_next(q.next.as_deref(), g.templates.brand().home);
    let creds = g.auth.credentials();
    if !creds.is_open() && logged_in_by_cookie(&gate, peer, &headers).await {
        return Redirect::to(next).into_response();
    }
    page(&gate, StatusCode::OK, creds.user(), next, None)
}

/// Whether the request's session cookie is good. Only the cookie: an
/// HTTP Basic header must not skip the form silently.
async fn logged_in_by_cookie(gate: &Gate, peer: SocketAddr, headers: &HeaderMap) -> bool {
    let mut h = HeaderMap::new();
    for v in headers.get_all(COOKIE) {
        h.append(COOKIE, v.clone());
    }
    h.contains_key(COOKIE)
        && gate
            .inner()
            .auth
            .authorize(peer.ip().to_canonical(), &h)
            .await
            .is_ok()
}

/// `POST /ui/login` form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`.
pub(crate) async fn submit(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let g = gate.inner();
    let t = g.templates;
    if !bty_auth::origin_allowed(&Method::POST, &headers) {
        return t.error_page(
            StatusCode::FORBIDDEN,
            &format!(
                "This login was sent from another site (its Origin does not match this \
                 server), so it was refused. Open {}'s login page and log in there.",
                t.brand().product_long
            ),
        );
    }
    let Ok(Form(f)) = form else {
        return t.error_page(StatusCode::BAD_REQUEST, "The login form was malformed.");
    };
    let next = safe_next(f.next.as_deref(), t.brand().home);
    if g.auth.credentials().is_open() {
        return Redirect::to(next).into_response();
    }
    let user = f.user.trim();
    if user.is_empty() || f.password.is_empty() {
        let msg = "Enter both the user name and the password.";
        return page(
            &gate,
            StatusCode::UNPROCESSABLE_ENTITY,
            user,
            next,
            Some(msg.into()),
        );
    }
    let outcome = g
        .auth
        .login(peer.ip().to_canonical(), user, &f.password)
        .await;
    report(&gate, user, peer, outcome.as_ref().map(|_| ()));
    match outcome {
        Ok(cookie) => {
            let mut r = Redirect::to(next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(bty_auth::LoginError::Invalid) => page(
            &gate,
            StatusCode::UNAUTHORIZED,
            user,
            next,
            Some("Wrong user name or password.".into()),
        ),
        Err(bty_auth::LoginError::RateLimited(d)) => {
            let secs = d.as_secs().max(1);
            let msg = format!(
                "Too many failed logins from your address. Wait {secs} seconds, then try again."
            );
            let mut r = page(&gate, StatusCode::TOO_MANY_REQUESTS, user, next, Some(msg));
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

/// Tell the login hook, if any: every success, failures within the
/// budget (a flood of failed logins leaves a bounded trace).
fn report(gate: &Gate, user: &str, peer: SocketAddr, outcome: Result<(), &bty_auth::LoginError>) {
    let g = gate.inner();
    let Some(hook) = &g.on_login else { return };
    let suppressed = match outcome {
        Ok(()) => 0,
        Err(_) => {
            let mut budget = g.failed_logins.lock().unwrap_or_else(|e| e.into_inner());
            match budget.take() {
                Some(n) => n,
                None => return,
            }
        }
    };
    hook(&LoginAttempt {
        user: &loggable_user(user),
        peer,
        suppressed,
        outcome,
    });
}

/// `POST /ui/logout`: clear the cookie and go to the login page.
pub(crate) async fn logout(State(gate): State<Gate>) -> Response {
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&gate.inner().auth.logout_cookie()) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, LazyLock, Mutex};

    use axum::body::Body;
    use axum::extract::Request;
    use axum::Router;
    use tower::ServiceExt;

    use crate::ui::tests::BRAND;
    use crate::ui::Templates;
    use crate::Gate;

    static T: LazyLock<Templates> = LazyLock::new(crate::ui::tests::templates);

    fn gate(password: Option<&str>) -> Gate {
        let creds =
            bty_auth::Credentials::new("bty-lab", password.map(str::to_string), None).unwrap();
        let auth = bty_auth::Auth::new(creds, bty_auth::SessionKey::from_secret(b"k"), "kit");
        Gate::new(auth, &T)
    }

    fn app(gate: &Gate) -> Router {
        let home = gate.guard_ui(Router::new().route(
            "/ui/home",
            axum::routing::get(|c: crate::Caller| async move { format!("{c:?}") }),
        ));
        crate::request_id::layer(gate.login_routes().merge(home)).layer(axum::middleware::from_fn(
            |mut req: Request, next: axum::middleware::Next| async move {
                req.extensions_mut().insert(axum::extract::ConnectInfo(
                    "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap(),
                ));
                next.run(req).await
            },
        ))
    }

    async fn send(app: &Router, req: Request) -> (u16, HeaderMapLite, String) {
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status().as_u16();
        let h = HeaderMapLite(r.headers().clone());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, h, String::from_utf8(body.to_vec()).unwrap())
    }

    struct HeaderMapLite(http::HeaderMap);
    impl HeaderMapLite {
        fn get(&self, k: &str) -> &str {
            self.0.get(k).map_or("", |v| v.to_str().unwrap())
        }
    }

    fn get(uri: &str) -> Request {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    fn post(form: &str) -> Request {
        Request::builder()
            .method("POST")
            .uri("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn open_mode_login_page_says_the_ui_is_open() {
        let app = app(&gate(None));
        let (st, _, html) = send(&app, get("/ui/login?next=/ui/home")).await;
        assert_eq!(st, 200);
        assert!(html.contains("No admin password is set"), "{html}");
        assert!(html.contains("id=\"continue\""), "{html}");
        assert!(!html.contains("type=\"password\""), "no form: {html}");
        let (st, _, body) = send(&app, get("/ui/home")).await;
        assert_eq!((st, body.as_str()), (200, "Open"));
    }

    #[tokio::test]
    async fn guard_login_and_the_way_back() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let gate = gate(Some("pw")).on_login(move |a| {
            s.lock()
                .unwrap()
                .push((a.user.to_string(), a.outcome.is_ok()));
        });
        let app = app(&gate);
        // The start page needs no `next`; another page keeps its way back.
        let (st, h, _) = send(&app, get("/ui/home")).await;
        assert_eq!((st, h.get("location")), (303, "/ui/login"));
        assert_eq!(h.get("x-request-id").len(), 16);
        let (_, h, _) = send(&app, get("/ui/home?x=1")).await;
        assert_eq!(h.get("location"), "/ui/login?next=/ui/home%3Fx%3D1");
        let mut hx = get("/ui/home?x=1");
        hx.headers_mut()
            .insert("hx-request", "true".parse().unwrap());
        let (st, h, _) = send(&app, hx).await;
        assert_eq!(
            (st, h.get("hx-redirect")),
            (204, "/ui/login?next=/ui/home%3Fx%3D1")
        );
        let (st, _, html) = send(&app, get("/ui/login")).await;
        assert_eq!(st, 200);
        assert!(
            html.contains("Log in to kit") && html.contains("type=\"password\""),
            "{html}"
        );
        let (st, _, html) = send(&app, post("user=bty-lab&password=")).await;
        assert_eq!(st, 422);
        assert!(html.contains("Enter both"), "{html}");
        let (st, h, html) = send(&app, post("user=bty-lab&password=no")).await;
        assert_eq!(st, 401);
        assert!(html.contains("Wrong user name or password.") && h.get("set-cookie").is_empty());
        let (st, h, _) = send(&app, post("user=bty-lab&password=pw&next=//evil/ui/")).await;
        assert_eq!((st, h.get("location")), (303, "/ui/home"));
        let cookie = h.get("set-cookie").split(';').next().unwrap().to_string();
        let mut req = get("/ui/home");
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        let (st, _, body) = send(&app, req).await;
        assert_eq!((st, body.as_str()), (200, "Admin(\"bty-lab\")"));
        let mut req = post("user=bty-lab&password=pw");
        req.headers_mut()
            .insert("origin", "http://evil.example".parse().unwrap());
        req.headers_mut().insert("host", "kit:80".parse().unwrap());
        let (st, _, html) = send(&app, req).await;
        assert_eq!(st, 403);
        assert!(html.contains("another site"), "{html}");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                ("bty-lab".to_string(), false),
                ("bty-lab".to_string(), true)
            ]
        );
        let _ = &BRAND;
    }

    #[tokio::test]
    async fn api_guard_answers_json_with_the_request_id() {
        let token = bty_auth::ServiceToken::new("a-service-token-of-length");
        let gate = gate(Some("pw")).with_service_token(Some(token));
        let api = gate.guard_api(Router::new().route(
            "/api/x",
            axum::routing::post(|c: crate::Caller| async move { format!("{c:?}") }),
        ));
        let app = app(&gate).merge(
            crate::request_id::layer(api).layer(axum::middleware::from_fn(
                |mut req: Request, next: axum::middleware::Next| async move {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(
                        "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap(),
                    ));
                    next.run(req).await
                },
            )),
        );
        let req = |auth: Option<&str>, origin: Option<&str>| {
            let mut b = Request::builder()
                .method("POST")
                .uri("/api/x")
                .header("host", "kit:80")
                .header("x-request-id", "req-1");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(Body::empty()).unwrap()
        };
        let (st, h, body) = send(&app, req(None, None)).await;
        assert_eq!(st, 401);
        assert_eq!(
            h.get("www-authenticate"),
            "Basic realm=\"kit\", charset=\"UTF-8\""
        );
        assert_eq!(h.get("x-request-id"), "req-1");
        let b: bty_proto::ErrorBody = serde_json::from_str(&body).unwrap();
        assert!(b.error.contains("login required"), "{body}");
        assert_eq!(b.request_id.as_deref(), Some("req-1"));
        let (st, _, body) = send(&app, req(Some("Bearer a-service-token-of-length"), None)).await;
        assert_eq!((st, body.as_str()), (200, "Service"));
        let (st, _, body) = send(&app, req(Some("Basic YnR5LWxhYjpwdw=="), None)).await;
        assert_eq!((st, body.as_str()), (200, "Admin(\"bty-lab\")"));
        let (st, _, body) = send(
            &app,
            req(Some("Basic YnR5LWxhYjpwdw=="), Some("http://evil.example")),
        )
        .await;
        assert_eq!(st, 403);
        let b: bty_proto::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(b.request_id.as_deref(), Some("req-1"));
    }
}
