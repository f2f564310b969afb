//! Refusing cross-site state changes.

use http::header::{HOST, ORIGIN, REFERER};
use http::{HeaderMap, Method};

/// Whether a request may change state, judged by where it says it comes
/// from.
///
/// Safe methods always pass. For the others, a browser's `Origin` (or, when
/// a browser sends none, its `Referer`) must name the same host and port as
/// the `Host` header, and `Sec-Fetch-Site: cross-site` is refused outright.
/// Requests with neither header (curl, scripts, the agent) pass: CSRF needs
/// a browser, and browsers send `Origin` on every cross-origin POST.
pub fn origin_allowed(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return false;
    }
    let claimed = match headers.get(ORIGIN).or_else(|| headers.get(REFERER)) {
        None => return true,
        Some(v) => match v.to_str() {
            Ok(s) => s,
            Err(_) => return false,
        },
    };
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    authority(claimed).is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// `host[:port]` of an absolute http(s) URL, with the scheme's default port
/// dropped the way browsers drop it from `Host`.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit('@').next()?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    Some(auth.strip_suffix(default).unwrap_or(auth).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn same_origin_and_non_browsers_pass_foreign_fails() {
        let post = Method::POST;
        assert!(origin_allowed(
            &Method::GET,
            &h(&[("origin", "http://evil")])
        ));
        assert!(origin_allowed(&post, &h(&[("host", "bty:8080")])));
        assert!(origin_allowed(
            &post,
            &h(&[("host", "bty:8080"), ("origin", "http://bty:8080")])
        ));
        assert!(origin_allowed(
            &post,
            &h(&[("host", "bty"), ("origin", "http://bty:80")])
        ));
        assert!(origin_allowed(
            &post,
            &h(&[
                ("host", "bty:8080"),
                ("referer", "http://bty:8080/ui/machines")
            ])
        ));
        assert!(!origin_allowed(
            &post,
            &h(&[("host", "bty:8080"), ("origin", "http://evil.example")])
        ));
        assert!(!origin_allowed(
            &post,
            &h(&[("host", "bty:8080"), ("origin", "http://bty:9999")])
        ));
        assert!(!origin_allowed(
            &Method::DELETE,
            &h(&[("host", "bty:8080"), ("origin", "null")])
        ));
        assert!(!origin_allowed(
            &post,
            &h(&[("host", "bty:8080"), ("sec-fetch-site", "cross-site")])
        ));
        assert!(!origin_allowed(&post, &h(&[("origin", "http://bty:8080")])));
    }
}
