//! Sites (`[[sites]]` in bty.toml): which withcache a target downloads
//! its image from, by the subnet its address falls in. A rack's cache in
//! front of the central one (withcache's `WITHCACHE_UPSTREAM`) makes an
//! image cross the WAN once per site.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One `[[sites]]` table of bty.toml, as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's name (letters, digits and `. _ - +`), unique.
    pub name: String,
    /// The subnets of its targets as CIDRs (`10.7.0.0/16`, `fd00:7::/48`);
    /// an address in several sites belongs to the longest prefix.
    pub subnets: Vec<String>,
    /// Base URL of the site's withcache, as its targets reach it; its
    /// upstream is usually the central `[withcache] url`.
    pub withcache: String,
}

/// One site, parsed.
#[derive(Debug, Clone)]
struct Site {
    name: String,
    subnets: Vec<IpNet>,
    withcache: String,
}

/// Every configured site; empty when bty.toml has none.
#[derive(Debug, Clone, Default)]
pub struct Sites(Vec<Site>);

/// The site an address falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteRef<'a> {
    /// The site's name.
    pub name: &'a str,
    /// Its withcache base URL, without a trailing slash.
    pub withcache: &'a str,
}

impl Sites {
    /// Parse the sites of a validated configuration; an error names the
    /// site and the field (`Config` validation calls this too).
    pub fn new(cfgs: &[SiteConfig]) -> anyhow::Result<Sites> {
        let mut out: Vec<Site> = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            let site = parse(i, c)?;
            if out.iter().any(|s| s.name == site.name) {
                anyhow::bail!(
                    "[[sites]] name = {:?} is used twice; each site needs its own name",
                    site.name
                );
            }
            out.push(site);
        }
        Ok(Sites(out))
    }

    /// Whether no site is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The site `ip` falls in: the one with the longest matching prefix
    /// (a /26 inside a /16 wins), the first listed on a tie. IPv4-mapped
    /// IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket sees)
    /// count as their IPv4 address.
    pub fn site_of(&self, ip: IpAddr) -> Option<SiteRef<'_>> {
        let ip = ip.to_canonical();
        let mut best: Option<(u8, &Site)> = None;
        for site in &self.0 {
            for net in site.subnets.iter().filter(|n| n.contains(&ip)) {
                if best.is_none_or(|(len, _)| net.prefix_len() > len) {
                    best = Some((net.prefix_len(), site));
                }
            }
        }
        best.map(|(_, s)| SiteRef {
            name: &s.name,
            withcache: &s.withcache,
        })
    }

    /// The withcache base URL of the site `ip` falls in, if any.
    pub fn withcache_for(&self, ip: IpAddr) -> Option<&str> {
        self.site_of(ip).map(|s| s.withcache)
    }
}

/// Check and parse the `i`th `[[sites]]` table.
fn parse(i: usize, c: &SiteConfig) -> anyhow::Result<Site> {
    let which = format!("[[sites]] #{} ({:?})", i + 1, c.name);
    bty_proto::text::validate_name("name", &c.name).map_err(|e| anyhow::anyhow!("{which}: {e}"))?;
    if c.subnets.is_empty() {
        anyhow::bail!("{which}: subnets must list at least one CIDR, e.g. [\"10.1.0.0/16\"]");
    }
    let subnets = c
        .subnets
        .iter()
        .map(|s| {
            s.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                anyhow::anyhow!(
                    "{which}: subnets: {s:?} is not a CIDR such as 10.1.0.0/16 or fd00:1::/64"
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    bty_proto::text::validate_http_url("withcache", &c.withcache)
        .map_err(|e| anyhow::anyhow!("{which}: {e}"))?;
    Ok(Site {
        name: c.name.clone(),
        subnets,
        withcache: c.withcache.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, subnets: &[&str], wc: &str) -> SiteConfig {
        SiteConfig {
            name: name.into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            withcache: wc.into(),
        }
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let s = Sites::new(&[
            site("campus", &["10.0.0.0/8", "fd00::/16"], "http://c:3000/"),
            site("rack7", &["10.7.1.0/24", "fd00:7::/48"], "http://r7:3000"),
        ])
        .unwrap();
        let wc = |ip: &str| s.withcache_for(ip.parse().unwrap());
        assert_eq!(wc("10.7.1.9"), Some("http://r7:3000"));
        assert_eq!(wc("10.7.2.9"), Some("http://c:3000"));
        assert_eq!(wc("fd00:7::5"), Some("http://r7:3000"));
        assert_eq!(wc("fd00:8::5"), Some("http://c:3000"));
        assert_eq!(wc("::ffff:10.7.1.9"), Some("http://r7:3000"));
        assert_eq!(wc("192.168.1.1"), None);
        assert_eq!(
            s.site_of("10.7.1.9".parse().unwrap()).unwrap().name,
            "rack7"
        );
        assert!(Sites::new(&[])
            .unwrap()
            .withcache_for("10.0.0.1".parse().unwrap())
            .is_none());
    }

    #[test]
    fn bad_sites_name_the_site_and_the_field() {
        let cases = [
            (vec![site("a b", &["10.0.0.0/8"], "http://c")], "name"),
            (vec![site("a", &[], "http://c")], "subnets"),
            (vec![site("a", &["10.0.0.0/33"], "http://c")], "subnets"),
            (vec![site("a", &["10.0.0.1"], "http://c")], "subnets"),
            (vec![site("a", &["10.0.0.0/8"], "ftp://c")], "withcache"),
            (vec![site("a", &["10.0.0.0/8"], "c:3000")], "withcache"),
            (
                vec![
                    site("a", &["10.0.0.0/8"], "http://c"),
                    site("a", &["10.1.0.0/16"], "http://d"),
                ],
                "used twice",
            ),
        ];
        for (cfg, says) in cases {
            let e = format!("{:#}", Sites::new(&cfg).unwrap_err());
            assert!(e.contains("[[sites]]"), "{e}");
            assert!(e.contains("\"a"), "names the site: {e}");
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
