//! The HTTP helpers the tests of both servers use: requests by path,
//! answers as (status, body), forms, pages, error bodies.
//!
//! A [`Client`] knows a server's base URL and, optionally, a login it
//! sends as HTTP Basic. It panics on transport errors: in a test, a
//! server that does not answer is a failure, not a value.

use std::future::Future;

use bty_proto::ErrorBody;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The underlying client, for requests the helpers do not cover.
    pub http: reqwest::Client,
    /// A client that never follows redirects (forms answer 303).
    pub no_redirect: reqwest::Client,
    login: Option<(String, String)>,
}

/// `send().await.unwrap()`, with the URL in the panic message.
pub trait Fetch {
    /// Send the request; panic if no answer comes.
    fn fetch(self) -> impl Future<Output = Response> + Send;
}

impl Fetch for RequestBuilder {
    async fn fetch(self) -> Response {
        match self.send().await {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        }
    }
}

/// minijinja escapes `/` in HTML (`&#x2f;`); undo that one escape so
/// assertions can name URLs as a browser shows them.
pub fn slashes(page: String) -> String {
    page.replace("&#x2f;", "/")
}

/// The header `name` as text; panics when it is missing or not ASCII.
pub fn header(h: &HeaderMap, name: &str) -> String {
    match h.get(name).map(|v| v.to_str()) {
        Some(Ok(v)) => v.to_string(),
        Some(Err(_)) => panic!("the {name} header is not ASCII"),
        None => panic!("no {name} header in {h:?}"),
    }
}

/// The first `name=value` pair of the `Set-Cookie` header, ready for a
/// `Cookie` header.
pub fn cookie_pair(h: &HeaderMap) -> String {
    let v = header(h, "set-cookie");
    v.split(';').next().unwrap_or_default().to_string()
}

/// The `Location` header, or "" without one.
pub fn location(h: &HeaderMap) -> String {
    h.get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl Client {
    /// A client for `base` whose `http` follows redirects or not.
    pub fn new(base: &str, follow_redirects: bool) -> Client {
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client");
        let http = if follow_redirects {
            reqwest::Client::new()
        } else {
            no_redirect.clone()
        };
        Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            no_redirect,
            login: None,
        }
    }

    /// The same client, sending `user` and `password` as HTTP Basic with
    /// every request the helpers make.
    pub fn with_login(&self, user: &str, password: &str) -> Client {
        Client {
            login: Some((user.to_string(), password.to_string())),
            ..self.clone()
        }
    }

    /// The same client, its connections made from the local address `ip`
    /// (a `127.0.0.x` is another LAN host to a server on 127.0.0.1).
    pub fn from_ip(&self, ip: std::net::IpAddr) -> Client {
        let build = |follow: bool| {
            let b = reqwest::Client::builder().local_address(ip);
            let b = if follow {
                b
            } else {
                b.redirect(reqwest::redirect::Policy::none())
            };
            b.build().expect("a reqwest client")
        };
        Client {
            http: build(true),
            no_redirect: build(false),
            ..self.clone()
        }
    }

    /// The same client without a login.
    pub fn anonymous(&self) -> Client {
        Client {
            login: None,
            ..self.clone()
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request for `path` (with the login, if any).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.login_on(self.http.request(method, self.url(path)))
    }

    fn login_on(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.login {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// `HEAD path`.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// `GET path`: status and text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.get(path).fetch().await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// `GET path`: a page, with [`slashes`] undone.
    pub async fn page(&self, path: &str) -> (u16, String) {
        let (st, text) = self.get_text(path).await;
        (st, slashes(text))
    }

    /// `GET path`: status and JSON (`null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        self.send_json(Method::GET, path, None).await
    }

    /// `GET path` as a `T`, which the answer must be.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> T {
        let r = self.get(path).fetch().await;
        let st = r.status();
        let text = r.text().await.unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: {st}: not the expected JSON ({e}): {text}"))
    }

    /// `POST path` with a JSON body: status and JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(Method::POST, path, Some(body)).await
    }

    /// Any method, an optional JSON body: status and JSON (`null` when the
    /// answer is not JSON).
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.fetch().await;
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }

    /// Post a form without following the redirect: status, the page (with
    /// [`slashes`] undone) and the headers.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, HeaderMap) {
        let rb = self.login_on(self.no_redirect.post(self.url(path)));
        let r = rb.form(form).fetch().await;
        let st = r.status().as_u16();
        let headers = r.headers().clone();
        (st, slashes(r.text().await.unwrap_or_default()), headers)
    }

    /// The [`ErrorBody`] of an error answer (every JSON API error is one).
    pub async fn error_body(r: Response) -> ErrorBody {
        let st = r.status();
        let text = r.text().await.unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{st}: not an ErrorBody ({e}): {text}"))
    }
}
