//! The services as the operator runs them: `bty-lab serve` as a child
//! process in the namespace, or `bty-lab deploy`'s containers, and the
//! `bty-lab` commands a test runs against them (`image add`, `logs`,
//! `purge`), with the README's environment when asked for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Deploy, RequestLog, Stack, StackOptions, HOST_IP, WEB_PORT, WITHCACHE_PORT};
use crate::netns::Netns;
use crate::process::Guard;

/// Remove from a `bty-lab` command's environment every override the
/// README does not mention (`BTY_*`, among them `BTY_NETBOOT_DIR`, the
/// static-binary variables and bty-web's `BTY_<SECTION>_<KEY>`;
/// `WITHCACHE_*`; `XDG_DATA_HOME`), so a README test runs what a user who
/// followed the README runs, whatever the test runner's environment.
pub fn readme_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("BTY_") || k.starts_with("WITHCACHE_") || k == "XDG_DATA_HOME" {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// `bty-lab serve` as a child process inside the namespace.
pub(super) struct LabServe {
    pub(super) bin: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    /// Working directory (the README run's `./bty-data` is in it).
    pub(super) cwd: PathBuf,
    /// State directory (`--data-dir`, or `./bty-data` of `cwd`).
    pub(super) data: PathBuf,
    /// Scrub the environment ([`readme_env`]).
    pub(super) readme: bool,
    pub(super) log: PathBuf,
    pub(super) proc: Option<Guard>,
}

impl LabServe {
    pub(super) fn spawn(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = ns.command(&self.bin.display().to_string());
        if self.readme {
            readme_env(&mut cmd);
        }
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("BTY_E2E_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", self.bin.display()))?;
        self.proc = Some(Guard::new("bty-lab serve", child));
        Ok(())
    }
}

/// A deploy made by the test; purged on drop.
pub(super) struct Deployed {
    pub(super) bin: PathBuf,
    pub(super) engine: String,
    pub(super) dest: PathBuf,
    pub(super) log: PathBuf,
    /// Scrub the environment ([`readme_env`]).
    pub(super) readme: bool,
}

impl Deployed {
    /// Run `bty-lab ARGS`, output appended to the log and returned; an
    /// error with the output when it fails.
    pub(super) fn lab(&self, args: &[&str]) -> anyhow::Result<String> {
        self.lab_env(args, &[])
    }

    /// [`Deployed::lab`] with extra environment variables; stdout then
    /// stderr on success.
    pub(super) fn lab_env(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut cmd = Command::new(&self.bin);
        if self.readme {
            readme_env(&mut cmd);
        }
        let out = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} {}", self.bin.display(), args.join(" ")))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(log, "$ bty-lab {}", args.join(" "))?;
        log.write_all(&out.stdout)?;
        log.write_all(&out.stderr)?;
        if !out.status.success() {
            bail!(
                "bty-lab {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    pub(super) fn purge(&self) {
        let dest = self.dest.display().to_string();
        if let Err(e) = self.lab(&[
            "purge",
            &dest,
            "--engine",
            &self.engine,
            "--all",
            "--images",
            "-y",
        ]) {
            eprintln!("bty-e2e: purging the test deploy failed: {e:#}");
        }
    }
}

/// Whether `bin SUB --help` lists `--netboot DIR` (added after the first
/// static builds; with older binaries the test copies the media itself).
fn has_netboot_option(bin: &Path, sub: &str) -> bool {
    Command::new(bin)
        .args([sub, "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--netboot"))
        .unwrap_or(false)
}

/// Whether `bin serve` takes `--netboot DIR` (added after the first
/// static builds; older binaries get the media copied by the test).
fn serve_has_netboot(bin: &Path) -> bool {
    has_netboot_option(bin, "serve")
}

/// The password `bty-lab deploy` or `serve` showed, the one time it does:
/// its `login: bty-lab / PASSWORD` line.
fn shown_password(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("login:")?.trim();
        let pw = rest.strip_prefix("bty-lab / ")?;
        Some(pw.split_whitespace().next()?.to_string())
    })
}

impl Stack {
    /// The admin password serve showed at its first start (in its log,
    /// where an operator reads it); later starts keep it.
    pub(super) fn read_shown_password(&mut self) -> anyhow::Result<()> {
        let Some(lab) = &self.lab else { return Ok(()) };
        // The banner follows the sockets by a moment.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&lab.log).unwrap_or_default();
            if let Some(pw) = shown_password(&log) {
                self.password = pw;
                return Ok(());
            }
            if !self.password.is_empty() && log.contains("the password shown at the first start") {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("serve showed no `login: bty-lab / PASSWORD` line; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The operator's way: `bty-lab serve --data-dir DIR/lab --bind
    /// 192.0.2.1 --tftp-port 69 [--netboot MEDIA]` in the namespace; with
    /// [`StackOptions::readme`], the README's `bty-lab serve --bind
    /// 192.0.2.1 --tftp-port 69` in `DIR/lab` (state in its
    /// `./bty-data`). The address is a fact of the test LAN: bound to
    /// 0.0.0.0 in a namespace without a route, serve could not tell the
    /// machines which address to come back to.
    pub(super) fn start_lab(
        opts: StackOptions,
        bin: &Path,
        dir: tempfile::TempDir,
        ns: Netns,
        rt: tokio::runtime::Runtime,
    ) -> anyhow::Result<Stack> {
        let cwd = dir.path().join("lab");
        std::fs::create_dir_all(&cwd)?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--bind".into(),
            HOST_IP.to_string(),
            "--tftp-port".into(),
            "69".into(),
        ];
        let data = if opts.readme {
            if opts.netboot.is_some() || opts.static_catalog.is_some() {
                bail!("a README run takes no --netboot and no static catalog");
            }
            cwd.join("bty-data")
        } else {
            args.extend([
                "--port-web".into(),
                WEB_PORT.to_string(),
                "--port-cache".into(),
                WITHCACHE_PORT.to_string(),
                "--data-dir".into(),
                cwd.display().to_string(),
            ]);
            cwd.clone()
        };
        if let Some(media) = &opts.netboot {
            if serve_has_netboot(bin) {
                args.push("--netboot".into());
                args.push(media.display().to_string());
            } else {
                let boot = data.join("boot");
                std::fs::create_dir_all(&boot)?;
                crate::media::install_from(media, &boot)?;
            }
        }
        let mut env = Vec::new();
        if opts.static_catalog.is_some() {
            env.push((
                "BTY_IMAGES_CATALOG".to_string(),
                dir.path().join("catalog.toml").display().to_string(),
            ));
        }
        let web_config = bty_web::Config::from_toml_str("")?;
        let mut stack = Stack {
            web: None,
            tftp: None,
            withcache: None,
            extra: Vec::new(),
            rt: Some(rt),
            lab: Some(LabServe {
                bin: bin.to_path_buf(),
                args,
                env,
                cwd,
                data,
                readme: opts.readme,
                log: dir.path().join("bty-lab-serve.log"),
                proc: None,
            }),
            deployed: None,
            // Shown once by serve's first start (read_shown_password).
            password: String::new(),
            requests: RequestLog::default(),
            web_config,
            ns,
            dir,
        };
        stack.start_web()?;
        Ok(stack)
    }

    /// The containers' way, see [`Deploy`].
    pub(super) fn start_deploy(
        opts: StackOptions,
        d: Deploy,
        dir: tempfile::TempDir,
        ns: Netns,
        rt: tokio::runtime::Runtime,
    ) -> anyhow::Result<Stack> {
        if opts.readme && (opts.netboot.is_some() || opts.static_catalog.is_some()) {
            bail!("a README run takes no --netboot and no static catalog");
        }
        let dest = dir.path().join("deploy");
        let deployed = Deployed {
            bin: d.bin.clone(),
            engine: d.engine.clone(),
            dest: dest.clone(),
            log: dir.path().join("bty-lab-deploy.log"),
            readme: opts.readme,
        };
        let mut stack = Stack {
            web: None,
            tftp: None,
            withcache: None,
            extra: Vec::new(),
            rt: Some(rt),
            lab: None,
            // From here on Drop purges the deploy, even if it fails.
            deployed: Some(deployed),
            // Shown once, by the deploy below.
            password: String::new(),
            requests: RequestLog::default(),
            web_config: bty_web::Config::from_toml_str("")?,
            ns,
            dir,
        };
        let dest_s = dest.display().to_string();
        let (web_port, cache_port) = (WEB_PORT.to_string(), WITHCACHE_PORT.to_string());
        let host = stack.ns.host_ip().to_string();
        // The README's deploy: the host address is the one fact of this
        // machine it needs (the outbound route's address is not on the
        // test LAN); everything else is a default, bty-tftp included.
        let mut args = vec![
            "deploy",
            &dest_s,
            "--engine",
            &d.engine,
            "--host-addr",
            &host,
        ];
        if !opts.readme {
            args.extend([
                "--images",
                "local",
                // Own image names, so that the purge removes only ours.
                "--registry",
                "bty-e2e.invalid/bty",
                "--port-web",
                &web_port,
                "--port-cache",
                &cache_port,
                "--no-tftp",
            ]);
        }
        args.push("-y");
        let media = opts.netboot.as_ref().map(|m| m.display().to_string());
        let netboot_opt = has_netboot_option(&d.bin, "deploy");
        if let (Some(m), true) = (&media, netboot_opt) {
            args.push("--netboot");
            args.push(m);
        }
        let deployed = stack.deployed.as_ref().expect("set above");
        let out = deployed.lab(&args)?;
        stack.password = shown_password(&out).with_context(|| {
            format!("deploy showed no `login: bty-lab / PASSWORD` line:\n{out}")
        })?;
        if let (Some(m), false) = (&opts.netboot, netboot_opt) {
            crate::media::install_from(m, &stack.boot_dir())?;
        }
        stack.wait_healthy(
            &format!("{}/healthz", stack.web_url()),
            Duration::from_secs(60),
        )?;
        stack.wait_healthy(
            &format!("{}/healthz", stack.withcache_url()),
            Duration::from_secs(30),
        )?;
        Ok(stack)
    }

    /// `bty-lab image add NAME URL`, the README's way to add an image, as
    /// the admin (password in `BTY_ADMIN_PASSWORD`): for a deploy with
    /// `--dest DEST` (its manifest knows bty-web's address), for `bty-lab
    /// serve` from inside the namespace with `--server`, since it listens
    /// on the test LAN's address, not serve's default 127.0.0.1. Its
    /// output, or an error with it.
    pub fn lab_image_add(&self, name: &str, url: &str) -> anyhow::Result<String> {
        let password = self.password.as_str();
        if let Some(d) = &self.deployed {
            let dest = d.dest.display().to_string();
            return d.lab_env(
                &["image", "add", name, url, "--dest", &dest],
                &[("BTY_ADMIN_PASSWORD", password)],
            );
        }
        let Some(lab) = &self.lab else {
            bail!("`bty-lab image add` needs a bty-lab stack (serve or deploy)");
        };
        let mut cmd = self.ns.command(&lab.bin.display().to_string());
        if lab.readme {
            readme_env(&mut cmd);
        }
        let out = cmd
            .args(["image", "add", name, url, "--server", &self.web_url()])
            .env("BTY_ADMIN_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .context("running bty-lab image add")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "bty-lab image add {name} {url} failed ({}):\n{text}",
                out.status
            );
        }
        Ok(text)
    }

    /// A service's log: `bty-lab logs DEST SERVICE` of a deploy, the whole
    /// `bty-lab serve` output (all three services) otherwise.
    pub fn service_log(&self, service: &str) -> anyhow::Result<String> {
        if let Some(d) = &self.deployed {
            let dest = d.dest.display().to_string();
            // `logs` prints the containers' output; keep the text apart
            // from the deploy log it is also appended to.
            return d.lab(&[
                "logs", &dest, service, "--engine", &d.engine, "--tail", "all",
            ]);
        }
        std::fs::read_to_string(self.services_log()).context("reading the services log")
    }
}
