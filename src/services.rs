//! The three services as library calls, shared by `serve` (all in one
//! process) and `internal web|withcache|tftp` (one per container). The
//! service crates own their behaviour; this only wires config to them.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};

/// bty-web's configuration: the file plus `BTY_<SECTION>_<KEY>` env.
pub fn web_config(path: &Path) -> Result<bty_web::Config> {
    bty_web::Config::load(Some(path))
        .with_context(|| format!("loading bty-web config {}", path.display()))
}

/// bty-web on `listener`.
pub async fn web(
    config: bty_web::Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    bty_web::serve(config, listener, shutdown).await
}

/// withcache with `opts` on `listener`.
pub async fn withcache(
    opts: withcache::Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    withcache::serve(opts, listener, shutdown).await
}

/// bty-tftp serving `root` on `socket`, with `second_stage` rules (the
/// loop breaker; empty: off) and `relay` (the Secure Boot chain's `grub/`
/// reads, answered by bty-web; none: those machines cannot boot).
pub async fn tftp(
    root: PathBuf,
    socket: UdpSocket,
    second_stage: Vec<bty_tftp::SecondStageRule>,
    relay: Option<bty_tftp::Relay>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if relay.is_none() {
        tracing::warn!(
            "bty-tftp has no relay to bty-web: UEFI machines booting shimx64.efi (the Secure \
             Boot chain) will stop in GRUB; set {} and {}",
            bty_tftp::relay::RELAY_ENV,
            bty_tftp::relay::RELAY_KEY_ENV
        );
    }
    let opts = bty_tftp::Options {
        second_stage,
        relay,
        ..bty_tftp::Options::new(root)
    };
    bty_tftp::serve(opts, socket, shutdown).await
}

/// Second-stage rules chaining every iPXE bootfile to `bootstrap_url`.
pub fn second_stage_rules(bootstrap_url: &str) -> Result<Vec<bty_tftp::SecondStageRule>> {
    parse_second_stage(&crate::stack::second_stage_spec(bootstrap_url))
}

/// A `BTY_TFTP_SECOND_STAGE` value: `off` (any case) is no rules; anything
/// else is a comma-separated list of `NAME[=URL]` rules, as bty-tftp's
/// `--second-stage` takes them (a NAME alone chains to
/// `http://${next-server}:8080/pxe-bootstrap.ipxe`).
pub fn parse_second_stage(spec: &str) -> Result<Vec<bty_tftp::SecondStageRule>> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    let rules = spec
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.parse().map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("{}={spec:?}", crate::stack::SECOND_STAGE_ENV))?;
    if rules.is_empty() {
        anyhow::bail!(
            "{}={spec:?} names no rule; use off, or NAME[=URL] items separated by commas",
            crate::stack::SECOND_STAGE_ENV
        );
    }
    Ok(rules)
}

/// One line saying what the loop breaker does, for the start-up log.
pub fn describe_second_stage(rules: &[bty_tftp::SecondStageRule]) -> String {
    if rules.is_empty() {
        return "second stage: off (a stock iPXE fetching its own bootfile again gets the binary)"
            .to_string();
    }
    let mut urls: Vec<&str> = rules.iter().map(|r| r.chain_url.as_str()).collect();
    urls.dedup();
    format!(
        "second stage: {} -> chain {}",
        rules
            .iter()
            .map(|r| r.file.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        urls.join(" / ")
    )
}

/// Log to stderr (what engines collect), `RUST_LOG` or info by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Engines store stderr as the container log: no colour codes there.
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_stage_spec_round_trips_and_off_is_off() {
        let rules = second_stage_rules("http://10.0.0.5:8080/pxe-bootstrap.ipxe").unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.file.as_str()).collect();
        assert_eq!(names, ["undionly.kpxe", "snponly.efi", "ipxe.efi"]);
        assert!(rules
            .iter()
            .all(|r| r.chain_url == "http://10.0.0.5:8080/pxe-bootstrap.ipxe"));
        let v6 = second_stage_rules("http://[fd00::5]:9080/pxe-bootstrap.ipxe").unwrap();
        assert_eq!(v6[0].chain_url, "http://[fd00::5]:9080/pxe-bootstrap.ipxe");
        assert!(parse_second_stage("off").unwrap().is_empty());
        assert!(parse_second_stage(" OFF ").unwrap().is_empty());
        let one = parse_second_stage("undionly.kpxe").unwrap();
        assert_eq!(one[0].chain_url, bty_tftp::second_stage::DEFAULT_CHAIN_URL);
    }

    #[test]
    fn bad_second_stage_values_are_refused_with_the_key_named() {
        for bad in ["", " , ", "x=ftp://h/", "../x", "a=http://h/ b"] {
            let e = format!("{:#}", parse_second_stage(bad).unwrap_err());
            assert!(e.contains("BTY_TFTP_SECOND_STAGE"), "{bad:?}: {e}");
        }
    }
}
