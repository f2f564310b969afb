//! `bty-lab deploy`: render, lay out data, get images, start, wait healthy.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::cli::{DeployArgs, ImagesFrom};
use crate::engine::{
    self, containers, images,
    ports::{self, Proto},
    Engine,
};
use crate::media::{self, Media, Mode};
use crate::render::Settings;
use crate::stack::{self, Net, Service};
use crate::{deploydir, quadlet, secrets, ui};

pub async fn run(a: DeployArgs) -> Result<()> {
    let (mut s, old) = super::resolve_settings(&a.render, a.images)?;
    let mut steps = ui::Steps::new(7);

    steps.step("checking");
    // Quadlet asked for (now or by an earlier deploy): refuse before
    // anything is written when systemd is not there to run the units.
    let quadlet_asked = a.render.systemd || s.quadlet;
    if a.no_systemd && s.quadlet {
        bail!(
            "{} runs under Quadlet units from an earlier deploy; --no-systemd cannot switch it \
             in place. Nothing was changed. Run `bty-lab purge {}` first, then deploy with --no-systemd",
            s.dest.display(),
            s.dest.display()
        );
    }
    if quadlet_asked {
        quadlet::require_systemd()?;
    }
    super::check_dest(&s.dest, old.is_some(), a.render.force)?;
    if let Some(o) = &old {
        if o.version != stack::VERSION {
            ui::warn(format!(
                "{} runs bty {}; this CLI is {}. Re-deploying keeps {}; move with `bty-lab upgrade {}`",
                s.dest.display(), o.version, stack::VERSION, o.version, s.dest.display()
            ));
        }
    }
    if !deploydir::is_root() {
        bail!(
            "deploy needs root: the data dirs are given to uid {} (the containers' user){}. Re-run with sudo",
            stack::SERVICE_UID,
            if s.tftp { " and bty-tftp binds udp/69" } else { "" }
        );
    }
    let engine = engine::connect_for(a.engine.engine, s.engine.as_ref(), &s.dest).await?;
    ui::detail(format!(
        "engine: {} {} at {}{}",
        engine.kind,
        engine.version,
        engine.addr,
        if a.engine.engine.is_none() && s.engine.is_some() {
            " (remembered from the last deploy)"
        } else {
            ""
        }
    ));
    check_engine_switch(&engine, &s).await?;
    s.engine = Some(engine.remembered());
    ui::detail(format!("host address: {}", s.host_addr));
    if s.host_addr.is_loopback() {
        ui::warn(
            "the host address is loopback: machines on the LAN, and bty-web inside its \
             container, cannot reach withcache there; pass --host-addr with the LAN address",
        );
    }
    // As root on a systemd host with a Quadlet-capable Podman, the units
    // are the natural owner of the containers (restart on boot).
    let quadlet_auto = !a.no_systemd
        && deploydir::is_root()
        && quadlet::systemd_running()
        && engine.kind == engine::Kind::Podman
        && quadlet::podman_has_quadlet(&engine.version);
    if quadlet_asked || quadlet_auto {
        if engine.kind != engine::Kind::Podman {
            bail!(
                "--systemd installs Quadlet units, which Podman runs; the engine found is {} at {}. \
                 Nothing was changed. Pass --engine podman (Podman >= 4.4), or deploy without --systemd",
                engine.kind,
                engine.addr
            );
        }
        if !quadlet::podman_has_quadlet(&engine.version) {
            ui::warn(format!(
                "Podman {} predates Quadlet (4.4): systemd will not generate services from the units",
                engine.version
            ));
        }
        s.quadlet = true;
        s.systemd = true;
        ui::detail(format!(
            "mode: Quadlet units in {} (systemd starts the containers)",
            quadlet::unit_dir().display()
        ));
    }
    check_ports(&engine, &s).await?;
    // The netboot media, before anything is written: the operator's must be
    // complete, and images built here carry this binary's (got now when
    // they will surely be built, else only if `auto` comes to build).
    let operator = match crate::cli::netboot_dir(a.netboot.as_deref()) {
        Some(dir) => Some(operator_media(&dir)?),
        None => None,
    };
    let mut boot = images::Boot::new(
        media::Options {
            from: a.from.clone(),
            cache: None,
        },
        super::media_ways_out(s.images != ImagesFrom::Pull, false),
    );
    if s.images == ImagesFrom::Local {
        boot.get().await?;
    }

    steps.step(format!("writing deploy files to {}", s.dest.display()));
    super::write_deploy_files(&s)?;

    steps.step(format!("creating data layout in {}", s.data_dir.display()));
    for d in deploydir::make_data_layout(&s)? {
        ui::detail(format!("created {}", d.display()));
    }
    prepare_boot_dir(&s, operator.as_ref())?;
    if let Some(user) = deploydir::chown_to_sudo_user(&s.dest)? {
        ui::detail(format!("{} given back to {user}", s.dest.display()));
    }

    steps.step(format!("getting images ({})", images_word(s.images)));
    let services = s.services();
    obtain_images(&engine, &s, &services, s.images, &mut boot).await?;

    let mut created: Vec<String> = Vec::new();
    let timeout = Duration::from_secs(a.timeout);
    let result = if s.quadlet {
        start_quadlet(&engine, &s, &services, &mut steps, &mut created, timeout).await
    } else {
        start_stack(&engine, &s, &services, &mut steps, &mut created, timeout).await
    };
    if let Err(e) = result {
        if s.quadlet {
            // Units that systemd would keep restarting are taken down again.
            let (removed, failed) = quadlet::remove(&s);
            let left = if failed.is_empty() {
                "nothing".to_string()
            } else {
                failed.join("; ")
            };
            bail!(
                "{e:#}\n\ndeploy did not finish. Tore down: {}.\nLeft behind: {left}.\n\
                 The deploy files and data stay in {}; re-run deploy after fixing the cause.",
                if removed.is_empty() {
                    "nothing".to_string()
                } else {
                    removed.join(", ")
                },
                s.dest.display()
            );
        }
        let what = if created.is_empty() {
            "nothing".to_string()
        } else {
            created.join(", ")
        };
        bail!(
            "{e:#}\n\ndeploy did not finish. It created: {what}.\n\
             Look with `bty-lab status {d}` / `bty-lab logs {d}`; remove with `bty-lab purge {d}`.",
            d = s.dest.display()
        );
    }
    served_media(&s);
    summary(&s);
    Ok(())
}

/// The operator's `--netboot DIR`, checked to hold a kernel and an initrd.
pub fn operator_media(dir: &Path) -> Result<Media> {
    let m = Media::from_dir(dir).with_context(|| format!("reading --netboot {}", dir.display()))?;
    m.require_pair().context("--netboot: nothing was changed")?;
    Ok(m)
}

/// Create bty-web's bind-mounted boot dir (given to the containers' user:
/// bty-web places its image's media there at start) and put the
/// operator's media into it. Deploy places nothing else on the host: the
/// media machines boot comes from bty-web's image, built here or pulled
/// (see docs/deploy.md, "Netboot media").
pub fn prepare_boot_dir(s: &Settings, operator: Option<&Media>) -> Result<()> {
    let Some((boot, [kernel, initrd])) = deploydir::boot_target(s)? else {
        if operator.is_some() {
            ui::warn(format!(
                "{}: [boot] dir is outside /var/lib/bty (bty-web's state mount), so deploy cannot \
                 place the --netboot media there; bty-web serves its image's media",
                s.dest.join("bty.toml").display()
            ));
        }
        return Ok(());
    };
    std::fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    std::os::unix::fs::chown(&boot, Some(stack::SERVICE_UID), Some(stack::SERVICE_UID))
        .with_context(|| format!("giving {} to uid {}", boot.display(), stack::SERVICE_UID))?;
    std::fs::set_permissions(&boot, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    if let Some(m) = operator {
        let placed = media::place(m, &boot, &kernel, &initrd, Mode::Operator)?;
        // The pair's line; iPXE bootfiles DIR lacks come from bty-web's
        // image when it starts, so their absence is no warning here.
        if let Some((_, line)) = media::summary(m, &boot, &placed).first() {
            ui::detail(line);
        }
        if placed.files[2..]
            .iter()
            .any(|(_, o)| *o == media::place::Outcome::Missing)
        {
            ui::detail(format!(
                "media: {} has no iPXE bootfiles; bty-web places its image's",
                m.dir.display()
            ));
        }
        if stack::compare_versions(&m.info.agent_version, stack::VERSION)
            == Some(std::cmp::Ordering::Less)
        {
            ui::warn(format!(
                "the --netboot media's agent ({}) is older than this bty-lab ({}): bty-web \
                 replaces it with the media its image carries when it starts (an operator's \
                 media is kept only while it is not older)",
                m.info.agent_version,
                stack::VERSION
            ));
        }
    }
    Ok(())
}

/// One line on the media bty-web serves now (after it placed its image's),
/// compared with this binary; a warning when there is none.
pub fn served_media(s: &Settings) {
    let Ok(Some((boot, [kernel, initrd]))) = deploydir::boot_target(s) else {
        return;
    };
    if !boot.join(&kernel).is_file() || !boot.join(&initrd).is_file() {
        ui::warn(format!(
            "{} has no netboot kernel and initrd: bty-web's image carries none (an image from \
             before bty-lab carried the media?), so machines set to flash cannot boot. Deploy \
             with --images local (the images then carry this binary's media), or pass \
             --netboot DIR",
            boot.display()
        ));
        return;
    }
    match media::status::of_initrd(&boot.join(&initrd)) {
        Ok(f) => {
            let whose = if media::OperatorRecord::read(&boot).is_some() {
                " (the operator's, from --netboot)"
            } else {
                ""
            };
            let what = match &f.info {
                Some(_) => f.summary,
                None => "a kernel and an initrd without a bty info file".to_string(),
            };
            ui::detail(format!("media: {} serves {what}{whose}", boot.display()));
        }
        Err(e) => ui::warn(format!("media: reading {}: {e:#}", boot.display())),
    }
}

fn images_word(i: ImagesFrom) -> &'static str {
    match i {
        ImagesFrom::Auto => "auto: reuse, else pull, else build from this binary",
        ImagesFrom::Pull => "pull",
        ImagesFrom::Local => "build locally from this binary",
        ImagesFrom::Present => "already in the engine",
    }
}

/// Get `services`' images at `s.version` by the chosen route; the images
/// built here carry this binary's media from `boot`.
pub async fn obtain_images(
    engine: &Engine,
    s: &Settings,
    services: &[Service],
    how: ImagesFrom,
    boot: &mut images::Boot,
) -> Result<()> {
    let refs: Vec<String> = services.iter().map(|svc| s.image(svc)).collect();
    match how {
        ImagesFrom::Auto => {
            let line = images::auto(engine, services, |svc| s.image(svc), boot).await?;
            ui::detail(line);
            Ok(())
        }
        ImagesFrom::Local => {
            let me = images::static_self()?;
            let (_, files) = boot.get().await?;
            images::build_local(engine, services, |svc| s.image(svc), &me, files).await
        }
        ImagesFrom::Pull => images::pull(engine, &refs).await,
        ImagesFrom::Present => images::require_present(engine, &refs).await,
    }
}

/// Refuse to deploy DEST on another engine while the one it was deployed on
/// still holds its containers: they would keep running there, holding the
/// ports, and no later command would see them.
pub async fn check_engine_switch(engine: &Engine, s: &Settings) -> Result<()> {
    let Some(r) = &s.engine else { return Ok(()) };
    if r.addr == engine.addr {
        return Ok(());
    }
    let Ok(old) = engine::try_connect(&r.addr).await else {
        ui::warn(format!(
            "{} was deployed on {} at {}, which does not answer; deploying on {} at {} instead",
            s.dest.display(),
            r.kind,
            r.addr,
            engine.kind,
            engine.addr
        ));
        return Ok(());
    };
    let theirs = containers::list_ours(&old, s).await?;
    if !theirs.is_empty() {
        bail!(
            "{d} runs on {} at {} ({} container(s) there); deploying it on {} at {} would leave \
             them running. Nothing was changed. Remove them first with `bty-lab purge {d}` \
             (it uses the remembered engine), then deploy with --engine {}.",
            r.kind,
            r.addr,
            theirs.len(),
            engine.kind,
            engine.addr,
            engine.kind,
            d = s.dest.display()
        );
    }
    Ok(())
}

/// Ports the stack publishes, with protocol.
pub fn host_ports(s: &Settings) -> Vec<(u16, Proto, &'static str)> {
    let mut v = vec![
        (s.ports.web, Proto::Tcp, stack::WEB.name),
        (s.ports.cache, Proto::Tcp, stack::CACHE.name),
    ];
    if s.tftp {
        v.push((s.ports.tftp, Proto::Udp, stack::TFTP.name));
    }
    v
}

/// Every port must be free or held by this deploy's own containers.
async fn check_ports(engine: &Engine, s: &Settings) -> Result<()> {
    let ours = containers::list_ours(engine, s).await?;
    let running_ours = ours.iter().any(|c| c.state.as_deref() == Some("running"));
    let mut busy = Vec::new();
    for (port, proto, svc) in host_ports(s) {
        if ports::is_free(port, proto) {
            continue;
        }
        // Our own running stack holds its ports; it is replaced below.
        if running_ours {
            continue;
        }
        let who = ports::owner(port, proto)
            .map(|o| format!("held by {o}"))
            .unwrap_or_else(|| "held by a process this user cannot see".into());
        busy.push(format!("{port}/{proto} (for {svc}) is {who}"));
    }
    if !busy.is_empty() {
        bail!(
            "ports in use:\n  {}\nstop what holds them, or choose others with --port-web / --port-cache / --tftp-port",
            busy.join("\n  ")
        );
    }
    Ok(())
}

/// Env for each service's container from envvars: only its own keys, the
/// same set its `env/<service>.env` file holds for compose and Quadlet.
pub fn service_env(s: &Settings) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let vars = deploydir::read_envvars(&s.dest)?;
    Ok(s.services()
        .iter()
        .map(|svc| {
            let env = crate::render::service_vars(s, svc, &vars)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (svc.name, env)
        })
        .collect())
}

async fn start_stack(
    engine: &Engine,
    s: &Settings,
    services: &[Service],
    steps: &mut ui::Steps,
    created: &mut Vec<String>,
    timeout: Duration,
) -> Result<()> {
    steps.step("creating network");
    if services
        .iter()
        .any(|svc| matches!(svc.net, Net::Bridge { .. }))
    {
        let net = containers::network_name(s);
        if containers::ensure_network(engine, s).await? {
            created.push(format!("network {net}"));
            ui::detail(format!("created {net}"));
        } else {
            ui::detail(format!("{net} exists"));
        }
    }
    steps.step("starting containers");
    let env = service_env(s)?;
    for svc in services {
        let name = containers::run_service(
            engine,
            s,
            svc,
            &s.image(svc),
            &s.version,
            env[svc.name].clone(),
        )
        .await?;
        created.push(format!("container {name}"));
        ui::detail(format!("{name} ({})", s.image(svc)));
    }
    steps.step("waiting for health");
    if let Err(u) = containers::wait_healthy(engine, s, services, timeout).await {
        bail!(
            "{} ({}) is not healthy: {}\nits last log lines:\n{}",
            u.service,
            u.container,
            u.state,
            indent(&u.logs)
        );
    }
    for svc in services {
        ui::detail(format!("{}: healthy", svc.name));
    }
    Ok(())
}

/// Quadlet mode: install the units, daemon-reload, start them in order,
/// wait for health through the Podman API.
async fn start_quadlet(
    engine: &Engine,
    s: &Settings,
    services: &[Service],
    steps: &mut ui::Steps,
    created: &mut Vec<String>,
    timeout: Duration,
) -> Result<()> {
    steps.step(format!(
        "installing Quadlet units into {}",
        quadlet::unit_dir().display()
    ));
    // Containers an engine-mode deploy of this DEST made hold the names the
    // units use; they are replaced by the units' own.
    for svc in services {
        let name = stack::container_name(&s.project(), svc);
        if containers::remove_if_ours(engine, s, &name).await? {
            ui::detail(format!("removed engine-mode container {name}"));
        }
    }
    for p in quadlet::install(&quadlet::units(s)?)? {
        ui::detail(format!("{} (0644)", p.display()));
        created.push(format!("unit file {}", p.display()));
    }
    quadlet::systemctl(&["daemon-reload"])?;
    steps.step("starting units");
    for svc in services {
        let unit = quadlet::service_unit(s, svc);
        quadlet::systemctl(&["start", &unit])?;
        created.push(format!("unit {unit}"));
        ui::detail(format!("started {unit}"));
    }
    steps.step("waiting for health");
    if let Err(u) = containers::wait_healthy(engine, s, services, timeout).await {
        bail!(
            "{} ({}) is not healthy: {}\nits last log lines:\n{}\n(also: journalctl -u {})",
            u.service,
            u.container,
            u.state,
            indent(&u.logs),
            u.container
        );
    }
    for svc in services {
        ui::detail(format!("{}: healthy", svc.name));
    }
    Ok(())
}

pub fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "  (no output)".into();
    }
    s.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn summary(s: &Settings) {
    let uses_default = deploydir::read_envvars(&s.dest)
        .map(|v| {
            v.iter().any(|(k, h)| {
                k.ends_with("_ADMIN_PASSWORD_HASH")
                    && secrets::verify_password(secrets::DEFAULT_PASSWORD, h)
            })
        })
        .unwrap_or(false);
    eprintln!(
        "\ndeploy complete: bty {} at {}",
        s.version,
        s.dest.display()
    );
    eprintln!("  bty-web UI:  {}/ui   (login: bty-lab)", s.web_url());
    eprintln!("  withcache:   {}/     (login: bty-lab)", s.withcache_url());
    if s.tftp {
        eprintln!("  TFTP:        udp/{} on {}", s.ports.tftp, s.host_addr);
    }
    if uses_default {
        ui::warn(format!(
            "the password is still the default `bty-lab`; change it before exposing the host: \
             bty-lab passwd {}",
            s.dest.display()
        ));
    }
}

/// Context helper for steps that need the manifest.
pub fn manifest(dest: &std::path::Path, cmd: &str) -> Result<Settings> {
    let dest = deploydir::absolute(dest)?;
    deploydir::require_manifest(&dest, cmd).with_context(|| format!("bty-lab {cmd}"))
}
