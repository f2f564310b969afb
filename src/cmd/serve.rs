//! `bty-lab serve`: bty-web, withcache and (optionally) bty-tftp in this
//! one process, no container engine: the embedded "one box" setup. The
//! plan is checked first; a port in use is said before the media is got,
//! and nothing listens until the media is in place.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::media::{self, Media, Mode};
use crate::{hostaddr, services};

/// What `serve` will run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The state directory (absolute).
    pub data: PathBuf,
    pub bind: IpAddr,
    pub port_web: u16,
    pub port_cache: u16,
    pub tftp_port: Option<u16>,
    pub second_stage: bool,
    /// The operator's media (`--netboot`, `$BTY_NETBOOT_DIR`), else this
    /// binary's, built from `from` when not cached.
    pub netboot: Option<PathBuf>,
    pub from: Option<PathBuf>,
    /// `--allow-private-origins` (or'd with withcache's env).
    pub allow_private_origins: bool,
}

impl Plan {
    pub fn new(a: &ServeArgs) -> Result<Plan> {
        let data = a.data_dir.clone().unwrap_or_else(default_data_dir);
        let netboot = crate::cli::netboot_dir(a.netboot.as_deref());
        if let (Some(dir), Some(_)) = (&netboot, &a.from) {
            anyhow::bail!(
                "--from builds this binary's media, and $BTY_NETBOOT_DIR names the operator's \
                 ({}): choose one (unset BTY_NETBOOT_DIR to build)",
                dir.display()
            );
        }
        Ok(Plan {
            data: crate::deploydir::absolute(&data)?,
            bind: a.bind,
            port_web: a.port_web,
            port_cache: a.port_cache,
            tftp_port: a.tftp_port,
            second_stage: !a.no_second_stage,
            netboot,
            from: a.from.clone(),
            allow_private_origins: a.allow_private_origins,
        })
    }

    /// The address machines reach this host on, for the URLs.
    fn public_host(&self) -> Result<IpAddr> {
        let host = if self.bind.is_unspecified() {
            hostaddr::detect().unwrap_or(self.bind)
        } else {
            self.bind
        };
        Ok(if host.is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host
        })
    }
}

/// `$XDG_DATA_HOME/bty` when XDG_DATA_HOME is set, else `./bty-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("bty"),
        _ => PathBuf::from("bty-data"),
    }
}

/// The sockets serve listens on.
struct Sockets {
    web: TcpListener,
    cache: TcpListener,
    tftp: Option<UdpSocket>,
}

/// What the services are told about each other, as machines reach them.
struct Urls {
    withcache: String,
    /// bty-web's `/pxe-bootstrap.ipxe` (the loop breaker chains to it).
    bootstrap: String,
}

pub async fn run(a: ServeArgs) -> Result<()> {
    let plan = Plan::new(&a)?;
    let chosen = match a.password_stdin {
        true => Some(crate::secrets::password_from_stdin()?),
        false => None,
    };
    make_dirs(&plan.data)?;
    // Before anything listens: whoever sees a port open finds the token,
    // and the login works.
    let token = crate::secrets::load_or_create_token(&plan.data.join("service-token"))?;
    let login = admin_login(&plan.data, chosen)?;
    // A port in use is said at once, not after a media build.
    drop(bind(&plan).await?);
    let (media, mode) = get_media(&plan).await?;
    let host = plan.public_host()?;
    let sockets = bind(&plan).await?;
    let urls = urls(host, &sockets)?;
    let toml_path = write_toml(&plan, &sockets, &urls, &login.hash)?;
    services::init_tracing();
    let relay_key = crate::secrets::session_secret();
    let (mut web_config, cache_opts) = configure(&plan, &toml_path, token, &login.hash)?;
    web_config.pxe.relay_key = Some(relay_key.clone());
    let relay = relay(&plan, &sockets, relay_key)?;
    let boot_dir = web_config.boot_dir();
    let (kernel, initrd) = (&web_config.boot.kernel, &web_config.boot.initrd);
    let placed = media::place(&media, &boot_dir, kernel, initrd, mode)?;
    let rules = second_stage(&plan, &urls)?;
    let tftp_note = services::describe_second_stage(&rules);
    let tftp = (rules, relay);
    let (tx, tasks) = spawn(sockets, web_config, cache_opts, &boot_dir, tftp);
    eprintln!("bty-lab serve: state in {}", plan.data.display());
    media::report(&media, &boot_dir, &placed);
    banner(&plan, host, &urls, &tftp_note, &login);
    wait(tx, tasks).await
}

/// Where a data dir keeps the admin password: its argon2 hash only.
pub const PASSWORD_HASH_FILE: &str = "admin-password-hash";

/// The admin login of both UIs.
struct Login {
    /// argon2id PHC string.
    hash: String,
    /// How it came to be.
    origin: LoginOrigin,
}

enum LoginOrigin {
    /// Made now; the only time it is shown.
    Generated(String),
    /// `--password-stdin`.
    Chosen,
    /// Kept from an earlier start.
    Kept,
}

/// `--password-stdin`'s password, else the one the data dir keeps, else a
/// random one; the data dir keeps its hash (mode 0600) either way.
fn admin_login(data: &Path, chosen: Option<String>) -> Result<Login> {
    use crate::secrets::{generated_password, hash_password, ADMIN_USER};
    let d = crate::safefs::Dir::open(data)?;
    let name = std::ffi::OsStr::new(PASSWORD_HASH_FILE);
    let (password, origin) = match chosen {
        Some(p) => (p, LoginOrigin::Chosen),
        None => match d.read_text(name)? {
            Some(h) if !h.trim().is_empty() => {
                let hash = h.trim().to_string();
                bty_auth::Credentials::new(ADMIN_USER, None, Some(hash.clone())).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is not a password hash ({e}); set a password with \
                         --password-stdin, or remove the file for a random one",
                        d.shown(name).display()
                    )
                })?;
                let origin = LoginOrigin::Kept;
                return Ok(Login { hash, origin });
            }
            _ => {
                let p = generated_password();
                (p.clone(), LoginOrigin::Generated(p))
            }
        },
    };
    let hash = hash_password(&password)?;
    d.write_new(name, format!("{hash}\n").as_bytes(), 0o600)?;
    Ok(Login { hash, origin })
}

fn make_dirs(data: &Path) -> Result<()> {
    for sub in ["web", "withcache"] {
        let d = data.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(())
}

/// The media serve places (see [`media::obtain`]), before anything
/// listens: a serve that could not flash a machine does not start.
async fn get_media(plan: &Plan) -> Result<(Media, Mode)> {
    let (netboot, from) = (plan.netboot.clone(), plan.from.clone());
    tokio::task::spawn_blocking(move || media::obtain(netboot.as_deref(), from))
        .await
        .context("the media build panicked")?
        .map_err(|e| {
            anyhow::anyhow!(
                "no netboot media, so no machine could be flashed; nothing was started: {e:#}"
            )
        })
}

async fn bind_tcp(what: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding {what} on {addr} (is the port in use? choose another with --port-*)")
    })
}

async fn bind(plan: &Plan) -> Result<Sockets> {
    let web = bind_tcp("bty-web", SocketAddr::new(plan.bind, plan.port_web)).await?;
    let cache = bind_tcp("withcache", SocketAddr::new(plan.bind, plan.port_cache)).await?;
    let tftp = match plan.tftp_port {
        Some(p) => {
            let addr = SocketAddr::new(plan.bind, p);
            let root = if p < 1024 {
                " (ports below 1024 need root)"
            } else {
                ""
            };
            let s = UdpSocket::bind(addr).await;
            Some(s.with_context(|| format!("binding TFTP on udp {addr}{root}"))?)
        }
        None => None,
    };
    Ok(Sockets { web, cache, tftp })
}

fn urls(host: IpAddr, s: &Sockets) -> Result<Urls> {
    let h = hostaddr::url_host(&host);
    Ok(Urls {
        withcache: format!("http://{h}:{}", s.cache.local_addr()?.port()),
        bootstrap: format!(
            "http://{h}:{}/pxe-bootstrap.ipxe",
            s.web.local_addr()?.port()
        ),
    })
}

/// The loop breaker: iPXE's second TFTP fetch of its own bootfile gets a
/// script chaining to this bty-web, as machines reach it.
fn second_stage(plan: &Plan, urls: &Urls) -> Result<Vec<bty_tftp::SecondStageRule>> {
    if !plan.second_stage {
        return Ok(Vec::new());
    }
    services::second_stage_rules(&urls.bootstrap)
}

/// bty-tftp's relay to this bty-web for the Secure Boot chain, with a key
/// made for this run (both services live in this process and get it here).
fn relay(plan: &Plan, s: &Sockets, key: String) -> Result<bty_tftp::Relay> {
    let host = match plan.bind {
        IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        a => a,
    };
    let url = format!(
        "http://{}:{}",
        hostaddr::url_host(&host),
        s.web.local_addr()?.port()
    );
    Ok(bty_tftp::Relay::new(url, key)?)
}

/// The bty.toml `serve` runs bty-web with.
pub fn serve_toml(
    state_dir: &Path,
    web: SocketAddr,
    withcache_url: &str,
    password_hash: &str,
) -> String {
    let q = |s: &str| toml_edit::Value::from(s).to_string().trim().to_string();
    format!(
        "# Written by `bty-lab serve`; rewritten on every start.\n\
         [server]\nlisten = {}\nstate_dir = {}\n\n\
         [boot]\ndir = {}\n\n\
         [withcache]\nurl = {}\n\n\
         [admin]\nuser = {}\npassword_hash = {}\n",
        q(&web.to_string()),
        q(&state_dir.join("web").display().to_string()),
        q(&state_dir.join("boot").display().to_string()),
        q(withcache_url),
        q(crate::secrets::ADMIN_USER),
        q(password_hash),
    )
}

fn write_toml(plan: &Plan, s: &Sockets, urls: &Urls, hash: &str) -> Result<PathBuf> {
    let path = plan.data.join("bty.toml");
    let text = serve_toml(&plan.data, s.web.local_addr()?, &urls.withcache, hash);
    crate::deploydir::write_atomic(&path, &text, 0o600)?;
    Ok(path)
}

/// bty-web's config and withcache's options: the data dir's login where
/// withcache's environment sets none, one service token for both.
fn configure(
    plan: &Plan,
    toml_path: &Path,
    token: String,
    hash: &str,
) -> Result<(bty_web::Config, withcache::Options)> {
    let mut web = services::web_config(toml_path)?;
    web.withcache.token = Some(token.clone());
    let mut cache = withcache::Options::from_env(plan.data.join("withcache"));
    if cache.admin_password.is_none() && cache.admin_password_hash.is_none() {
        cache.admin_password_hash = Some(hash.to_string());
    }
    cache.api_token = Some(bty_auth::ServiceToken::new(token));
    cache.allow_private_origins |= plan.allow_private_origins;
    Ok((web, cache))
}

type Tasks = JoinSet<(&'static str, Result<()>)>;

/// Start each service; they stop when `true` is sent.
fn spawn(
    s: Sockets,
    web: bty_web::Config,
    cache: withcache::Options,
    boot_dir: &Path,
    (rules, relay): (Vec<bty_tftp::SecondStageRule>, bty_tftp::Relay),
) -> (watch::Sender<bool>, Tasks) {
    let (tx, rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = JoinSet::new();
    let st = stop(rx.clone());
    tasks.spawn(async move { ("bty-web", services::web(web, s.web, st).await) });
    let st = stop(rx.clone());
    tasks.spawn(async move { ("withcache", services::withcache(cache, s.cache, st).await) });
    if let Some(sock) = s.tftp {
        let (b, st) = (boot_dir.to_path_buf(), stop(rx));
        let run = services::tftp(b, sock, rules, Some(relay), st);
        tasks.spawn(async move { ("bty-tftp", run.await) });
    }
    (tx, tasks)
}

fn banner(plan: &Plan, host: IpAddr, urls: &Urls, tftp_note: &str, login: &Login) {
    let h = hostaddr::url_host(&host);
    eprintln!("  bty-web UI:  http://{h}:{}/ui", plan.port_web);
    eprintln!("  withcache:   {}/", urls.withcache);
    if let Some(p) = plan.tftp_port {
        eprintln!("  TFTP:        udp/{p}; {tftp_note}");
    }
    let user = crate::secrets::ADMIN_USER;
    match &login.origin {
        LoginOrigin::Generated(pw) => eprintln!(
            "{}",
            crate::secrets::new_login_line(pw, "choose one with --password-stdin")
        ),
        LoginOrigin::Chosen => eprintln!("  login:       {user} (the password given on stdin)"),
        LoginOrigin::Kept => eprintln!(
            "  login:       {user} (the password shown at the first start; \
             --password-stdin sets another)"
        ),
    }
    if plan.bind.is_loopback() {
        eprintln!(
            "  listening on {} only: machines on the LAN cannot reach it; \
             pass --bind 0.0.0.0 (or the LAN address) to serve them",
            plan.bind
        );
    }
    eprintln!("Ctrl-C stops everything.");
}

/// Until Ctrl-C (or SIGTERM), or a service stopping on its own, which is
/// an error that takes the rest down.
async fn wait(tx: watch::Sender<bool>, mut tasks: Tasks) -> Result<()> {
    let mut result = Ok(());
    tokio::select! {
        _ = crate::internal::shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn plan(argv: &[&str]) -> Result<Plan> {
        let argv = [&["bty-lab", "serve"], argv].concat();
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Serve(a) => Plan::new(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_plan_is_absolute_and_second_stage_on_by_default() {
        let p = plan(&["--data-dir", "rel/data", "--netboot", "/m"]).unwrap();
        assert!(p.data.is_absolute() && p.data.ends_with("rel/data"));
        assert!(p.second_stage && p.tftp_port.is_none());
        assert_eq!(p.netboot, Some(PathBuf::from("/m")));
        let p = plan(&["--no-second-stage", "--tftp-port", "6969", "--from", "/d"]);
        let p = p.unwrap();
        assert!(!p.second_stage && p.tftp_port == Some(6969));
    }

    #[test]
    fn the_login_is_random_once_then_kept_and_only_its_hash_is_stored() {
        use crate::secrets::verify_password;
        let d = tempfile::tempdir().unwrap();
        let first = admin_login(d.path(), None).unwrap();
        let LoginOrigin::Generated(pw) = &first.origin else {
            panic!("a fresh data dir gets a generated password")
        };
        assert!(pw.len() >= 20 && verify_password(pw, &first.hash));
        let stored = std::fs::read_to_string(d.path().join(PASSWORD_HASH_FILE)).unwrap();
        assert_eq!(stored.trim(), first.hash);
        assert!(!stored.contains(pw.as_str()));
        let other = tempfile::tempdir().unwrap();
        let LoginOrigin::Generated(pw2) = admin_login(other.path(), None).unwrap().origin else {
            panic!("generated")
        };
        assert_ne!(pw, &pw2, "two data dirs get different passwords");

        let again = admin_login(d.path(), None).unwrap();
        assert!(matches!(again.origin, LoginOrigin::Kept));
        assert_eq!(again.hash, first.hash);

        let chosen = admin_login(d.path(), Some("correct horse".into())).unwrap();
        assert!(matches!(chosen.origin, LoginOrigin::Chosen));
        assert!(verify_password("correct horse", &chosen.hash));
        assert!(!verify_password(pw, &chosen.hash));
        let kept = admin_login(d.path(), None).unwrap();
        assert_eq!(kept.hash, chosen.hash, "a chosen password is kept too");
    }

    #[test]
    fn a_bad_or_linked_hash_file_is_refused_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(PASSWORD_HASH_FILE);
        std::fs::write(&p, "plain-text-password\n").unwrap();
        let e = admin_login(d.path(), None).err().unwrap();
        assert!(format!("{e:#}").contains("--password-stdin"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "plain-text-password\n"
        );
        std::fs::remove_file(&p).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = admin_login(d.path(), None).err().unwrap();
        assert_eq!(
            crate::exit::code_of(&e),
            crate::exit::Code::Refused,
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
    }

    #[test]
    fn serve_listens_on_loopback_unless_told() {
        let p = plan(&["--data-dir", "d"]).unwrap();
        assert!(p.bind.is_loopback(), "{}", p.bind);
        let p = plan(&["--data-dir", "d", "--bind", "0.0.0.0"]).unwrap();
        assert!(p.bind.is_unspecified());
    }

    #[test]
    fn the_toml_quotes_every_path() {
        let t = serve_toml(
            Path::new("/srv/a \"b\""),
            "127.0.0.1:8080".parse().unwrap(),
            "http://h:3000",
            "$argon2id$v=19$x",
        );
        let v: toml_edit::DocumentMut = t.parse().unwrap();
        assert_eq!(v["server"]["state_dir"].as_str(), Some("/srv/a \"b\"/web"));
        assert_eq!(v["withcache"]["url"].as_str(), Some("http://h:3000"));
        assert_eq!(
            v["admin"]["password_hash"].as_str(),
            Some("$argon2id$v=19$x")
        );
        assert!(v["admin"].get("password").is_none());
    }
}
