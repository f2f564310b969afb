//! Where the agent's server and MAC come from: the kernel command line
//! (`bty.server=`, `bty.mac=`, first occurrence wins), or flags.

/// What the kernel command line says about bty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelArgs {
    /// `bty.server=`, normalised with [`normalise_server`].
    pub server: Option<String>,
    /// `bty.mac=`, verbatim.
    pub mac: Option<String>,
}

/// Parse the text of `/proc/cmdline`. Values never contain spaces (bty-web
/// renders them from validated text), so whitespace splitting is exact.
pub fn parse(cmdline: &str) -> KernelArgs {
    let mut args = KernelArgs::default();
    for token in cmdline.split_whitespace() {
        if let Some(v) = token.strip_prefix("bty.server=") {
            if args.server.is_none() && !v.is_empty() {
                args.server = Some(normalise_server(v));
            }
        } else if let Some(v) = token.strip_prefix("bty.mac=") {
            if args.mac.is_none() && !v.is_empty() {
                args.mac = Some(v.to_string());
            }
        }
    }
    args
}

/// `host[:port]` or a URL → a base URL without a trailing slash.
pub fn normalise_server(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrence_wins_and_others_are_ignored() {
        let a = parse(
            "BOOT_IMAGE=x console=ttyS0 bty.server=http://10.0.2.2:8080/ bty.mac=52:54:00:12:34:56 \
             bty.server=http://evil bty.mac=00:00:00:00:00:00 quiet",
        );
        assert_eq!(a.server.as_deref(), Some("http://10.0.2.2:8080"));
        assert_eq!(a.mac.as_deref(), Some("52:54:00:12:34:56"));
    }

    #[test]
    fn bare_host_gets_a_scheme_and_missing_values_stay_none() {
        let a = parse("bty.server=10.0.0.1:8080 bty.mac=");
        assert_eq!(a.server.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(a.mac, None);
        assert_eq!(parse("quiet splash\n"), KernelArgs::default());
        // A token that only starts like ours is not ours.
        assert_eq!(parse("xbty.server=h").server, None);
    }
}
