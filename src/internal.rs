//! `bty-lab internal ...`: what runs inside the images. The static bty-lab
//! binary is the entrypoint of all three images, so one executable is all an
//! air-gapped lab needs to build them.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cli::Internal;
use crate::media::{self, Media, Mode};
use crate::{http, services, stack};

/// Run an internal subcommand.
pub async fn run(cmd: Internal) -> Result<()> {
    match cmd {
        Internal::Healthcheck { url } => healthcheck(&url),
        Internal::DummyHttp { listen } => dummy_http(listen, shutdown_signal()).await,
        Internal::Web => web().await,
        Internal::Withcache => cache().await,
        Internal::Tftp => tftp().await,
    }
}

/// bty-web from `$BTY_CONFIG_FILE` (default /etc/bty/bty.toml) + BTY_* env,
/// after placing the media the image carries.
async fn web() -> Result<()> {
    services::init_tracing();
    let path = std::env::var_os("BTY_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/bty/bty.toml".into());
    let config = services::web_config(&path)?;
    seed_boot_dir(&config);
    let listen = config.listen_addr()?;
    services::web(config, bind_tcp(listen).await?, shutdown_signal()).await
}

/// withcache from WITHCACHE_* env, data in `$WITHCACHE_DATA_DIR` (/data).
async fn cache() -> Result<()> {
    services::init_tracing();
    let listen = env_addr("WITHCACHE_LISTEN", "0.0.0.0:3000")?;
    let data = std::env::var_os("WITHCACHE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/data".into());
    let opts = withcache::Options::from_env(data);
    services::withcache(opts, bind_tcp(listen).await?, shutdown_signal()).await
}

/// bty-tftp serving `$BTY_TFTP_ROOT` (the image's boot dir).
async fn tftp() -> Result<()> {
    services::init_tracing();
    let listen = env_addr("BTY_TFTP_LISTEN", "0.0.0.0:69")?;
    let root = std::env::var_os("BTY_TFTP_ROOT")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| stack::IMAGE_BOOT_DIR.into());
    let rules = second_stage_from_env()?;
    let relay_url = std::env::var(stack::RELAY_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let relay = bty_tftp::Relay::from_env(relay_url.as_deref(), None)?;
    let sock = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("binding udp {listen}"))?;
    let breaker = services::describe_second_stage(&rules);
    let relay_note = match &relay {
        Some(r) => format!("grub/ relayed to {}", r.url),
        None => "no relay".to_string(),
    };
    tracing::info!(
        "bty-tftp on udp {listen}, serving {}; {breaker}; {relay_note}",
        root.display()
    );
    services::tftp(root, sock, rules, relay, shutdown_signal()).await
}

/// The loop breaker from `BTY_TFTP_SECOND_STAGE` (deploy renders it with
/// bty-web's real address). Unset or empty: on for every iPXE bootfile,
/// chaining to `${next-server}:8080`, so an image run by hand breaks the loop
/// too; `off`: no rules.
fn second_stage_from_env() -> Result<Vec<bty_tftp::SecondStageRule>> {
    match std::env::var(stack::SECOND_STAGE_ENV) {
        Ok(v) if !v.trim().is_empty() => services::parse_second_stage(&v),
        _ => services::parse_second_stage(&stack::IPXE_FILES.join(",")),
    }
}

/// Place the netboot media this image carries (`/srv/bty/boot`: kernel,
/// initrd and bootfiles) into bty-web's boot dir when that is
/// elsewhere (the bind-mounted state dir), by the automatic place rule: a
/// missing, older or different media is replaced; a newer one, or the
/// operator's `--netboot` media unless it is older, is kept (see
/// crate::media::place). This is how a pulled image flashes with no build
/// on the host. Said in the log; failures are logged, not fatal: the UI
/// and API work without media.
fn seed_boot_dir(config: &bty_web::Config) {
    let boot = config.boot_dir();
    let image = Path::new(stack::IMAGE_BOOT_DIR);
    if boot == image || !image.is_dir() {
        return;
    }
    let m = match Media::from_dir(image) {
        Ok(m) => m,
        Err(e) => {
            let at = image.display();
            return tracing::warn!("reading the image's netboot media in {at}: {e:#}");
        }
    };
    let (kernel, initrd) = (&config.boot.kernel, &config.boot.initrd);
    match media::place(&m, &boot, kernel, initrd, Mode::Auto) {
        Ok(placed) => {
            for (warn, line) in media::summary(&m, &boot, &placed) {
                if warn {
                    tracing::warn!("{line}");
                } else {
                    tracing::info!("{line}");
                }
            }
        }
        Err(e) => tracing::warn!(
            "placing the image's netboot media into {}: {e:#}",
            boot.display()
        ),
    }
}

async fn bind_tcp(a: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("binding tcp {a}"))
}

fn env_addr(key: &str, default: &str) -> Result<SocketAddr> {
    let v = std::env::var(key).unwrap_or_else(|_| default.to_string());
    v.parse()
        .with_context(|| format!("{key}={v} is not an address:port"))
}

/// Resolves on SIGTERM (what engines send on stop) or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Exit 0 if the URL answers: HTTP 200, or any TFTP reply (DATA or ERROR
/// both prove the server loop is alive).
pub fn healthcheck(url: &str) -> Result<()> {
    let timeout = Duration::from_secs(2);
    if let Some(rest) = url.strip_prefix("tftp://") {
        return tftp_answers(rest, timeout);
    }
    let (code, _) = http::get(url, None, timeout)?;
    if code != 200 {
        bail!("{url} answered {code}");
    }
    Ok(())
}

/// Does the TFTP server at `HOST:PORT[/FILE]` answer a read request?
fn tftp_answers(rest: &str, timeout: Duration) -> Result<()> {
    let (hostport, file) = rest.split_once('/').unwrap_or((rest, "undionly.kpxe"));
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("{hostport}: need ip:port"))?;
    let bind = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(timeout))?;
    let rrq = [&[0, 1], file.as_bytes(), b"\0octet\0"].concat();
    s.send_to(&rrq, addr)?;
    let mut buf = [0u8; 1024];
    let (n, from) = s
        .recv_from(&mut buf)
        .with_context(|| format!("no TFTP answer from {addr}"))?;
    if n >= 4 && buf[1] == 3 {
        // Be polite: ERROR (opcode 5, code 0) ends the transfer we started.
        let _ = s.send_to(&[0, 5, 0, 0, b'p', b'r', b'o', b'b', b'e', 0], from);
    }
    if n < 4 || !matches!(buf[1], 3 | 5 | 6) {
        bail!("unexpected TFTP reply from {addr}");
    }
    Ok(())
}

/// A stand-in HTTP service for engine tests: `/healthz` answers 200 and any
/// other path needs HTTP Basic `bty-lab` + the password whose argon2 hash is
/// in an `*_ADMIN_PASSWORD_HASH` env var (as the real services do).
pub async fn dummy_http(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    serve_dummy(bind_tcp(listen).await?, shutdown).await
}

/// [`dummy_http`] on an already bound listener.
pub async fn serve_dummy(
    l: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let listen = l.local_addr()?;
    let hash = std::env::vars()
        .find(|(k, _)| k.ends_with("_ADMIN_PASSWORD_HASH"))
        .map(|(_, v)| v);
    eprintln!("dummy-http listening on {listen}");
    tokio::pin!(shutdown);
    loop {
        let (sock, _) = tokio::select! {
            r = l.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        tokio::spawn(answer_dummy(sock, hash.clone()));
    }
}

/// One request to the dummy: `/healthz` is open, the rest needs the login.
async fn answer_dummy(mut sock: tokio::net::TcpStream, hash: Option<String>) {
    let mut buf = vec![0u8; 8192];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    let req = String::from_utf8_lossy(&buf[..n]).to_string();
    let open = req.split_whitespace().nth(1) == Some("/healthz");
    let ok = open
        || tokio::task::spawn_blocking(move || basic_ok(&req, hash.as_deref()))
            .await
            .unwrap_or(false);
    let (status, body) = if ok {
        ("200 OK", "{\"status\":\"ok\"}")
    } else {
        ("401 Unauthorized", "{\"message\":\"login required\"}")
    };
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

fn basic_ok(req: &str, hash: Option<&str>) -> bool {
    use base64::Engine as _;
    let Some(hash) = hash else { return true };
    let Some(line) = req
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization: basic "))
    else {
        return false;
    };
    let token = line[21..].trim();
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(token) else {
        return false;
    };
    let raw = String::from_utf8_lossy(&raw).to_string();
    let Some((u, p)) = raw.split_once(':') else {
        return false;
    };
    u == "bty-lab" && crate::secrets::verify_password(p, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tftp_healthcheck_fails_without_server() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        drop(s);
        assert!(healthcheck(&format!("tftp://127.0.0.1:{port}/x")).is_err());
    }

    #[tokio::test]
    async fn dummy_http_health_and_basic_auth() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(dummy_http(addr, async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let url = format!("http://{addr}/healthz");
        tokio::task::spawn_blocking(move || healthcheck(&url))
            .await
            .unwrap()
            .unwrap();
        tx.send(()).unwrap();
        h.await.unwrap().unwrap();
    }
}
