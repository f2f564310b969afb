//! Login, logout and the guard in front of every other UI route.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};

use super::render::{no_store, render, Layout, UiError};
use super::{is_htmx, path_and_query};
use crate::routes::canonical_ip;
use crate::state::AppState;

/// Only local UI paths are followed after login (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/dashboard".to_string(),
    }
}

/// Refuse foreign Origins on state changes, then require a session (or
/// HTTP Basic, or open mode).
pub async fn require_login(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !bty_auth::origin_allowed(req.method(), req.headers()) {
        return UiError::forbidden(
            "This form was sent from another site (its Origin does not match this server), \
             so it was refused. Open bty-web's own page and submit the form there.",
        )
        .into_response();
    }
    match st
        .auth
        .authorize(canonical_ip(addr.ip()), req.headers())
        .await
    {
        Ok(_) => next.run(req).await,
        Err(_) => {
            let login = if req.method() == Method::GET {
                format!("/ui/login?next={}", encode(&path_and_query(&req)))
            } else {
                "/ui/login".to_string()
            };
            if is_htmx(req.headers()) {
                // htmx would swap a login page into a fragment; ask it to
                // navigate instead.
                let mut r = StatusCode::NO_CONTENT.into_response();
                if let Ok(v) = HeaderValue::from_str(&login) {
                    r.headers_mut().insert("hx-redirect", v);
                }
                r
            } else {
                Redirect::to(&login).into_response()
            }
        }
    }
}

/// Minimal percent-encoding for a query value (paths here are ASCII).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Serialize)]
struct LoginView {
    layout: Layout,
    user: String,
    next: String,
    error: Option<String>,
}

/// `GET /ui/login` query.
#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the form, or straight on when already logged in.
pub async fn login_form(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, UiError> {
    let next = safe_next(q.next.as_deref());
    let c = st.auth.credentials();
    if c.is_open() || logged_in_by_cookie(&st, addr, &headers).await {
        return Ok(Redirect::to(&next).into_response());
    }
    login_page(&st, StatusCode::OK, c.user().to_string(), next, None)
}

async fn logged_in_by_cookie(st: &AppState, addr: SocketAddr, headers: &HeaderMap) -> bool {
    // Only the cookie: a Basic header must not skip the form silently.
    let mut h = HeaderMap::new();
    for v in headers.get_all(header::COOKIE) {
        h.append(header::COOKIE, v.clone());
    }
    h.contains_key(header::COOKIE) && st.auth.authorize(canonical_ip(addr.ip()), &h).await.is_ok()
}

fn login_page(
    st: &AppState,
    status: StatusCode,
    user: String,
    next: String,
    error: Option<String>,
) -> Result<Response, UiError> {
    let view = LoginView {
        layout: Layout::new(st, "Log in", "login"),
        user,
        next,
        error,
    };
    let mut r = (status, Html(render("login.html", &view, None)?)).into_response();
    no_store(&mut r);
    Ok(r)
}

/// `POST /ui/login` form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`.
pub async fn login(
    State(st): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    if !bty_auth::origin_allowed(&Method::POST, &headers) {
        return Err(UiError::forbidden(
            "This login was sent from another site (its Origin does not match this server), \
             so it was refused. Open bty-web's login page and log in there.",
        ));
    }
    let Form(f) =
        form.map_err(|e| UiError::bad_request(format!("the login form was malformed: {e}")))?;
    let next = safe_next(f.next.as_deref());
    let user = f.user.trim().to_string();
    if user.is_empty() || f.password.is_empty() {
        return login_page(
            &st,
            StatusCode::UNPROCESSABLE_ENTITY,
            user,
            next,
            Some("Enter both the user name and the password.".into()),
        );
    }
    match st
        .auth
        .login(canonical_ip(addr.ip()), &user, &f.password)
        .await
    {
        Ok(cookie) => {
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(r)
        }
        Err(bty_auth::LoginError::Invalid) => login_page(
            &st,
            StatusCode::UNAUTHORIZED,
            user,
            next,
            Some("Wrong user name or password.".into()),
        ),
        Err(bty_auth::LoginError::RateLimited(d)) => {
            let secs = d.as_secs().max(1);
            let mut r = login_page(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                user,
                next,
                Some(format!(
                    "Too many failed logins from your address. Wait {secs} seconds, then try again."
                )),
            )?;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(r)
        }
    }
}

/// `POST /ui/logout`: clear the cookie and go to the login page.
pub async fn logout(State(st): State<AppState>) -> Response {
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&st.auth.logout_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(
            safe_next(Some("/ui/machines?page=2")),
            "/ui/machines?page=2"
        );
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui/dashboard");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/dashboard");
        assert_eq!(safe_next(Some("/api/machines")), "/ui/dashboard");
        assert_eq!(safe_next(None), "/ui/dashboard");
    }
}
