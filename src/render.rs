//! Rendering the deploy files from the templates compiled into the binary.
//! Pure: the manifest + secrets in, file contents out. Golden tests pin it.
//! Writing them is [`crate::deploydir`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use minijinja::Environment;
use serde::Serialize;

use crate::envvars;
use crate::manifest::{Manifest, Ports};
use crate::stack::{self, Service};

const TEMPLATES: &[(&str, &str)] = &[
    ("compose.yml", include_str!("../templates/compose.yml.j2")),
    ("envvars", include_str!("../templates/envvars.j2")),
    ("bty.toml", include_str!("../templates/bty.toml.j2")),
    ("README.md", include_str!("../templates/README.md.j2")),
    (
        "Containerfile",
        include_str!("../templates/Containerfile.j2"),
    ),
    (
        "quadlet/bty-web.container",
        include_str!("../quadlet/bty-web.container.j2"),
    ),
    (
        "quadlet/withcache.container",
        include_str!("../quadlet/withcache.container.j2"),
    ),
    (
        "quadlet/bty-tftp.container",
        include_str!("../quadlet/bty-tftp.container.j2"),
    ),
];

/// The secrets written into a fresh envvars.
#[derive(Debug, Clone, Serialize)]
pub struct Secrets {
    pub web_password_hash: String,
    pub web_session_secret: String,
    pub cache_password_hash: String,
    pub cache_session_secret: String,
    /// bty-web → withcache service token (`BTY_WITHCACHE_TOKEN` and
    /// `WITHCACHE_API_TOKEN`, the same value).
    pub service_token: String,
    /// bty-tftp → bty-web relay key (`BTY_PXE_RELAY_KEY` and
    /// `BTY_TFTP_RELAY_KEY`, the same value).
    pub relay_key: String,
}

impl Secrets {
    /// Fresh random session secrets, and hashes of `password` (both UIs
    /// log in with it; each hash has its own salt).
    pub fn generate(password: &str) -> Result<Secrets> {
        use crate::secrets::{hash_password, session_secret};
        Ok(Secrets {
            web_password_hash: hash_password(password)?,
            web_session_secret: session_secret(),
            cache_password_hash: hash_password(password)?,
            cache_session_secret: session_secret(),
            service_token: session_secret(),
            relay_key: session_secret(),
        })
    }
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.add_filter("toml", |s: String| {
        toml_edit::Value::from(s).to_string().trim().to_string()
    });
    // A JSON string is a valid YAML double-quoted scalar.
    env.add_filter("yaml", |s: String| {
        serde_json::to_string(&s).unwrap_or_default()
    });
    for (name, src) in TEMPLATES {
        env.add_template(name, src)
            .expect("embedded template parses");
    }
    env
}

#[derive(Serialize)]
struct Ctx<'a> {
    version: &'a str,
    dest: String,
    data_dir: String,
    project: String,
    host_addr: String,
    web_url: String,
    withcache_url: String,
    tftp: bool,
    second_stage: bool,
    bootstrap_url: String,
    systemd: bool,
    ports: Ports,
    images: BTreeMap<&'static str, String>,
    #[serde(flatten)]
    secrets: Option<&'a Secrets>,
}

fn ctx<'a>(s: &'a Manifest, secrets: Option<&'a Secrets>) -> Ctx<'a> {
    Ctx {
        version: &s.version,
        dest: s.dest.display().to_string(),
        data_dir: s.data_dir.display().to_string(),
        project: s.project(),
        host_addr: s.host_addr.to_string(),
        web_url: s.web_url(),
        withcache_url: s.withcache_url(),
        tftp: s.tftp,
        second_stage: s.second_stage,
        bootstrap_url: s.bootstrap_url(),
        systemd: s.systemd,
        ports: s.ports,
        images: stack::ALL
            .iter()
            .map(|svc| (svc.name, s.image(svc)))
            .collect(),
        secrets,
    }
}

/// A rendered file: path relative to DEST, contents, mode.
#[derive(Debug, Clone)]
pub struct File {
    pub rel: PathBuf,
    pub contents: String,
    pub mode: u32,
}

/// The manifest as a file to write into DEST.
pub fn manifest_file(m: &Manifest) -> Result<File> {
    Ok(File {
        rel: crate::manifest::FILE.into(),
        contents: m.to_toml()?,
        mode: 0o644,
    })
}

/// Render the deploy files. `secrets` is None when envvars already exists
/// (it is then kept, not rendered).
pub fn deploy_files(s: &Manifest, secrets: Option<&Secrets>) -> Result<Vec<File>> {
    let env = env();
    let c = ctx(s, secrets);
    let mut out = Vec::new();
    for name in templates(s, secrets.is_some()) {
        let contents = env
            .get_template(name)?
            .render(&c)
            .with_context(|| format!("rendering {name}"))?;
        let mode = if name == "envvars" { 0o600 } else { 0o644 };
        out.push(File {
            rel: name.into(),
            contents,
            mode,
        });
    }
    if let Some(envvars) = out.iter().find(|f| f.rel == Path::new("envvars")) {
        let vars = envvars::parse(&envvars.contents);
        out.extend(env_files(s, &vars)?);
    }
    Ok(out)
}

/// The templates a deploy renders (`envvars`: a fresh envvars too).
fn templates(s: &Manifest, envvars: bool) -> Vec<&'static str> {
    let mut names = vec!["compose.yml", "bty.toml", "README.md"];
    if envvars {
        names.push("envvars");
    }
    if s.systemd {
        names.extend(["quadlet/withcache.container", "quadlet/bty-web.container"]);
        if s.tftp {
            names.push("quadlet/bty-tftp.container");
        }
    }
    names
}

/// Where a service's own env files live, relative to DEST: the compose
/// flavour and the Podman (`--env-file`, Quadlet `EnvironmentFile=`) one.
pub fn env_file_rel(svc: &Service, flavour: EnvFlavour) -> PathBuf {
    let f = match flavour {
        EnvFlavour::Compose => "compose",
        EnvFlavour::Podman => "podman",
    };
    PathBuf::from(format!("env/{}.{f}.env", svc.name))
}

/// The two env-file dialects. Compose strips quotes and leaves `$` literal
/// only inside single quotes (compose v2 expands `$` elsewhere); Podman's
/// `--env-file` (what Quadlet's `EnvironmentFile=` uses) keeps quotes as
/// part of the value and never expands. The argon2 hashes hold `$`, so no
/// single spelling is read the same by both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFlavour {
    Compose,
    Podman,
}

/// The variables one service's container gets: its own envvars keys (see
/// [`stack::env_belongs`]) plus what the deploy settings decide. The engine
/// path and the env files compose/Quadlet read both come from here, so a
/// container never sees another service's secrets.
pub fn service_vars(
    s: &Manifest,
    svc: &Service,
    vars: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| stack::env_belongs(svc, k))
        .cloned()
        .collect();
    if svc.net == stack::Net::Host {
        // bty-web's published port on this host: bty-tftp shares the
        // host's network, and the Host it relays with is the LAN address
        // the TFTP request came to, with this port.
        let derived = [
            ("BTY_TFTP_LISTEN", format!("0.0.0.0:{}", s.ports.tftp)),
            (stack::SECOND_STAGE_ENV, s.second_stage_spec()),
            (
                stack::RELAY_ENV,
                format!("http://127.0.0.1:{}", s.ports.web),
            ),
        ];
        for (k, v) in derived {
            // A key set in envvars is the operator's and wins.
            if !out.iter().any(|(o, _)| o == k) {
                out.push((k.to_string(), v));
            }
        }
    }
    out
}

/// `DEST/env/<service>.{compose,podman}.env` for each service (mode 0600),
/// derived from envvars: compose.yml and the Quadlet units hand each
/// container only its own keys.
pub fn env_files(s: &Manifest, vars: &[(String, String)]) -> Result<Vec<File>> {
    let mut out = Vec::new();
    for svc in s.services() {
        for flavour in [EnvFlavour::Compose, EnvFlavour::Podman] {
            out.push(File {
                rel: env_file_rel(&svc, flavour),
                contents: env_file(s, &svc, flavour, vars)?,
                mode: 0o600,
            });
        }
    }
    Ok(out)
}

/// One env file's text.
fn env_file(
    s: &Manifest,
    svc: &Service,
    flavour: EnvFlavour,
    vars: &[(String, String)],
) -> Result<String> {
    let reader = match flavour {
        EnvFlavour::Compose => "compose.yml",
        EnvFlavour::Podman => "the Quadlet unit (podman --env-file syntax: values are literal)",
    };
    let mut text = format!(
        "# {}'s environment for {reader}, derived from envvars by bty-lab (mode 0600).\n\
         # Edit envvars instead: deploy, upgrade and passwd rewrite this file.\n",
        svc.name,
    );
    for (k, v) in service_vars(s, svc, vars) {
        if v.contains(['\'', '\n', '\r']) {
            bail!(
                "envvars: the value of {k} contains a quote or a line break, which env \
                 files cannot carry; change it in {}",
                s.dest.join("envvars").display()
            );
        }
        match flavour {
            EnvFlavour::Compose => text.push_str(&format!("{k}='{v}'\n")),
            EnvFlavour::Podman => text.push_str(&format!("{k}={v}\n")),
        }
    }
    Ok(text)
}

/// The Containerfile of one service's image (also `containers/<name>`).
pub fn containerfile(svc: &Service, version: &str) -> Result<String> {
    let env = env();
    let health = match svc.net {
        stack::Net::Bridge { container_port } => {
            format!("http://127.0.0.1:{container_port}/healthz")
        }
        stack::Net::Host => "tftp://127.0.0.1:69/undionly.kpxe".to_string(),
    };
    let port = match svc.net {
        stack::Net::Bridge { container_port } => Some(format!("{container_port}/tcp")),
        stack::Net::Host => Some("69/udp".to_string()),
    };
    let user = svc
        .non_root
        .then(|| format!("{}:{}", stack::SERVICE_UID, stack::SERVICE_UID));
    Ok(env
        .get_template("Containerfile")?
        .render(minijinja::context! {
            service => svc.name, command => svc.command, version, health, port, user,
            bootfiles => svc.bootfiles,
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compare with tests/golden/<name>, or rewrite it when BTY_BLESS=1.
    fn golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("BTY_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; run with BTY_BLESS=1 to create it", path.display())
        });
        assert_eq!(
            expected,
            actual,
            "{} differs; BTY_BLESS=1 rewrites it",
            path.display()
        );
    }

    fn fixed_secrets() -> Secrets {
        Secrets {
            web_password_hash: "$argon2id$v=19$m=19456,t=2,p=1$d2Vic2FsdA$d2ViaGFzaA".into(),
            web_session_secret: "web-secret-0123456789abcdefghijklmnopqrstuvw".into(),
            cache_password_hash: "$argon2id$v=19$m=19456,t=2,p=1$Y2FjaGVzYWx0$Y2FjaGVoYXNo".into(),
            cache_session_secret: "cache-secret-0123456789abcdefghijklmnopqrstu".into(),
            service_token: "service-token-0123456789abcdefghijklmnopqrst".into(),
            relay_key: "relay-key-0123456789abcdefghijklmnopqrstuvw".into(),
        }
    }

    /// Every flag combination that changes a template's output.
    pub fn combos() -> Vec<(&'static str, Manifest)> {
        let base = crate::manifest::tests::sample();
        let mut systemd = base.clone();
        systemd.systemd = true;
        let mut no_tftp = systemd.clone();
        no_tftp.tftp = false;
        let mut no_second_stage = base.clone();
        no_second_stage.second_stage = false;
        let mut custom = base.clone();
        custom.host_addr = "fd00::5".parse().unwrap();
        custom.data_dir = "/srv/bty data".into();
        custom.registry = "127.0.0.1:5000/lab".into();
        custom.ports = Ports {
            web: 9080,
            cache: 9300,
            tftp: 6969,
        };
        custom.systemd = true;
        vec![
            ("default", base),
            ("systemd", systemd),
            ("systemd-no-tftp", no_tftp),
            ("no-second-stage", no_second_stage),
            ("ipv6-custom", custom),
        ]
    }

    #[test]
    fn golden_deploy_files() {
        for (name, s) in combos() {
            for f in deploy_files(&s, Some(&fixed_secrets())).unwrap() {
                golden(&format!("{name}/{}", f.rel.display()), &f.contents);
            }
        }
    }

    #[test]
    fn golden_containerfiles_match_containers_dir() {
        for svc in stack::ALL {
            let text = containerfile(&svc, "0.1.0").unwrap();
            golden(&format!("Containerfile.{}", svc.name), &text);
            // containers/ holds the published images' Containerfiles: the
            // same text the in-memory build uses.
            let published = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("containers")
                .join(format!("{}.Containerfile", svc.name));
            if std::env::var_os("BTY_BLESS").is_some() {
                std::fs::write(&published, &text).unwrap();
            }
            assert_eq!(
                std::fs::read_to_string(&published).unwrap(),
                text,
                "{} is stale",
                published.display()
            );
        }
    }

    #[test]
    fn bty_toml_escapes_and_parses() {
        let s = crate::manifest::tests::sample();
        let files = deploy_files(&s, None).unwrap();
        let t = &files
            .iter()
            .find(|f| f.rel == Path::new("bty.toml"))
            .unwrap()
            .contents;
        let v: toml_edit::DocumentMut = t.parse().unwrap();
        assert_eq!(v["withcache"]["url"].as_str(), Some("http://10.0.0.5:3000"));
        assert_eq!(v["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    }

    #[test]
    fn tftp_env_carries_the_loop_breaker_and_envvars_wins() {
        let s = crate::manifest::tests::sample();
        let vars = service_vars(&s, &stack::TFTP, &[]);
        let spec = vars
            .iter()
            .find(|(k, _)| k == stack::SECOND_STAGE_ENV)
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            spec,
            "undionly.kpxe=http://10.0.0.5:8080/pxe-bootstrap.ipxe,\
             snponly.efi=http://10.0.0.5:8080/pxe-bootstrap.ipxe,\
             ipxe.efi=http://10.0.0.5:8080/pxe-bootstrap.ipxe"
        );
        let mine = vec![(stack::SECOND_STAGE_ENV.to_string(), "off".to_string())];
        let vars = service_vars(&s, &stack::TFTP, &mine);
        let ours: Vec<_> = vars
            .iter()
            .filter(|(k, _)| k == stack::SECOND_STAGE_ENV)
            .collect();
        assert_eq!(ours.len(), 1, "{vars:?}");
        assert_eq!(ours[0].1, "off");
        // bty-web never sees it.
        assert!(!service_vars(&s, &stack::WEB, &mine)
            .iter()
            .any(|(k, _)| k.starts_with("BTY_TFTP_")));
    }

    #[test]
    fn no_tftp_leaves_tftp_out_everywhere() {
        let mut s = crate::manifest::tests::sample();
        s.tftp = false;
        s.systemd = true;
        for f in deploy_files(&s, None).unwrap() {
            assert!(
                !f.contents.contains("bty-tftp:"),
                "{} mentions tftp",
                f.rel.display()
            );
            assert!(f.rel != Path::new("quadlet/bty-tftp.container"));
        }
    }
}
