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

/// A secret two services share: the same value under each one's key, as
/// each container gets only its own keys ([`crate::stack::env_belongs`]).
#[derive(Debug, Clone, Copy)]
pub struct SharedSecret {
    /// The two envvars keys.
    pub keys: [&'static str; 2],
    /// What it is, for the comment above the keys and the message.
    pub what: &'static str,
}

/// The bty-web → withcache service token: bty-web adds images to
/// withcache's catalog with it.
pub const SERVICE_TOKEN: SharedSecret = SharedSecret {
    keys: ["BTY_WITHCACHE_TOKEN", "WITHCACHE_API_TOKEN"],
    what: "bty-web -> withcache service token",
};

/// The bty-tftp → bty-web relay key: bty-web believes the client address
/// bty-tftp names for the Secure Boot chain's relayed reads only with it
/// (`docs/secure-boot.md`).
pub const RELAY_KEY: SharedSecret = SharedSecret {
    keys: ["BTY_PXE_RELAY_KEY", "BTY_TFTP_RELAY_KEY"],
    what: "bty-tftp -> bty-web relay key",
};

/// Every shared secret a deploy's envvars holds.
pub const SHARED_SECRETS: [SharedSecret; 2] = [SERVICE_TOKEN, RELAY_KEY];

/// envvars text with `secret`'s keys added when one is missing (deploys
/// from before it), every other line kept; `None` when both are there. A
/// key present alone lends its value to the other.
pub fn add_shared_secret(text: &str, secret: SharedSecret, fresh: &str) -> Option<String> {
    let vars = parse(text);
    let value = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let [a, b] = secret.keys.map(value);
    if a.is_some() && b.is_some() {
        return None;
    }
    let value = a.or(b).unwrap_or_else(|| fresh.to_string());
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# {} (added by bty-lab). The same value twice, as each\n\
         # container gets only its own key.\n",
        secret.what
    ));
    Some(set(&out, &secret.keys.map(|k| (k, value.as_str()))))
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
    fn shared_secrets_are_added_once_keeping_every_line() {
        let old = "# mine\nBTY_ADMIN_PASSWORD_HASH='$a$b'\nWITHCACHE_LOG='debug'";
        let out = add_shared_secret(old, SERVICE_TOKEN, "tok-0123456789abcdef").unwrap();
        assert!(out.starts_with(&format!("{old}\n")), "{out}");
        let v = parse(&out);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
        assert_eq!(get("BTY_WITHCACHE_TOKEN"), Some("tok-0123456789abcdef"));
        assert_eq!(get("WITHCACHE_API_TOKEN"), Some("tok-0123456789abcdef"));
        assert_eq!(get("BTY_ADMIN_PASSWORD_HASH"), Some("$a$b"));
        assert_eq!(
            add_shared_secret(&out, SERVICE_TOKEN, "other"),
            None,
            "added twice"
        );
        // Another secret is added beside it, with its own value.
        let both = add_shared_secret(&out, RELAY_KEY, "relay-0123456789").unwrap();
        let v = parse(&both);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
        assert_eq!(get("BTY_PXE_RELAY_KEY"), Some("relay-0123456789"));
        assert_eq!(get("BTY_TFTP_RELAY_KEY"), Some("relay-0123456789"));
        assert_eq!(get("BTY_WITHCACHE_TOKEN"), Some("tok-0123456789abcdef"));
        // One key alone: the other gets its value, not a new one.
        let half = "WITHCACHE_API_TOKEN='kept-0123456789abcdef'\n";
        let out = add_shared_secret(half, SERVICE_TOKEN, "fresh").unwrap();
        assert_eq!(
            parse(&out),
            vec![
                ("WITHCACHE_API_TOKEN".into(), "kept-0123456789abcdef".into()),
                ("BTY_WITHCACHE_TOKEN".into(), "kept-0123456789abcdef".into())
            ]
        );
    }
}
