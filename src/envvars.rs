//! DEST/envvars: the deploy's secrets and settings as `KEY='VALUE'` lines,
//! the operator's to edit. Read and rewritten line by line, so comments and
//! keys bty-lab does not know stay as they are.

use std::path::Path;

use anyhow::{Context as _, Result};

/// Parsed `KEY=VALUE` lines of envvars (quotes removed), in file order.
pub fn parse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('\'') && v.ends_with('\''))
                || (v.starts_with('"') && v.ends_with('"')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

/// Read DEST/envvars.
pub fn read(dest: &Path) -> Result<Vec<(String, String)>> {
    let p = dest.join("envvars");
    let t = crate::safefs::Dir::open(dest)
        .and_then(|d| d.read_text("envvars".as_ref()))
        .and_then(|t| t.context("no such file"))
        .with_context(|| {
            format!(
                "reading {} (re-create it with `bty-lab deploy --force {}`)",
                p.display(),
                dest.display()
            )
        })?;
    Ok(parse(&t))
}

/// Set keys in envvars text, keeping every other line and comment.
pub fn set(text: &str, updates: &[(&str, &str)]) -> String {
    let mut done = vec![false; updates.len()];
    let mut out = String::new();
    for line in text.lines() {
        let key = line
            .trim()
            .split_once('=')
            .map(|(k, _)| k.trim().to_string());
        if let Some(i) = key.and_then(|k| updates.iter().position(|(u, _)| *u == k)) {
            out.push_str(&format!("{}='{}'\n", updates[i].0, updates[i].1));
            done[i] = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (i, (k, v)) in updates.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}='{v}'\n"));
        }
    }
    out
}

/// envvars keys of the bty-web → withcache service token (one value).
pub const SERVICE_TOKEN_KEYS: [&str; 2] = ["BTY_WITHCACHE_TOKEN", "WITHCACHE_API_TOKEN"];

/// envvars text with the service token keys added when one is missing
/// (deploys from before the token), every other line kept; `None` when
/// both are there. A key present alone lends its value to the other.
pub fn add_service_token(text: &str, fresh: &str) -> Option<String> {
    let vars = parse(text);
    let value = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let [web, cache] = SERVICE_TOKEN_KEYS.map(value);
    if web.is_some() && cache.is_some() {
        return None;
    }
    let token = web.or(cache).unwrap_or_else(|| fresh.to_string());
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(
        "\n# bty-web -> withcache service token (added by bty-lab): bty-web adds images\n\
         # to withcache's catalog with it. The same value twice, as each container\n\
         # gets only its own key.\n",
    );
    Some(set(&out, &SERVICE_TOKEN_KEYS.map(|k| (k, token.as_str()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envvars_parse_quotes_and_comments() {
        let v = parse("# c\nA='$x$y'\nB=\"q\"\nexport C=plain\n\nbad line\n");
        assert_eq!(
            v,
            vec![
                ("A".into(), "$x$y".into()),
                ("B".into(), "q".into()),
                ("C".into(), "plain".into())
            ]
        );
    }

    #[test]
    fn set_envvars_replaces_in_place_and_appends() {
        let t = "# keep\nA='1'\nB='2'\n";
        let out = set(t, &[("B", "3"), ("C", "4")]);
        assert_eq!(out, "# keep\nA='1'\nB='3'\nC='4'\n");
    }

    #[test]
    fn service_token_is_added_once_keeping_every_line() {
        let old = "# mine\nBTY_ADMIN_PASSWORD_HASH='$a$b'\nWITHCACHE_LOG='debug'";
        let out = add_service_token(old, "tok-0123456789abcdef").unwrap();
        assert!(out.starts_with(&format!("{old}\n")), "{out}");
        let v = parse(&out);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
        assert_eq!(get("BTY_WITHCACHE_TOKEN"), Some("tok-0123456789abcdef"));
        assert_eq!(get("WITHCACHE_API_TOKEN"), Some("tok-0123456789abcdef"));
        assert_eq!(get("BTY_ADMIN_PASSWORD_HASH"), Some("$a$b"));
        assert_eq!(add_service_token(&out, "other"), None, "added twice");
        // One key alone: the other gets its value, not a new one.
        let half = "WITHCACHE_API_TOKEN='kept-0123456789abcdef'\n";
        let out = add_service_token(half, "fresh").unwrap();
        assert_eq!(
            parse(&out),
            vec![
                ("WITHCACHE_API_TOKEN".into(), "kept-0123456789abcdef".into()),
                ("BTY_WITHCACHE_TOKEN".into(), "kept-0123456789abcdef".into())
            ]
        );
    }
}
