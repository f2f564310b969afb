//! `init` and the rendered files, checked by the tools that consume them.

use std::os::unix::fs::PermissionsExt as _;

use crate::util::{fails_with, have_tool, ok, on_path, run, stderr, TestDir};

fn init(t: &TestDir, extra: &[&str]) -> std::process::Output {
    let dest = t.path().join("lab");
    let mut args = vec!["init", dest.to_str().unwrap(), "--host-addr", "10.0.0.5"];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn init_writes_the_deploy_files_with_private_envvars() {
    let t = TestDir::new();
    let o = init(&t, &["--systemd"]);
    ok(&o);
    let shown = crate::util::printed_password(&stderr(&o)).expect("init shows the new password");
    let d = t.path().join("lab");
    for f in [
        "compose.yml",
        "envvars",
        "bty.toml",
        "README.md",
        ".bty-lab.toml",
        "quadlet/bty-web.container",
        "quadlet/withcache.container",
        "quadlet/bty-tftp.container",
    ] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    let mode = std::fs::metadata(d.join("envvars"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let env = std::fs::read_to_string(d.join("envvars")).unwrap();
    assert!(env.contains("BTY_ADMIN_PASSWORD_HASH='$argon2id$"), "{env}");
    assert!(!env.contains("bty-lab'"), "plaintext password in envvars");
    assert!(!env.contains(&shown), "the shown password is in envvars");
    // Shown once: a second init keeps envvars and shows nothing.
    let again = init(&t, &[]);
    ok(&again);
    assert_eq!(crate::util::printed_password(&stderr(&again)), None);
    assert!(d.join("data/bty").is_dir() && d.join("data/withcache").is_dir());
}

#[test]
fn init_again_keeps_secrets_and_bty_toml_edits() {
    let t = TestDir::new();
    ok(&init(&t, &[]));
    let d = t.path().join("lab");
    let env1 = std::fs::read_to_string(d.join("envvars")).unwrap();
    let toml = std::fs::read_to_string(d.join("bty.toml")).unwrap();
    // The operator edits a value and adds a comment; drops a key we need.
    let edited = toml
        .replace(
            "listen = \"0.0.0.0:8080\"",
            "listen = \"0.0.0.0:8080\" # mine",
        )
        .replace("state_dir = \"/var/lib/bty\"\n", "");
    std::fs::write(d.join("bty.toml"), &edited).unwrap();
    let o = init(&t, &[]);
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(d.join("envvars")).unwrap(),
        env1,
        "envvars changed"
    );
    let after = std::fs::read_to_string(d.join("bty.toml")).unwrap();
    assert!(after.contains("# mine"), "{after}");
    assert!(after.contains("state_dir = \"/var/lib/bty\""), "{after}");
    assert!(stderr(&o).contains("[server] state_dir"), "{}", stderr(&o));
}

#[test]
fn init_refuses_foreign_files_without_force() {
    let t = TestDir::new();
    let d = t.path().join("lab");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("notes.txt"), "mine").unwrap();
    fails_with(&init(&t, &[]), "notes.txt");
    assert!(
        !d.join("compose.yml").exists(),
        "wrote files despite refusing"
    );
    ok(&init(&t, &["--force"]));
    assert_eq!(
        std::fs::read_to_string(d.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn invalid_host_addr_is_refused_before_writing() {
    let t = TestDir::new();
    let dest = t.path().join("lab");
    for bad in ["10.0.0.5\"", "bty.lan", "0.0.0.0"] {
        let o = run(&["init", dest.to_str().unwrap(), "--host-addr", bad]);
        fails_with(&o, "--host-addr");
        assert!(!dest.exists(), "{bad}: DEST created");
    }
}

#[test]
fn data_dir_is_remembered_and_used() {
    let t = TestDir::new();
    let data = t.path().join("state");
    ok(&init(&t, &["--data-dir", data.to_str().unwrap()]));
    let d = t.path().join("lab");
    let compose = std::fs::read_to_string(d.join("compose.yml")).unwrap();
    assert!(
        compose.contains(&format!("{}/bty:/var/lib/bty", data.display())),
        "{compose}"
    );
    // A second run without the flag keeps it (the manifest remembers).
    ok(&init(&t, &[]));
    let compose = std::fs::read_to_string(d.join("compose.yml")).unwrap();
    assert!(
        compose.contains(&format!("{}/withcache:/data", data.display())),
        "{compose}"
    );
}

#[test]
fn docker_compose_accepts_the_rendered_compose() {
    if !have_tool("docker-compose", on_path("docker-compose")) {
        return;
    }
    for extra in [&[][..], &["--no-tftp"][..]] {
        let t = TestDir::new();
        ok(&init(&t, extra));
        let d = t.path().join("lab");
        let o = std::process::Command::new("docker-compose")
            .args(["-f", "compose.yml", "config"])
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "docker-compose config failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let cfg: serde_yaml::Value = serde_yaml::from_slice(&o.stdout).unwrap();
        let services = cfg["services"].as_mapping().unwrap();
        // What compose hands each container: only that service's keys, and
        // the argon2 hash arrives whole (quotes stripped, `$` literal; the
        // `config` output escapes `$` as `$$`).
        let keys = |svc: &str| -> Vec<String> {
            cfg["services"][svc]["environment"]
                .as_mapping()
                .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let web = keys("bty-web");
        let cache = keys("withcache");
        assert!(
            web.contains(&"BTY_SERVER_SESSION_SECRET".to_string()),
            "{web:?}"
        );
        assert!(
            !web.iter().any(|k| k.starts_with("WITHCACHE_")),
            "bty-web sees withcache's secrets: {web:?}"
        );
        assert!(
            cache.contains(&"WITHCACHE_SESSION_SECRET".to_string()),
            "{cache:?}"
        );
        assert!(
            !cache.iter().any(|k| k.starts_with("BTY_")),
            "withcache sees bty-web's secrets: {cache:?}"
        );
        let hash = cfg["services"]["bty-web"]["environment"]["BTY_ADMIN_PASSWORD_HASH"]
            .as_str()
            .unwrap()
            .replace("$$", "$");
        let envvars = std::fs::read_to_string(d.join("envvars")).unwrap();
        assert!(
            envvars.contains(&format!("BTY_ADMIN_PASSWORD_HASH='{hash}'")),
            "hash mangled by compose: {hash}"
        );
        assert_eq!(services.contains_key("bty-tftp"), extra.is_empty());
        assert_eq!(
            cfg["services"]["bty-web"]["ports"][0]["published"]
                .as_u64()
                .or_else(|| {
                    cfg["services"]["bty-web"]["ports"][0]
                        .as_str()
                        .map(|_| 8080)
                }),
            Some(8080)
        );
    }
}

/// Parse a Quadlet unit into (section, key, value) triples.
fn ini(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line:?}"));
        out.push((section.clone(), k.to_string(), v.to_string()));
    }
    out
}

#[test]
fn quadlet_units_are_well_formed() {
    let t = TestDir::new();
    ok(&init(&t, &["--systemd"]));
    let d = t.path().join("lab");
    let known = ["Unit", "Container", "Service", "Install"];
    for svc in ["bty-web", "withcache", "bty-tftp"] {
        let text = std::fs::read_to_string(d.join(format!("quadlet/{svc}.container"))).unwrap();
        let kv = ini(&text);
        assert!(
            kv.iter().all(|(s, _, _)| known.contains(&s.as_str())),
            "{svc}: unknown section"
        );
        let get = |k: &str| {
            kv.iter()
                .filter(|(s, kk, _)| s == "Container" && kk == k)
                .map(|t| t.2.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("Image").len(), 1, "{svc}: one Image=");
        assert!(
            get("Image")[0].ends_with(&format!("/{svc}:{}", env!("CARGO_PKG_VERSION"))),
            "{svc}: pinned image"
        );
        assert!(
            get("Label").contains(&format!("dev.bty.deploy={}", d.display())),
            "{svc}: deploy label"
        );
        assert!(
            get("HealthCmd")[0].starts_with("/bty-lab internal healthcheck "),
            "{svc}"
        );
        for v in get("Volume") {
            let host = v.split(':').next().unwrap();
            assert!(host.starts_with('/'), "{svc}: relative volume {v}");
        }
        if svc == "bty-tftp" {
            assert_eq!(get("Network"), vec!["host"]);
        } else {
            assert_eq!(get("PublishPort").len(), 1);
        }
        assert_eq!(
            get("EnvironmentFile"),
            vec![d
                .join(format!("env/{svc}.podman.env"))
                .display()
                .to_string()],
            "{svc}: only its own env file"
        );
    }
}

/// The keys each service's env file holds.
fn env_keys(d: &std::path::Path, svc: &str) -> Vec<String> {
    let p = d.join(format!("env/{svc}.compose.env"));
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", p.display());
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').unwrap().0.to_string())
        .collect()
}

#[test]
fn each_service_env_file_holds_only_its_own_keys() {
    let t = TestDir::new();
    ok(&init(&t, &["--tftp-port", "6969"]));
    let d = t.path().join("lab");
    // An operator-added key for each service lands only in its own file.
    let mut env = std::fs::read_to_string(d.join("envvars")).unwrap();
    env.push_str("BTY_TFTP_BLKSIZE_MAX='1428'\nWITHCACHE_LOG='debug'\nBTY_LOG='debug'\n");
    std::fs::write(d.join("envvars"), env).unwrap();
    ok(&init(&t, &[]));
    let web = env_keys(&d, "bty-web");
    let cache = env_keys(&d, "withcache");
    let tftp = env_keys(&d, "bty-tftp");
    assert!(
        web.contains(&"BTY_ADMIN_PASSWORD_HASH".to_string()),
        "{web:?}"
    );
    assert!(web.contains(&"BTY_LOG".to_string()), "{web:?}");
    assert!(
        web.iter()
            .all(|k| k.starts_with("BTY_") && !k.starts_with("BTY_TFTP_")),
        "bty-web gets foreign keys: {web:?}"
    );
    assert!(
        cache.contains(&"WITHCACHE_SESSION_SECRET".to_string()),
        "{cache:?}"
    );
    assert!(
        cache.iter().all(|k| k.starts_with("WITHCACHE_")),
        "withcache gets foreign keys: {cache:?}"
    );
    assert!(
        tftp.iter().all(|k| k.starts_with("BTY_TFTP_")),
        "bty-tftp gets foreign keys: {tftp:?}"
    );
    let tftp_text = std::fs::read_to_string(d.join("env/bty-tftp.compose.env")).unwrap();
    assert!(
        tftp_text.contains("BTY_TFTP_LISTEN='0.0.0.0:6969'"),
        "{tftp_text}"
    );
    // The Podman flavour: same keys, values literal (no quotes).
    let podman = std::fs::read_to_string(d.join("env/bty-web.podman.env")).unwrap();
    let envvars = std::fs::read_to_string(d.join("envvars")).unwrap();
    let hash_line = envvars
        .lines()
        .find(|l| l.starts_with("BTY_ADMIN_PASSWORD_HASH="))
        .unwrap()
        .replace('\'', "");
    assert!(podman.lines().any(|l| l == hash_line), "{podman}");
    assert!(
        !podman.lines().any(|l| l.starts_with("WITHCACHE_")),
        "{podman}"
    );
    // The service token: one value, each service under its own key.
    assert!(web.contains(&"BTY_WITHCACHE_TOKEN".to_string()), "{web:?}");
    assert!(
        cache.contains(&"WITHCACHE_API_TOKEN".to_string()),
        "{cache:?}"
    );
    assert!(!web.contains(&"WITHCACHE_API_TOKEN".to_string()), "{web:?}");
    assert!(
        !cache.contains(&"BTY_WITHCACHE_TOKEN".to_string()),
        "{cache:?}"
    );
    let token = envvar(&d, "BTY_WITHCACHE_TOKEN");
    assert_eq!(token.len(), 43, "{token}");
    assert_eq!(envvar(&d, "WITHCACHE_API_TOKEN"), token);
    for (svc, key) in [
        ("bty-web", "BTY_WITHCACHE_TOKEN"),
        ("withcache", "WITHCACHE_API_TOKEN"),
    ] {
        let compose = std::fs::read_to_string(d.join(format!("env/{svc}.compose.env"))).unwrap();
        assert!(compose.contains(&format!("{key}='{token}'")), "{compose}");
        let podman = std::fs::read_to_string(d.join(format!("env/{svc}.podman.env"))).unwrap();
        assert!(podman.contains(&format!("{key}={token}\n")), "{podman}");
    }
}

/// The value of `key` in DEST/envvars.
fn envvar(d: &std::path::Path, key: &str) -> String {
    std::fs::read_to_string(d.join("envvars"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in envvars"))
        .trim_matches('\'')
        .to_string()
}

#[test]
fn a_fresh_render_gives_each_deploy_its_own_service_token() {
    let (a, b) = (TestDir::new(), TestDir::new());
    ok(&init(&a, &[]));
    ok(&init(&b, &[]));
    let ta = envvar(&a.path().join("lab"), "WITHCACHE_API_TOKEN");
    let tb = envvar(&b.path().join("lab"), "WITHCACHE_API_TOKEN");
    assert_ne!(ta, tb, "two deploys got the same token");
}

#[test]
fn an_envvars_from_before_the_service_token_gets_it_keeping_every_line() {
    let t = TestDir::new();
    ok(&init(&t, &[]));
    let d = t.path().join("lab");
    // envvars as an older bty-lab wrote it, plus an operator's line.
    let full = std::fs::read_to_string(d.join("envvars")).unwrap();
    let old: String = full
        .lines()
        .take_while(|l| !l.contains("service token"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
        + "\nBTY_LOG='debug'\n";
    assert!(!old.contains("TOKEN"), "{old}");
    std::fs::write(d.join("envvars"), &old).unwrap();
    std::fs::remove_dir_all(d.join("env")).unwrap();
    let o = init(&t, &[]);
    ok(&o);
    assert!(
        stderr(&o).contains("(BTY_WITHCACHE_TOKEN and WITHCACHE_API_TOKEN)")
            && stderr(&o).contains("(BTY_PXE_RELAY_KEY and BTY_TFTP_RELAY_KEY)"),
        "{}",
        stderr(&o)
    );
    let relay = envvar(&d, "BTY_PXE_RELAY_KEY");
    assert_eq!(envvar(&d, "BTY_TFTP_RELAY_KEY"), relay);
    assert_ne!(relay, envvar(&d, "BTY_WITHCACHE_TOKEN"));
    let web = std::fs::read_to_string(d.join("env/bty-web.podman.env")).unwrap();
    let tftp = std::fs::read_to_string(d.join("env/bty-tftp.podman.env")).unwrap();
    assert!(
        web.contains(&format!("BTY_PXE_RELAY_KEY={relay}\n")),
        "{web}"
    );
    assert!(!web.contains("BTY_TFTP_RELAY"), "{web}");
    assert!(
        tftp.contains(&format!("BTY_TFTP_RELAY_KEY={relay}\n")),
        "{tftp}"
    );
    assert!(tftp.contains("BTY_TFTP_RELAY=http://127.0.0.1:"), "{tftp}");
    let now = std::fs::read_to_string(d.join("envvars")).unwrap();
    assert!(now.starts_with(&old), "other lines changed:\n{now}");
    let token = envvar(&d, "BTY_WITHCACHE_TOKEN");
    assert_eq!(envvar(&d, "WITHCACHE_API_TOKEN"), token);
    assert_eq!(token.len(), 43);
    assert_eq!(
        std::fs::metadata(d.join("envvars"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(env_keys(&d, "bty-web").contains(&"BTY_WITHCACHE_TOKEN".to_string()));
    assert!(env_keys(&d, "withcache").contains(&"WITHCACHE_API_TOKEN".to_string()));
    // The next run adds nothing.
    let o = init(&t, &[]);
    ok(&o);
    assert_eq!(std::fs::read_to_string(d.join("envvars")).unwrap(), now);
    assert!(
        stderr(&o).contains("envvars: kept (secrets unchanged)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn completions_are_generated() {
    let o = run(&["completions", "bash"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("bty-lab"));
}

#[test]
fn no_engine_lists_the_sockets_tried_and_how_to_start_one() {
    let t = TestDir::new();
    ok(&init(&t, &[]));
    let dest = t.path().join("lab");
    let sock = t.path().join("nothing.sock");
    let o = std::process::Command::new(crate::util::bin())
        .args(["status", dest.to_str().unwrap()])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    fails_with(&o, "no container engine answered");
    let err = stderr(&o);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(
        err.contains("podman system service") && err.contains("docker.io"),
        "{err}"
    );
}

/// A manifest remembering an engine whose socket is gone: every engine
/// command says which engine, which socket, that it was remembered from
/// DEST's deploy, how to start it and that --engine overrides; none falls
/// back to another engine.
#[test]
fn a_remembered_engine_that_is_down_is_named_plainly() {
    let t = TestDir::new();
    ok(&init(&t, &[]));
    let dest = t.path().join("lab");
    let gone = t.path().join("gone/podman.sock");
    let manifest = dest.join(".bty-lab.toml");
    let mut m = std::fs::read_to_string(&manifest).unwrap();
    assert!(!m.contains("[engine]"), "init recorded an engine: {m}");
    m.push_str(&format!(
        "\n[engine]\nkind = \"podman\"\naddr = \"{}\"\n",
        gone.display()
    ));
    std::fs::write(&manifest, m).unwrap();
    for args in [
        vec!["status"],
        vec!["logs"],
        vec!["purge", "--yes"],
        vec!["upgrade", "--to", "9.9.9"],
        vec!["passwd", "--generate"],
    ] {
        let mut full = args.clone();
        full.insert(1, dest.to_str().unwrap());
        let o = run(&full);
        fails_with(
            &o,
            &format!("the podman engine at {} does not answer", gone.display()),
        );
        let err = stderr(&o);
        for needle in [
            "remembered",
            ".bty-lab.toml",
            &format!("podman system service --time=0 unix://{}", gone.display()),
            "--engine docker|podman|auto",
        ] {
            assert!(err.contains(needle), "{args:?}: {needle:?} missing:\n{err}");
        }
        assert!(
            !err.contains("no container engine answered"),
            "{args:?} fell back to auto:\n{err}"
        );
    }
}

/// The loop breaker is on by default, `--no-second-stage` is remembered,
/// `--second-stage` brings it back; bty-tftp's env file follows.
#[test]
fn no_second_stage_is_remembered_and_reaches_the_tftp_env() {
    let t = TestDir::new();
    let d = t.path().join("lab");
    let env = d.join("env/bty-tftp.compose.env");
    let spec = || {
        std::fs::read_to_string(&env)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("BTY_TFTP_SECOND_STAGE=").map(String::from))
            .expect("BTY_TFTP_SECOND_STAGE in the tftp env file")
    };
    ok(&init(&t, &["--port-web", "9080"]));
    assert_eq!(
        spec(),
        "'undionly.kpxe=http://10.0.0.5:9080/pxe-bootstrap.ipxe,\
         snponly.efi=http://10.0.0.5:9080/pxe-bootstrap.ipxe,\
         ipxe.efi=http://10.0.0.5:9080/pxe-bootstrap.ipxe'"
    );
    ok(&init(&t, &["--no-second-stage"]));
    assert_eq!(spec(), "'off'");
    let m = std::fs::read_to_string(d.join(".bty-lab.toml")).unwrap();
    assert!(m.contains("second_stage = false"), "{m}");
    ok(&init(&t, &[]));
    assert_eq!(spec(), "'off'", "--no-second-stage forgotten");
    ok(&init(&t, &["--second-stage"]));
    assert!(spec().starts_with("'undionly.kpxe=http://10.0.0.5:9080/"));
    // The bty-web env never carries it.
    let web = std::fs::read_to_string(d.join("env/bty-web.compose.env")).unwrap();
    assert!(!web.contains("SECOND_STAGE"), "{web}");
}

#[test]
fn commands_on_a_dir_that_is_no_deploy_say_so() {
    let t = TestDir::new();
    for cmd in ["status", "upgrade", "purge", "passwd", "logs"] {
        let o = run(&[cmd, t.path().to_str().unwrap()]);
        fails_with(&o, "is not a bty-lab deploy");
    }
}

#[test]
fn deploy_systemd_refuses_without_systemd_and_touches_nothing() {
    let t = TestDir::new();
    let dest = t.path().join("lab");
    let units = t.path().join("units");
    // Point the check at a path that does not exist, so the test means the
    // same on a systemd host.
    let o = std::process::Command::new(crate::util::bin())
        .args([
            "deploy",
            dest.to_str().unwrap(),
            "--systemd",
            "--host-addr",
            "10.0.0.5",
            "-y",
        ])
        .env("BTY_LAB_SYSTEMD_RUNDIR", t.path().join("no-systemd"))
        .env("BTY_LAB_QUADLET_DIR", &units)
        .output()
        .unwrap();
    fails_with(&o, "systemd is not running");
    assert!(stderr(&o).contains("Nothing was changed"), "{}", stderr(&o));
    assert!(!dest.exists(), "DEST created despite the refusal");
    assert!(!units.exists(), "units written despite the refusal");
    // A deploy recorded as Quadlet-mode refuses upgrade the same way.
    ok(&init(&t, &[]));
    let m = dest.join(".bty-lab.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains("quadlet = false"), "{text}");
    std::fs::write(&m, text.replace("quadlet = false", "quadlet = true")).unwrap();
    let o = std::process::Command::new(crate::util::bin())
        .args(["upgrade", dest.to_str().unwrap()])
        .env("BTY_LAB_SYSTEMD_RUNDIR", t.path().join("no-systemd"))
        .output()
        .unwrap();
    fails_with(&o, "systemd is not running");
    // --no-systemd does not silently turn a Quadlet deploy into containers.
    let before = std::fs::read_to_string(&m).unwrap();
    let o = run(&["deploy", dest.to_str().unwrap(), "--no-systemd", "-y"]);
    fails_with(&o, "cannot switch it in place");
    assert_eq!(std::fs::read_to_string(&m).unwrap(), before);
    // Both at once is a usage error.
    let o = run(&[
        "deploy",
        dest.to_str().unwrap(),
        "--systemd",
        "--no-systemd",
    ]);
    fails_with(&o, "cannot be used with");
}

/// Podman's own Quadlet generator on the rendered units, where it exists
/// (Podman >= 4.4). Debian 12 ships 4.3 without it, so this part skips there;
/// it is not a BTY_REQUIRE_TOOLS tool.
#[test]
fn quadlet_generator_accepts_the_units_when_present() {
    let gen = std::path::Path::new("/usr/libexec/podman/quadlet");
    if !gen.is_file() {
        eprintln!(
            "skipping: {} not installed (Podman < 4.4, e.g. Debian 12's 4.3, has no Quadlet)",
            gen.display()
        );
        return;
    }
    for extra in [&["--systemd"][..], &["--systemd", "--no-tftp"][..]] {
        let t = TestDir::new();
        ok(&init(&t, extra));
        let d = t.path().join("lab");
        let o = std::process::Command::new(gen)
            .arg("-dryrun")
            .env("QUADLET_UNIT_DIRS", d.join("quadlet"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "quadlet -dryrun failed:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("ExecStart="), "{out}");
    }
}

/// `deploy --password-stdin` reads and checks the password before it does
/// anything: a weak one leaves no DEST behind.
#[test]
fn deploy_refuses_a_weak_chosen_password_before_writing() {
    let t = TestDir::new();
    let dest = t.path().join("lab");
    let o = crate::util::run_with(
        &crate::util::bin(),
        &["deploy", dest.to_str().unwrap(), "--password-stdin", "-y"],
        Some("short\n"),
    );
    fails_with(&o, "shorter than 8");
    assert!(!dest.exists(), "deploy wrote {}", dest.display());
}
