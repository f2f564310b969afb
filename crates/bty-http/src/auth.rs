//! The gate in front of a service's admin routes, and who got through.
//!
//! Both guards refuse a state change from a foreign `Origin` first (CSRF
//! defence in depth on top of `SameSite=Strict`), then ask `bty-auth` for
//! the session cookie or HTTP Basic (open mode lets everyone in). They
//! differ in how they say no:
//!
//! - [`Gate::guard_api`]: JSON `ErrorBody` with 401 and a Basic challenge,
//!   429 with `Retry-After`, or 403. A service token (`Authorization:
//!   Bearer`), when the gate has one, is let in too.
//! - [`Gate::guard_ui`]: a redirect to the login page that comes back to
//!   the page asked for (`HX-Redirect` for htmx requests, which would
//!   otherwise swap a login page into a fragment), or the error page.
//!
//! Handlers behind either guard may take a [`Caller`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use bty_auth::{Auth, Denied, Principal, ServiceToken};
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};

use crate::error::JsonError;
use crate::ui::Templates;

/// Who a request behind a guard was let in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No password is configured: everyone is the admin.
    Open,
    /// The admin, by session cookie or HTTP Basic.
    Admin(String),
    /// Another bty service, by the service token.
    Service,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = JsonError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("a handler asked for the caller on an unguarded route");
            JsonError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
    }
}

/// Called after every login attempt through the UI (withcache records it
/// as an event).
pub type LoginHook = Arc<dyn Fn(&LoginAttempt<'_>) + Send + Sync>;

/// One login attempt. Failed ones are reported at most
/// [`FAILED_LOGINS_REPORTED`] per minute, so a flood leaves a bounded trace.
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    /// The user name typed, fit for a log: control and non-ASCII characters
    /// escaped, cut to [`LOGGED_USER_CHARS`] characters plus its length.
    pub user: &'a str,
    /// Failed attempts not reported since the last reported one.
    pub suppressed: u64,
    /// The client.
    pub peer: SocketAddr,
    /// `Ok` or why not.
    pub outcome: Result<(), &'a bty_auth::LoginError>,
}

/// One service's guard and login flow. Cheap to clone.
#[derive(Clone)]
pub struct Gate(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) auth: Arc<Auth>,
    pub(crate) templates: &'static Templates,
    token: Option<ServiceToken>,
    pub(crate) on_login: Option<LoginHook>,
    pub(crate) failed_logins: Arc<Mutex<LogBudget>>,
}

/// Failed logins reported to the hook per minute at most.
pub const FAILED_LOGINS_REPORTED: u32 = 10;
/// Characters of a typed user name a report keeps.
pub const LOGGED_USER_CHARS: usize = 32;

/// The failed-login reports left in the current minute.
#[derive(Debug)]
pub(crate) struct LogBudget {
    since: Instant,
    used: u32,
    suppressed: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            since: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }
}

impl LogBudget {
    /// `Some(suppressed so far)` when this failure may be reported.
    pub(crate) fn take(&mut self) -> Option<u64> {
        if self.since.elapsed() >= Duration::from_secs(60) {
            self.since = Instant::now();
            self.used = 0;
        }
        if self.used >= FAILED_LOGINS_REPORTED {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `user` fit for a log line or an event: escaped (`\n`, `\u{1b}`), cut to
/// [`LOGGED_USER_CHARS`] characters, with its length when cut.
pub fn loggable_user(user: &str) -> String {
    let mut out: String = user
        .chars()
        .take(LOGGED_USER_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if user.chars().count() > LOGGED_USER_CHARS {
        out.push_str(&format!("… ({} bytes)", user.len()));
    }
    out
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("service", &self.0.templates.brand().product_long)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// The gate of the service whose pages `templates` renders.
    pub fn new(auth: Arc<Auth>, templates: &'static Templates) -> Gate {
        Gate(Arc::new(Inner {
            auth,
            templates,
            token: None,
            on_login: None,
            failed_logins: Arc::default(),
        }))
    }

    /// Also let the API in for `Authorization: Bearer <token>`.
    pub fn with_service_token(self, token: Option<ServiceToken>) -> Gate {
        self.rebuild(|i| i.token = token)
    }

    /// Call `hook` after every UI login attempt.
    pub fn on_login(self, hook: impl Fn(&LoginAttempt<'_>) + Send + Sync + 'static) -> Gate {
        self.rebuild(|i| i.on_login = Some(Arc::new(hook)))
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Gate {
        let mut inner = Inner {
            auth: self.0.auth.clone(),
            templates: self.0.templates,
            token: self.0.token.clone(),
            on_login: self.0.on_login.clone(),
            failed_logins: self.0.failed_logins.clone(),
        };
        f(&mut inner);
        Gate(Arc::new(inner))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// Put every route of `router` behind the API guard.
    pub fn guard_api<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.route_layer(axum::middleware::from_fn_with_state(self.clone(), api))
    }

    /// Put every route of `router` behind the UI guard.
    pub fn guard_ui<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.route_layer(axum::middleware::from_fn_with_state(self.clone(), ui))
    }

    async fn admit(&self, peer: SocketAddr, headers: &http::HeaderMap) -> Result<Caller, Denied> {
        if let Some(token) = &self.0.token {
            if token.matches(headers) {
                return Ok(Caller::Service);
            }
            if bty_auth::bearer(headers).is_some() {
                // Never the token itself: only that a wrong one came.
                tracing::warn!(
                    peer = %peer.ip(),
                    "refused a wrong service token (the caller's token must equal this service's)"
                );
            }
        }
        match self
            .0
            .auth
            .authorize(peer.ip().to_canonical(), headers)
            .await?
        {
            Principal::Open => Ok(Caller::Open),
            Principal::Admin(user) => Ok(Caller::Admin(user)),
        }
    }
}

/// The API guard.
async fn api(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return JsonError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: the Origin does not match this server",
        )
        .into_response();
    }
    match gate.admit(peer, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e @ Denied::Unauthenticated) => {
            let mut r = JsonError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            let realm = gate.0.templates.brand().realm;
            if let Ok(v) =
                HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
            {
                r.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            r
        }
        Err(e @ Denied::RateLimited(d)) => JsonError {
            retry_after: Some(d.as_secs().max(1)),
            ..JsonError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        .into_response(),
    }
}

/// The UI guard. The service token is not taken here: it is for services,
/// not browsers.
async fn ui(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let t = gate.0.templates;
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return t.error_page(
            StatusCode::FORBIDDEN,
            &format!(
                "This form was sent from another site (its Origin does not match this \
                 server), so it was refused. Open {}'s own page and submit the form there.",
                t.brand().product_long
            ),
        );
    }
    match gate
        .0
        .auth
        .authorize(peer.ip().to_canonical(), req.headers())
        .await
    {
        Ok(p) => {
            req.extensions_mut().insert(match p {
                Principal::Open => Caller::Open,
                Principal::Admin(user) => Caller::Admin(user),
            });
            next.run(req).await
        }
        Err(_) => to_login(t.brand().home, &req),
    }
}

/// Where a request that needs a login goes: the login page, coming back
/// to the page asked for (GET only: a form post is not replayed) unless
/// that is the start page a login lands on anyway.
fn to_login(home: &str, req: &Request) -> Response {
    let target = req.uri().path_and_query().map_or(home, |p| p.as_str());
    let login = if req.method() == Method::GET && target != home {
        format!(
            "/ui/login?next={}",
            crate::encode::path_as_query_value(target)
        )
    } else {
        "/ui/login".to_string()
    };
    if req.headers().get("hx-request").is_some_and(|v| v == "true") {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&login) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(&login).into_response()
}

/// Where a login may lead: a page of this UI (`/ui/…`, not the login page
/// itself), never another site (`//host`, `/\host`) or anything with
/// control characters; otherwise `home`.
pub fn safe_next<'a>(next: Option<&'a str>, home: &'a str) -> &'a str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui/login")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => home,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_page_of_this_ui() {
        let home = "/ui/dashboard";
        for ok in [
            "/ui/machines?page=2",
            "/ui/misses?x=1",
            "/ui/a/b",
            "/ui/events?q=a%2F%2Fb",
        ] {
            assert_eq!(safe_next(Some(ok), home), ok);
        }
        for bad in [
            None,
            Some(""),
            Some("/"),
            Some("/ui"),
            Some("/uievil"),
            Some("//evil.example/ui/"),
            Some("https://evil.example/"),
            Some("/ui//evil.example"),
            Some("/ui/\\evil"),
            Some("/\\evil.example"),
            Some("/ui/login"),
            Some("/ui/login?next=/ui/x"),
            Some("/api/machines"),
            Some("/ui/x\r\nSet-Cookie: a=b"),
            Some("/ui/x\u{7f}"),
        ] {
            assert_eq!(safe_next(bad, home), home, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn failed_logins_are_reported_within_a_budget_and_users_escaped() {
        let mut b = LogBudget::default();
        for _ in 0..FAILED_LOGINS_REPORTED {
            assert_eq!(b.take(), Some(0));
        }
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        b.since -= Duration::from_secs(61);
        assert_eq!(b.take(), Some(2));
        assert_eq!(loggable_user("bty-lab"), "bty-lab");
        let u = loggable_user(&format!("a\n\u{1b}{}", "x".repeat(100)));
        assert!(
            u.starts_with("a\\n\\u{1b}xx") && u.ends_with("(103 bytes)"),
            "{u}"
        );
    }
}
