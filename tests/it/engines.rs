//! The engine lifecycle against real Docker and Podman (started by
//! scripts/engines.sh). Gated by BTY_ENGINE_TESTS=docker,podman, which CI
//! sets; the images are built FROM scratch out of a static bty-lab given in
//! BTY_LAB_STATIC_BIN (scripts/test.sh builds it).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;

use crate::util::{fails_with, have_tool, ok, run_with, stderr, stdout, TestDir};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn wanted(engine: &str) -> bool {
    std::env::var("BTY_ENGINE_TESTS")
        .unwrap_or_default()
        .split(',')
        .any(|e| e.trim() == engine)
}

fn socket(engine: &str) -> &'static str {
    if engine == "docker" {
        "/var/run/docker.sock"
    } else {
        "/run/podman/podman.sock"
    }
}

/// The static bty-lab, or None (skip / fail per the tool rule).
fn static_bin(engine: &str) -> Option<PathBuf> {
    if !wanted(engine) {
        eprintln!("skipping: BTY_ENGINE_TESTS does not name {engine}");
        return None;
    }
    if !have_tool(
        &format!("{engine} engine socket {}", socket(engine)),
        Path::new(socket(engine)).exists(),
    ) {
        return None;
    }
    let bin = std::env::var_os("BTY_LAB_STATIC_BIN").map(PathBuf::from);
    match bin {
        Some(b) if b.is_file() => Some(b),
        _ => panic!(
            "BTY_ENGINE_TESTS is set but BTY_LAB_STATIC_BIN is not a file; build one with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p bty-lab --target x86_64-unknown-linux-gnu"
        ),
    }
}

struct Ports {
    web: u16,
    cache: u16,
    tftp: u16,
}

fn lab(bin: &Path, args: &[&str]) -> Output {
    let o = run_with(bin, args, None);
    eprintln!("$ bty-lab {}\n{}{}", args.join(" "), stdout(&o), stderr(&o));
    o
}

/// One HTTP/1.0 request with optional Basic auth and JSON body; the status.
fn request(
    method: &str,
    port: u16,
    path: &str,
    basic: Option<(&str, &str)>,
    body: Option<&str>,
) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some((u, p)) = basic {
        req += &format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        );
    }
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
    } else {
        req += "\r\n";
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn get(port: u16, path: &str, basic: Option<(&str, &str)>) -> u16 {
    request("GET", port, path, basic, None)
}

fn status_json(bin: &Path, dest: &str, engine: &str) -> serde_json::Value {
    let o = lab(bin, &["status", dest, "--engine", engine, "--json"]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn assert_all_healthy(st: &serde_json::Value, version: &str) {
    for s in st["services"].as_array().unwrap() {
        assert_eq!(s["health"], "healthy", "{st:#}");
        assert_eq!(s["version"], version, "{st:#}");
    }
}

fn docker_api(engine: &str) -> bollard::Docker {
    bollard::Docker::connect_with_unix(socket(engine), 120, bollard::API_DEFAULT_VERSION).unwrap()
}

/// Build a "broken" image for `service` at `tag`: FROM the good one, with an
/// entrypoint that exits 1 at once, so an upgrade to it must roll back.
async fn build_broken(engine: &str, registry: &str, service: &str, from_tag: &str, tag: &str) {
    let api = docker_api(engine);
    let cf = format!(
        "FROM {registry}/{service}:{from_tag}\nENTRYPOINT [\"/bty-lab\", \"internal\", \"healthcheck\", \"http://127.0.0.1:1/\"]\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(cf.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "Containerfile", cf.as_bytes())
        .unwrap();
    let body = tar.into_inner().unwrap();
    let opts = bollard::image::BuildImageOptions {
        dockerfile: "Containerfile".to_string(),
        t: format!("{registry}/{service}:{tag}"),
        rm: true,
        ..Default::default()
    };
    // Empty map, not None: Podman rejects an empty X-Registry-Config.
    let mut s = api.build_image(opts, Some(HashMap::new()), Some(body.into()));
    while let Some(r) = s.next().await {
        let info = r.unwrap();
        assert!(info.error.is_none(), "{:?}", info.error);
    }
}

/// Removes whatever a test left in the engine under its DEST label, also
/// when the test panics half-way (the temp dir goes, containers would stay).
struct Cleanup {
    engine: &'static str,
    dest: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let api = docker_api(self.engine);
        let label = format!("dev.bty.deploy={}", self.dest);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let filters = HashMap::from([("label".to_string(), vec![label])]);
            let opts = bollard::container::ListContainersOptions::<String> {
                all: true,
                filters,
                ..Default::default()
            };
            for c in api.list_containers(Some(opts)).await.unwrap_or_default() {
                let rm = bollard::container::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = api
                    .remove_container(&c.id.unwrap_or_default(), Some(rm))
                    .await;
            }
            // By name: Podman's compat network list ignores label filters.
            let base = Path::new(&self.dest)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let _ = api.remove_network(&format!("{base}-bty")).await;
        });
    }
}

fn lifecycle(engine: &'static str, ports: Ports) {
    let Some(bin) = static_bin(engine) else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join(format!("lab-{engine}"));
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine,
        dest: dest.to_string(),
    };
    let (pw, pc, pt) = (
        ports.web.to_string(),
        ports.cache.to_string(),
        ports.tftp.to_string(),
    );
    let registry = "bty.test/local";
    let base = [
        "--engine",
        engine,
        "--host-addr",
        "127.0.0.1",
        "--registry",
        registry,
        "--port-web",
        &pw,
        "--port-cache",
        &pc,
        "--tftp-port",
        &pt,
    ];

    // Deploy with local images → all healthy.
    let mut args = vec!["deploy", dest, "--images", "local", "-y"];
    args.extend_from_slice(&base);
    let o = lab(&bin, &args);
    ok(&o);
    assert!(
        stderr(&o).contains("bty-lab passwd"),
        "no default-password warning"
    );
    assert_all_healthy(&status_json(&bin, dest, engine), VERSION);

    // Re-running deploy is safe: same secrets, says what it kept.
    let env_before = std::fs::read_to_string(dest_p.join("envvars")).unwrap();
    let o = lab(
        &bin,
        &[
            "deploy", dest, "--engine", engine, "--images", "present", "-y",
        ],
    );
    ok(&o);
    assert!(stderr(&o).contains("envvars: kept"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dest_p.join("envvars")).unwrap(),
        env_before
    );

    // Default password logs in on both UIs.
    assert_eq!(get(ports.web, "/healthz", None), 200);
    assert_eq!(
        get(ports.web, "/api/machines", Some(("bty-lab", "bty-lab"))),
        200
    );
    assert_eq!(
        get(ports.cache, "/blobs", Some(("bty-lab", "bty-lab"))),
        200
    );

    // passwd: old refused, new accepted, on both.
    let o = run_with(
        &bin,
        &["passwd", dest, "--engine", engine, "--password-stdin"],
        Some("correct horse battery\n"),
    );
    eprintln!("{}", stderr(&o));
    ok(&o);
    for port in [ports.web, ports.cache] {
        let path = if port == ports.web {
            "/api/machines"
        } else {
            "/blobs"
        };
        assert_eq!(
            get(port, path, Some(("bty-lab", "bty-lab"))),
            401,
            "old password still works on {port}"
        );
        assert_eq!(
            get(port, path, Some(("bty-lab", "correct horse battery"))),
            200,
            "new password refused on {port}"
        );
    }
    // Register a machine through the API; upgrades must keep it.
    let mac_path = "/api/machines/52:54:00:12:34:56";
    let new = Some(("bty-lab", "correct horse battery"));
    let put = request("PUT", ports.web, mac_path, new, Some("{}"));
    assert!((200..300).contains(&put), "registering a machine: {put}");
    assert_eq!(get(ports.web, mac_path, new), 200);
    let o = run_with(
        &bin,
        &["passwd", dest, "--engine", engine, "--password-stdin"],
        Some("short\n"),
    );
    fails_with(&o, "shorter than 8");

    // Upgrade to a rebuilt image tag; data stays.
    std::fs::write(dest_p.join("data/bty/marker"), "machine").unwrap();
    let o = lab(
        &bin,
        &[
            "upgrade", dest, "--engine", engine, "--to", "0.99.0", "--images", "local",
        ],
    );
    ok(&o);
    assert_all_healthy(&status_json(&bin, dest, engine), "0.99.0");
    assert_eq!(
        std::fs::read_to_string(dest_p.join("data/bty/marker")).unwrap(),
        "machine"
    );
    assert_eq!(
        get(ports.web, mac_path, new),
        200,
        "machine lost by the upgrade"
    );
    let manifest = std::fs::read_to_string(dest_p.join(".bty-lab.toml")).unwrap();
    assert!(manifest.contains("version = \"0.99.0\""), "{manifest}");

    // A downgrade is refused without --allow-downgrade.
    fails_with(
        &lab(
            &bin,
            &["upgrade", dest, "--engine", engine, "--to", "0.1.0"],
        ),
        "downgrade",
    );

    // A broken upgrade rolls back to 0.99.0, healthy.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for svc in ["bty-web", "withcache", "bty-tftp"] {
        rt.block_on(build_broken(engine, registry, svc, "0.99.0", "0.99.1"));
    }
    let o = lab(
        &bin,
        &[
            "upgrade",
            dest,
            "--engine",
            engine,
            "--to",
            "0.99.1",
            "--images",
            "present",
            "--timeout",
            "60",
        ],
    );
    fails_with(&o, "rolled back to bty 0.99.0");
    assert_all_healthy(&status_json(&bin, dest, engine), "0.99.0");
    assert_eq!(
        get(
            ports.web,
            "/api/machines",
            Some(("bty-lab", "correct horse battery"))
        ),
        200
    );

    // Ports held by someone else are named before anything is touched.
    let o = lab(&bin, &["purge", dest, "--engine", engine]);
    ok(&o);
    let holder = std::net::TcpListener::bind(("0.0.0.0", ports.web)).unwrap();
    let o = lab(
        &bin,
        &[
            "deploy", dest, "--engine", engine, "--images", "present", "-y",
        ],
    );
    fails_with(&o, &format!("{}/tcp", ports.web));
    assert!(
        stderr(&o).contains(&format!("pid {}", std::process::id())),
        "owner not named: {}",
        stderr(&o)
    );
    drop(holder);

    // Purge without --data keeps the state; with --data removes it.
    assert!(
        dest_p.join("data/bty/marker").exists(),
        "purge without --data removed state"
    );
    let api = docker_api(engine);
    let left = rt.block_on(
        api.list_containers(Some(bollard::container::ListContainersOptions::<String> {
            all: true,
            filters: HashMap::from([("label".to_string(), vec![format!("dev.bty.deploy={dest}")])]),
            ..Default::default()
        })),
    );
    assert!(left.unwrap().is_empty(), "containers left after purge");
    ok(&lab(
        &bin,
        &[
            "deploy", dest, "--engine", engine, "--images", "present", "-y",
        ],
    ));
    fails_with(
        &lab(&bin, &["purge", dest, "--engine", engine, "--data"]),
        "--yes",
    );
    ok(&lab(
        &bin,
        &["purge", dest, "--engine", engine, "--data", "--yes"],
    ));
    assert!(
        !dest_p.join("data/bty").exists(),
        "state kept despite --data"
    );
    assert!(
        dest_p.join("envvars").exists(),
        "DEST removed without --all"
    );
    // A second purge finds nothing and still succeeds.
    ok(&lab(&bin, &["purge", dest, "--engine", engine, "--yes"]));
    ok(&lab(
        &bin,
        &[
            "purge", dest, "--engine", engine, "--all", "--images", "--yes",
        ],
    ));
    assert!(!dest_p.exists());
}

#[test]
fn docker_lifecycle() {
    lifecycle(
        "docker",
        Ports {
            web: 18080,
            cache: 13000,
            tftp: 16969,
        },
    );
}

#[test]
fn podman_lifecycle() {
    lifecycle(
        "podman",
        Ports {
            web: 28080,
            cache: 23000,
            tftp: 26969,
        },
    );
}

/// The pull path for real: push the locally built images into Debian's
/// docker-registry on loopback, drop them from the engine, deploy with pull.
#[test]
fn docker_pull_through_local_registry() {
    let Some(bin) = static_bin("docker") else {
        return;
    };
    if !have_tool("docker-registry", crate::util::on_path("docker-registry")) {
        return;
    }
    let t = TestDir::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = t.path().join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            t.path().join("registry").display()
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _registry = Kill(
        std::process::Command::new("docker-registry")
            .args(["serve", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let registry = format!("127.0.0.1:{port}/bty");
    let dest_p = t.path().join("lab-pull");
    let dest = dest_p.to_str().unwrap();
    let base = [
        "--engine",
        "docker",
        "--host-addr",
        "127.0.0.1",
        "--port-web",
        "18180",
        "--port-cache",
        "13100",
        "--no-tftp",
    ];

    // Build locally under the registry's name, push, then forget the images.
    let mut args = vec!["init", dest, "--registry", &registry];
    args.extend_from_slice(&base[2..]);
    ok(&lab(&bin, &args));
    let mut args = vec!["deploy", dest, "--images", "local", "-y"];
    args.extend_from_slice(&base);
    ok(&lab(&bin, &args));
    ok(&lab(&bin, &["purge", dest, "--engine", "docker", "--yes"]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = docker_api("docker");
    for svc in ["bty-web", "withcache"] {
        let image = format!("{registry}/{svc}");
        rt.block_on(async {
            let mut s = api.push_image(
                &image,
                Some(bollard::image::PushImageOptions { tag: VERSION }),
                None,
            );
            while let Some(r) = s.next().await {
                let info = r.unwrap();
                assert!(info.error.is_none(), "push {image}: {:?}", info.error);
            }
            api.remove_image(&format!("{image}:{VERSION}"), None, None)
                .await
                .unwrap();
        });
    }
    let o = lab(
        &bin,
        &[
            "deploy", dest, "--engine", "docker", "--images", "pull", "-y",
        ],
    );
    ok(&o);
    assert!(stderr(&o).contains("pulled"), "{}", stderr(&o));
    assert_all_healthy(&status_json(&bin, dest, "docker"), VERSION);
    ok(&lab(
        &bin,
        &[
            "purge", dest, "--engine", "docker", "--all", "--images", "--yes",
        ],
    ));

    // A registry without the image: the engine's message, and no containers.
    let t2 = TestDir::new();
    let d2 = t2.path().join("lab-missing");
    let missing = format!("127.0.0.1:{port}/nothing-here");
    let mut args = vec![
        "deploy",
        d2.to_str().unwrap(),
        "--images",
        "pull",
        "--registry",
        &missing,
        "-y",
    ];
    args.extend_from_slice(&base);
    fails_with(&lab(&bin, &args), "pulling");
}
