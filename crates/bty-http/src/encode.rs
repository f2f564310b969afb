//! Percent-encoding for the URLs the servers build (redirects, links).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// RFC 3986's unreserved characters pass, everything else is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// [`UNRESERVED`] and `/`, which RFC 3986 allows in a query.
const PATH_IN_QUERY: &AsciiSet = &UNRESERVED.remove(b'/');

/// A query value: `a b/c` → `a%20b%2Fc`. Also the template filter
/// `urlencode`.
pub fn query_value(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A local path as a query value, `/` kept so it stays readable:
/// `/ui/machines?page=2` → `/ui/machines%3Fpage%3D2` (the login's `next`).
pub fn path_as_query_value(s: &str) -> String {
    utf8_percent_encode(s, PATH_IN_QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(query_value("a b/c"), "a%20b%2Fc");
        assert_eq!(query_value("Az09-._~"), "Az09-._~");
        assert_eq!(query_value("x=1&y=2#z"), "x%3D1%26y%3D2%23z");
        assert_eq!(query_value("100%"), "100%25");
        assert_eq!(query_value("ü"), "%C3%BC");
        assert_eq!(query_value(""), "");
    }

    #[test]
    fn paths_keep_their_slashes() {
        assert_eq!(
            path_as_query_value("/ui/machines?page=2"),
            "/ui/machines%3Fpage%3D2"
        );
        assert_eq!(path_as_query_value("/ui/a b"), "/ui/a%20b");
    }
}
