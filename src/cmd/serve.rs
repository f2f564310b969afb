//! `bty-lab serve`: bty-web, withcache and (optionally) bty-tftp in this
//! one process, no container engine: the embedded "one box" setup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::media::{self, Media, Mode};
use crate::{hostaddr, services};

/// `$XDG_DATA_HOME/bty` when XDG_DATA_HOME is set, else `./bty-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("bty"),
        _ => PathBuf::from("bty-data"),
    }
}

/// The bty.toml `serve` runs bty-web with.
pub fn serve_toml(state_dir: &Path, web: SocketAddr, withcache_url: &str) -> String {
    let q = |s: &str| toml_edit::Value::from(s).to_string().trim().to_string();
    format!(
        "# Written by `bty-lab serve`; rewritten on every start.\n\
         [server]\nlisten = {}\nstate_dir = {}\n\n\
         [boot]\ndir = {}\n\n\
         [withcache]\nurl = {}\n\n\
         [admin]\nuser = \"bty-lab\"\npassword = \"bty-lab\"\n",
        q(&web.to_string()),
        q(&state_dir.join("web").display().to_string()),
        q(&state_dir.join("boot").display().to_string()),
        q(withcache_url),
    )
}

/// The media serve places: the operator's `--netboot DIR` (both files
/// there, else an error), else this binary's, cached or built now. Either
/// way before anything listens: a serve that could not flash a machine
/// does not start.
async fn get_media(a: &ServeArgs) -> Result<(Media, Mode)> {
    if let Some(dir) = crate::cli::netboot_dir(a.netboot.as_deref()) {
        if a.from.is_some() {
            anyhow::bail!(
                "--from builds this binary's media, and $BTY_NETBOOT_DIR names the operator's \
                 ({}): choose one (unset BTY_NETBOOT_DIR to build)",
                dir.display()
            );
        }
        let m = Media::from_dir(&dir)
            .with_context(|| format!("reading --netboot {}", dir.display()))?;
        m.require_pair().context("--netboot")?;
        return Ok((m, Mode::Operator));
    }
    let opts = media::Options {
        from: a.from.clone(),
        cache: None,
    };
    let m = tokio::task::spawn_blocking(move || media::ensure(&opts))
        .await
        .context("the media build panicked")?
        .map_err(|e| {
            anyhow::anyhow!(
                "no netboot media, so no machine could be flashed; nothing was started: {e:#}\n{}",
                super::media_ways_out(false, true)
            )
        })?;
    Ok((m, Mode::Auto))
}

/// The sockets serve listens on: bty-web's, withcache's, bty-tftp's.
async fn bind(a: &ServeArgs) -> Result<(TcpListener, TcpListener, Option<UdpSocket>)> {
    let web_addr = SocketAddr::new(a.bind, a.port_web);
    let cache_addr = SocketAddr::new(a.bind, a.port_cache);
    let bind_err = |what: &str, addr: SocketAddr| {
        format!("binding {what} on {addr} (is the port in use? choose another with --port-*)")
    };
    let web_l = TcpListener::bind(web_addr)
        .await
        .with_context(|| bind_err("bty-web", web_addr))?;
    let cache_l = TcpListener::bind(cache_addr)
        .await
        .with_context(|| bind_err("withcache", cache_addr))?;
    let tftp_sock = match a.tftp_port {
        Some(p) => {
            let addr = SocketAddr::new(a.bind, p);
            Some(UdpSocket::bind(addr).await.with_context(|| {
                format!(
                    "binding TFTP on udp {addr}{}",
                    if p < 1024 {
                        " (ports below 1024 need root)"
                    } else {
                        ""
                    }
                )
            })?)
        }
        None => None,
    };
    Ok((web_l, cache_l, tftp_sock))
}

pub async fn run(a: ServeArgs) -> Result<()> {
    let data = crate::deploydir::absolute(&a.data_dir.clone().unwrap_or_else(default_data_dir))?;
    for sub in ["web", "withcache"] {
        std::fs::create_dir_all(data.join(sub))
            .with_context(|| format!("creating {}", data.join(sub).display()))?;
    }
    // A port in use is said at once, not after a media build; then the
    // media, before anything listens.
    drop(bind(&a).await?);
    let (media, mode) = get_media(&a).await?;
    let host = if a.bind.is_unspecified() {
        hostaddr::detect().unwrap_or(a.bind)
    } else {
        a.bind
    };
    let host = if host.is_unspecified() {
        "127.0.0.1".parse()?
    } else {
        host
    };
    let (web_l, cache_l, tftp_sock) = bind(&a).await?;
    let withcache_url = format!(
        "http://{}:{}",
        hostaddr::url_host(&host),
        cache_l.local_addr()?.port()
    );
    // The loop breaker: iPXE's second TFTP fetch of its own bootfile gets a
    // script chaining to this bty-web, as machines reach it.
    let bootstrap_url = format!(
        "http://{}:{}/pxe-bootstrap.ipxe",
        hostaddr::url_host(&host),
        web_l.local_addr()?.port()
    );
    let second_stage = if a.no_second_stage {
        Vec::new()
    } else {
        services::second_stage_rules(&bootstrap_url)?
    };
    let toml_path = data.join("bty.toml");
    crate::deploydir::write_atomic(
        &toml_path,
        &serve_toml(&data, web_l.local_addr()?, &withcache_url),
        0o600,
    )?;

    crate::services::init_tracing();
    let mut web_config = services::web_config(&toml_path)?;
    // One bty-web -> withcache service token per data dir, for both.
    let token = crate::secrets::load_or_create_token(&data.join("service-token"))?;
    web_config.withcache.token = Some(token.clone());
    let boot_dir = web_config.boot_dir();
    let placed = media::place(
        &media,
        &boot_dir,
        &web_config.boot.kernel,
        &web_config.boot.initrd,
        mode,
    )?;
    let mut cache_opts = withcache::Options::from_env(data.join("withcache"));
    if cache_opts.admin_password.is_none() && cache_opts.admin_password_hash.is_none() {
        cache_opts.admin_password = Some(crate::secrets::DEFAULT_PASSWORD.to_string());
    }
    cache_opts.api_token = Some(bty_auth::ServiceToken::new(token));

    let (tx, rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let s = stop(rx.clone());
        tasks.spawn(async move { ("bty-web", services::web(web_config, web_l, s).await) });
    }
    {
        let s = stop(rx.clone());
        tasks.spawn(async move {
            (
                "withcache",
                services::withcache(cache_opts, cache_l, s).await,
            )
        });
    }
    let tftp_note = services::describe_second_stage(&second_stage);
    if let Some(sock) = tftp_sock {
        let (b, s) = (boot_dir.clone(), stop(rx.clone()));
        tasks.spawn(async move { ("bty-tftp", services::tftp(b, sock, second_stage, s).await) });
    }

    eprintln!("bty-lab serve: state in {}", data.display());
    media::report(&media, &boot_dir, &placed);
    let h = hostaddr::url_host(&host);
    eprintln!(
        "  bty-web UI:  http://{h}:{}/ui   (login: bty-lab / bty-lab)",
        a.port_web
    );
    eprintln!("  withcache:   {withcache_url}/     (login: bty-lab / bty-lab)");
    if let Some(p) = a.tftp_port {
        eprintln!("  TFTP:        udp/{p}; {tftp_note}");
    }
    eprintln!("Ctrl-C stops everything.");

    let mut result = Ok(());
    tokio::select! {
        _ = crate::internal::shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            // A service stopping on its own is an error: take the rest down.
            let (name, r) = done.context("a service task panicked")?;
            result = match r {
                Ok(()) => Err(anyhow::anyhow!("{name} stopped unexpectedly")),
                Err(e) => Err(e.context(format!("{name} failed"))),
            };
        }
    }
    let _ = tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok((name, Err(e))) = done {
            if result.is_ok() {
                result = Err(e.context(format!("{name} failed while stopping")));
            }
        }
    }
    if result.is_ok() {
        eprintln!("bty-lab serve: stopped");
    }
    result
}
