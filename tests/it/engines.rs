//! The engine lifecycle against real Docker and Podman (started by
//! scripts/engines.sh). Gated by BTY_ENGINE_TESTS=docker,podman, which CI
//! sets; the images are built FROM scratch out of a static bty-lab given in
//! BTY_LAB_STATIC_BIN (scripts/test.sh builds it).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;

use crate::util::{
    atftp_get, exits_with, fails_with, have_tool, ok, run_with, stderr, stdout, TestDir,
};

/// The exit status of a deploy or upgrade that ended unhealthy
/// (`bty-lab --help`, "Exit status").
const UNHEALTHY: i32 = 5;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Podman 4.3 fails container starts now and then ("write child: broken
/// pipe") when several deploys hit its API at once; these tests run one
/// Podman deploy at a time (Docker tests still run beside them).
pub(crate) fn podman_turn() -> std::sync::MutexGuard<'static, ()> {
    static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PODMAN.lock().unwrap_or_else(|e| e.into_inner())
}

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
pub(crate) fn static_bin(engine: &str) -> Option<PathBuf> {
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
            "BTY_ENGINE_TESTS is set but BTY_LAB_STATIC_BIN is not a file; `cargo build -p bty-lab` \
             builds a static one (target/x86_64-unknown-linux-gnu/debug/bty-lab)"
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

/// A TCP port free on all addresses right now (and UDP, for bty-tftp).
pub(crate) fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
}

/// GET without auth; (status, raw body).
fn get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, buf[end + 4..].to_vec())
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

/// The newest file in DEST/backups whose name starts with `prefix`.
fn newest_archive(dest: &Path, prefix: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dest.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".tar.zst")
        })
        .collect();
    v.sort();
    v.pop()
        .unwrap_or_else(|| panic!("no {prefix}* archive in {}", dest.display()))
}

/// withcache's catalog one schema back, so that the next upgrade migrates
/// it: its container stopped, the last migration (blobs.misses) undone and
/// user_version lowered, the files given back to the container's user.
/// withcache migrates it again when it starts.
fn unmigrate_withcache(engine: &str, dest: &Path) {
    let name = format!("{}-withcache", dest.file_name().unwrap().to_string_lossy());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(docker_api(engine).stop_container(&name, None))
        .unwrap();
    let dir = dest.join("data/withcache");
    {
        let c = rusqlite::Connection::open(dir.join("withcache.db")).unwrap();
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            v, 2,
            "withcache's schema moved on: undo its new last migration here"
        );
        c.execute_batch("ALTER TABLE blobs DROP COLUMN misses; PRAGMA user_version = 1;")
            .unwrap();
    }
    for f in ["withcache.db", "withcache.db-wal", "withcache.db-shm"] {
        let p = dir.join(f);
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(65532), Some(65532)).unwrap();
        }
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

    // Deploy with local images and fake netboot media → all healthy.
    let media = t.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let kernel: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8 | 0x80).collect();
    let initrd: Vec<u8> = (0..80_001u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(media.join("bty-netboot-x86_64.vmlinuz"), &kernel).unwrap();
    std::fs::write(media.join("bty-netboot-x86_64.initrd"), &initrd).unwrap();
    let media_s = media.to_str().unwrap();
    let mut args = vec![
        "deploy",
        dest,
        "--images",
        "local",
        "-y",
        "--netboot",
        media_s,
    ];
    args.extend_from_slice(&base);
    let o = lab(&bin, &args);
    ok(&o);
    // A random password, shown once with the URLs; no well-known default.
    let first = crate::util::printed_password(&stderr(&o)).expect("deploy shows the password");
    assert!(first.len() >= 20, "{first}");
    assert!(!stderr(&o).contains("still the default"), "{}", stderr(&o));
    let envvars = std::fs::read_to_string(dest_p.join("envvars")).unwrap();
    assert!(
        !envvars.contains(&first),
        "envvars holds the password itself"
    );
    assert_all_healthy(&status_json(&bin, dest, engine), VERSION);

    // bty-web serves the placed media byte for byte from the bind-mounted
    // boot dir, and the iPXE bootfiles its image carries next to them.
    for (name, bytes) in [
        ("bty-netboot-x86_64.vmlinuz", &kernel),
        ("bty-netboot-x86_64.initrd", &initrd),
    ] {
        let (code, body) = get_bytes(ports.web, &format!("/boot/{name}"));
        assert_eq!(code, 200, "{name}");
        assert!(body == *bytes, "{name}: served bytes differ");
    }
    // The iPXE bootfiles come from the media bty-web's image carries (the
    // operator's media dir has none): the host's /usr/lib/ipxe here.
    if Path::new("/usr/lib/ipxe/ipxe.efi").exists() {
        let (code, body) = get_bytes(ports.web, "/boot/ipxe.efi");
        assert_eq!(code, 200, "ipxe.efi not seeded into the boot dir");
        assert!(body == std::fs::read("/usr/lib/ipxe/ipxe.efi").unwrap());
    }
    assert!(
        dest_p.join("data/bty/boot/.operator-media.json").is_file(),
        "the operator's media is not recorded as theirs"
    );

    // The Secure Boot chain through the containers: the deployed bty-tftp
    // (host network) relays GRUB's reads to bty-web's published port with
    // the envvars key; the per-MAC config names bty-web as the machine
    // reaches it, and the kernel comes through byte for byte.
    if have_tool("atftp", crate::util::on_path("atftp")) {
        let cfg = atftp_get(ports.tftp, "grub/grub.cfg-52:54:00:e0:91:01", t.path());
        let cfg = String::from_utf8(cfg).unwrap();
        assert!(
            cfg.contains(&format!("bty.server=http://127.0.0.1:{pw} ")),
            "{cfg}"
        );
        let got = atftp_get(
            ports.tftp,
            "grub/boot/52-54-00-e0-91-01/bty-netboot-x86_64.vmlinuz",
            t.path(),
        );
        assert!(got == kernel, "the relayed kernel differs");
        // shim and GRUB: in bty-tftp's image (its TFTP root) and bty-web's.
        for f in ["shimx64.efi", "grubx64.efi"] {
            let (code, body) = get_bytes(ports.web, &format!("/boot/{f}"));
            assert_eq!(code, 200, "{f} not in bty-web's boot dir");
            let tftp = atftp_get(ports.tftp, f, t.path());
            assert!(tftp == body && tftp.starts_with(b"MZ"), "{f} differs");
        }
    }

    // Each container's environment holds only its own service's keys.
    let rt0 = tokio::runtime::Runtime::new().unwrap();
    let project = dest_p.file_name().unwrap().to_str().unwrap().to_string();
    let env_of = |svc: &str| -> Vec<String> {
        let api = docker_api(engine);
        let c = rt0
            .block_on(api.inspect_container(&format!("{project}-{svc}"), None))
            .unwrap();
        c.config.unwrap().env.unwrap_or_default()
    };
    let web_env = env_of("bty-web");
    let cache_env = env_of("withcache");
    assert!(
        web_env
            .iter()
            .any(|e| e.starts_with("BTY_ADMIN_PASSWORD_HASH=")),
        "{web_env:?}"
    );
    assert!(
        !web_env.iter().any(|e| e.starts_with("WITHCACHE_")),
        "bty-web's container sees withcache keys: {web_env:?}"
    );
    assert!(
        cache_env
            .iter()
            .any(|e| e.starts_with("WITHCACHE_SESSION_SECRET=")),
        "{cache_env:?}"
    );
    assert!(
        !cache_env.iter().any(|e| e.starts_with("BTY_")),
        "withcache's container sees bty-web keys: {cache_env:?}"
    );

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
    assert_eq!(crate::util::printed_password(&stderr(&o)), None);
    // --password-stdin sets only a fresh DEST's: refused, nothing changed.
    let o = run_with(
        &bin,
        &["deploy", dest, "--engine", engine, "--password-stdin", "-y"],
        Some("another good password\n"),
    );
    exits_with(&o, 3);
    fails_with(&o, "bty-lab passwd");
    assert_eq!(
        std::fs::read_to_string(dest_p.join("envvars")).unwrap(),
        env_before
    );

    // The shown password logs in on both UIs, the old default does not.
    assert_eq!(get(ports.web, "/healthz", None), 200);
    for (port, path) in [(ports.web, "/api/machines"), (ports.cache, "/blobs")] {
        assert_eq!(get(port, path, Some(("bty-lab", &first))), 200, "{path}");
        assert_eq!(get(port, path, Some(("bty-lab", "bty-lab"))), 401, "{path}");
    }

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
            get(port, path, Some(("bty-lab", &first))),
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

    // A backup while it runs, a machine registered after it, a restore
    // onto the same DEST: the machine from before is back, the later one
    // gone, the stack healthy on the same images.
    let o = lab(&bin, &["backup", dest]);
    ok(&o);
    let archive = newest_archive(&dest_p, "bty-");
    let later = "/api/machines/52:54:00:12:34:57";
    let put = request("PUT", ports.web, later, new, Some("{}"));
    assert!((200..300).contains(&put), "registering a machine: {put}");
    let a = archive.to_str().unwrap();
    let o = lab(&bin, &["restore", a, dest, "--engine", engine]);
    ok(&o);
    assert_all_healthy(&status_json(&bin, dest, engine), VERSION);
    assert_eq!(
        get(ports.web, mac_path, new),
        200,
        "the machine from before"
    );
    assert_eq!(get(ports.web, later, new), 404, "the machine added after");

    // Upgrade to a rebuilt image tag; data stays. The images are this
    // build, so nothing would migrate: withcache's catalog is taken one
    // schema back first, and upgrade snapshots it before the swap.
    std::fs::write(dest_p.join("data/bty/marker"), "machine").unwrap();
    unmigrate_withcache(engine, &dest_p);
    let o = lab(
        &bin,
        &[
            "upgrade", dest, "--engine", engine, "--to", "0.99.0", "--images", "local",
        ],
    );
    ok(&o);
    let snap = newest_archive(&dest_p, &format!("pre-upgrade-{VERSION}-to-0.99.0-"));
    assert!(
        stderr(&o).contains(&format!("snapshot written: {}", snap.display())),
        "{}",
        stderr(&o)
    );
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
    // The new bty-web kept the operator's media over its image's own.
    let (code, body) = get_bytes(ports.web, "/boot/bty-netboot-x86_64.vmlinuz");
    assert!(
        code == 200 && body == kernel,
        "the operator's kernel was replaced"
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

    // A broken upgrade rolls back to 0.99.0, healthy, with the databases
    // from the snapshot it took (the catalog one schema back again, so the
    // upgrade migrates).
    let rt = tokio::runtime::Runtime::new().unwrap();
    for svc in ["bty-web", "withcache", "bty-tftp"] {
        rt.block_on(build_broken(engine, registry, svc, "0.99.0", "0.99.1"));
    }
    unmigrate_withcache(engine, &dest_p);
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
    exits_with(&o, UNHEALTHY);
    let snap = newest_archive(&dest_p, "pre-upgrade-0.99.0-to-0.99.1-");
    assert!(
        stderr(&o).contains(&format!(
            "putting the databases back from {}",
            snap.display()
        )),
        "{}",
        stderr(&o)
    );
    let aside = std::fs::read_dir(dest_p.join("data/withcache"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("withcache.db.pre-restore-")
        });
    assert!(
        aside,
        "the rolled-back catalog is not kept beside the restored one"
    );
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
    let _turn = podman_turn();
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
    // Ports nothing else on this shared machine holds right now.
    let (pull_web, pull_cache) = (free_port().to_string(), free_port().to_string());
    let dest_p = t.path().join("lab-pull");
    let dest = dest_p.to_str().unwrap();
    let base = [
        "--engine",
        "docker",
        "--host-addr",
        "127.0.0.1",
        "--port-web",
        &pull_web,
        "--port-cache",
        &pull_cache,
        "--no-tftp",
    ];

    // Build locally under the registry's name, push, then forget the images.
    let mut args = vec!["init", dest, "--registry", &registry];
    args.extend_from_slice(&base[2..]);
    ok(&lab(&bin, &args));
    // An operator's --netboot DIR without media is refused before anything.
    let no_media = t.path().join("no-media");
    let mut args = vec![
        "deploy",
        dest,
        "--images",
        "local",
        "-y",
        "--netboot",
        no_media.to_str().unwrap(),
    ];
    args.extend_from_slice(&base);
    let o = lab(&bin, &args);
    fails_with(
        &o,
        &format!("{} has no bty-netboot-x86_64.vmlinuz", no_media.display()),
    );
    assert!(stderr(&o).contains("nothing was changed"), "{}", stderr(&o));
    assert!(containers_of("docker", dest).is_empty());
    // The images built here carry this binary's media.
    let mut args = vec!["deploy", dest, "--images", "local", "-y"];
    args.extend_from_slice(&base);
    ok(&lab(&bin, &args));
    ok(&lab(&bin, &["purge", dest, "--engine", "docker", "--yes"]));
    // A fresh boot dir: whatever the pulled bty-web serves, it placed.
    std::fs::remove_dir_all(dest_p.join("data/bty/boot")).unwrap();
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
    // The pull needs no media on the host: no apt, an empty media cache.
    let o = lab_env(
        &bin,
        &[
            "deploy", dest, "--engine", "docker", "--images", "pull", "-y",
        ],
        &no_media_env(t.path()),
    );
    ok(&o);
    assert!(stderr(&o).contains("pulled"), "{}", stderr(&o));
    assert_all_healthy(&status_json(&bin, dest, "docker"), VERSION);
    // The pulled bty-web placed its image's media (this binary's) and
    // serves it: a pulled image flashes with no build on the host.
    let web_port: u16 = pull_web.parse().unwrap();
    let initrd = served_initrd(web_port, t.path());
    assert_eq!(initrd["agent_sha256"], sha256_hex(&bin), "{initrd}");
    assert!(stderr(&o).contains("matches this binary"), "{}", stderr(&o));
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

/// bty-lab with the stub systemctl first on PATH and the Quadlet/systemd
/// paths redirected into the test dir.
fn lab_quadlet(bin: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let stub = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/stub");
    let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .env("PATH", path)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    eprintln!("$ bty-lab {}\n{}{}", args.join(" "), stdout(&o), stderr(&o));
    o
}

/// The calls the stub recorded since `from` (line index), without the
/// unit listings daemon-reload adds.
fn calls(log: &Path, from: usize) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter(|l| l.starts_with("systemctl "))
        .map(|l| l.trim_start_matches("systemctl ").to_string())
        .collect()
}

fn log_len(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// `deploy --systemd` / upgrade / purge in Quadlet mode on Podman. These
/// machines run no systemd (PID 1 is not systemd, no Podman >= 4.4), so
/// `systemctl` is a STUB (tests/it/stub/systemctl) that records its calls and
/// starts each unit's container with the podman CLI from the unit's keys;
/// what is asserted is bty-lab's side: unit files, modes, call order, health
/// through the Podman API, rollback by restoring unit files, teardown.
#[test]
fn podman_quadlet_install_upgrade_purge_with_stub_systemctl() {
    let _turn = podman_turn();
    let Some(bin) = static_bin("podman") else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join("lab-q");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "podman",
        dest: dest.to_string(),
    };
    let units = t.path().join("units");
    let rundir = t.path().join("run-systemd-system");
    std::fs::create_dir_all(&rundir).unwrap();
    let log = t.path().join("systemctl.log");
    let env: [(&str, &Path); 3] = [
        ("BTY_LAB_QUADLET_DIR", &units),
        ("BTY_LAB_SYSTEMD_RUNDIR", &rundir),
        ("STUB_LOG", &log),
    ];
    let registry = "bty.test/quadlet";
    let (qw, qc, qt) = (
        free_port().to_string(),
        free_port().to_string(),
        free_port().to_string(),
    );
    let o = lab_quadlet(
        &bin,
        &env,
        &[
            "deploy",
            dest,
            "--systemd",
            "--engine",
            "podman",
            "--images",
            "local",
            "-y",
            "--host-addr",
            "127.0.0.1",
            "--registry",
            registry,
            "--port-web",
            &qw,
            "--port-cache",
            &qc,
            "--tftp-port",
            &qt,
        ],
    );
    ok(&o);
    let services = ["withcache", "bty-web", "bty-tftp"];
    for svc in services {
        let f = units.join(format!("lab-q-{svc}.container"));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains(&format!("Image={registry}/{svc}:{VERSION}")),
            "{text}"
        );
    }
    // daemon-reload came after all three files were in place, then the
    // starts in dependency order.
    let text = std::fs::read_to_string(&log).unwrap();
    let reload = text.find("systemctl daemon-reload").unwrap();
    for svc in services {
        assert!(
            text[reload..].contains(&format!("  unit 644 lab-q-{svc}.container")),
            "{text}"
        );
    }
    assert_eq!(
        calls(&log, 0),
        vec![
            "daemon-reload",
            "start lab-q-withcache.service",
            "start lab-q-bty-web.service",
            "start lab-q-bty-tftp.service",
        ]
    );
    let st = status_json(&bin, dest, "podman");
    assert_all_healthy(&st, VERSION);
    // The shown login works: the Podman-flavour env file reached the
    // container with the argon2 hash intact.
    let shown = crate::util::printed_password(&stderr(&o)).expect("deploy shows the password");
    let web_port = qw.parse().unwrap();
    assert_eq!(
        get(web_port, "/api/machines", Some(("bty-lab", &shown))),
        200
    );
    let manifest = std::fs::read_to_string(dest_p.join(".bty-lab.toml")).unwrap();
    assert!(manifest.contains("quadlet = true"), "{manifest}");
    let o = lab_quadlet(&bin, &env, &["status", dest, "--engine", "podman"]);
    ok(&o);
    assert!(
        stdout(&o).contains("lab-q-bty-web.service: active"),
        "{}",
        stdout(&o)
    );

    // Upgrade: new unit files, daemon-reload, restarts; healthy on 0.99.0.
    let n = log_len(&log);
    let o = lab_quadlet(
        &bin,
        &env,
        &[
            "upgrade", dest, "--engine", "podman", "--to", "0.99.0", "--images", "local",
        ],
    );
    ok(&o);
    assert_eq!(
        calls(&log, n),
        vec![
            "daemon-reload",
            "restart lab-q-withcache.service",
            "restart lab-q-bty-web.service",
            "restart lab-q-bty-tftp.service",
        ]
    );
    let web_unit = units.join("lab-q-bty-web.container");
    assert!(std::fs::read_to_string(&web_unit)
        .unwrap()
        .contains(&format!("Image={registry}/bty-web:0.99.0")));
    assert_all_healthy(&status_json(&bin, dest, "podman"), "0.99.0");

    // A broken upgrade: the previous unit files come back, restarted, healthy.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for svc in services {
        rt.block_on(build_broken("podman", registry, svc, "0.99.0", "0.99.1"));
    }
    let o = lab_quadlet(
        &bin,
        &env,
        &[
            "upgrade",
            dest,
            "--engine",
            "podman",
            "--to",
            "0.99.1",
            "--images",
            "present",
            "--timeout",
            "60",
        ],
    );
    fails_with(&o, "rolled back to bty 0.99.0");
    exits_with(&o, UNHEALTHY);
    assert!(std::fs::read_to_string(&web_unit)
        .unwrap()
        .contains(&format!("Image={registry}/bty-web:0.99.0")));
    assert_all_healthy(&status_json(&bin, dest, "podman"), "0.99.0");

    // Purge: stop every unit, remove the files, daemon-reload; no containers.
    let n = log_len(&log);
    let o = lab_quadlet(&bin, &env, &["purge", dest, "--engine", "podman", "--yes"]);
    ok(&o);
    assert_eq!(
        calls(&log, n),
        vec![
            "stop lab-q-bty-tftp.service",
            "stop lab-q-bty-web.service",
            "stop lab-q-withcache.service",
            "daemon-reload",
        ]
    );
    for svc in services {
        assert!(!units.join(format!("lab-q-{svc}.container")).exists());
    }
    let left = rt
        .block_on(docker_api("podman").list_containers(Some(
            bollard::container::ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([(
                    "label".to_string(),
                    vec![format!("dev.bty.deploy={dest}")],
                )]),
                ..Default::default()
            },
        )))
        .unwrap();
    assert!(left.is_empty(), "containers left after purge: {left:?}");
    for svc in services {
        let _ = rt.block_on(docker_api("podman").remove_image(
            &format!("{registry}/{svc}:0.99.1"),
            None,
            None,
        ));
    }
}

/// A unit that never becomes healthy: deploy tears the units down again and
/// says what it removed and what was left.
#[test]
fn podman_quadlet_failed_deploy_tears_down() {
    let _turn = podman_turn();
    let Some(bin) = static_bin("podman") else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join("lab-qf");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "podman",
        dest: dest.to_string(),
    };
    let units = t.path().join("units");
    let rundir = t.path().join("run-systemd-system");
    std::fs::create_dir_all(&rundir).unwrap();
    let log = t.path().join("systemctl.log");
    let env: [(&str, &Path); 3] = [
        ("BTY_LAB_QUADLET_DIR", &units),
        ("BTY_LAB_SYSTEMD_RUNDIR", &rundir),
        ("STUB_LOG", &log),
    ];
    // Images whose entrypoint exits at once.
    let registry = "bty.test/quadlet-broken";
    let rt = tokio::runtime::Runtime::new().unwrap();
    ok(&lab(
        &bin,
        &[
            "init",
            dest,
            "--host-addr",
            "127.0.0.1",
            "--registry",
            registry,
            "--no-tftp",
        ],
    ));
    // Build good images under this registry, then broken ones on top.
    let o = lab(
        &bin,
        &[
            "deploy",
            dest,
            "--engine",
            "podman",
            "--images",
            "local",
            "-y",
            "--port-web",
            &free_port().to_string(),
            "--port-cache",
            &free_port().to_string(),
        ],
    );
    ok(&o);
    ok(&lab(&bin, &["purge", dest, "--engine", "podman", "--yes"]));
    for svc in ["withcache", "bty-web"] {
        rt.block_on(build_broken("podman", registry, svc, VERSION, "9.9.9"));
    }
    let manifest = dest_p.join(".bty-lab.toml");
    let m = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        m.replace(&format!("version = \"{VERSION}\""), "version = \"9.9.9\""),
    )
    .unwrap();
    let o = lab_quadlet(
        &bin,
        &env,
        &[
            "deploy",
            dest,
            "--systemd",
            "--engine",
            "podman",
            "--images",
            "present",
            "-y",
            "--timeout",
            "30",
        ],
    );
    fails_with(&o, "Tore down");
    exits_with(&o, UNHEALTHY);
    assert!(
        stderr(&o).contains("Left behind: nothing"),
        "{}",
        stderr(&o)
    );
    let c = calls(&log, 0);
    assert_eq!(
        c.first().map(String::as_str),
        Some("daemon-reload"),
        "{c:?}"
    );
    assert!(c.iter().any(|l| l.starts_with("stop ")), "{c:?}");
    assert_eq!(c.last().map(String::as_str), Some("daemon-reload"), "{c:?}");
    assert!(
        std::fs::read_dir(&units).unwrap().next().is_none(),
        "unit files left"
    );
    for svc in ["withcache", "bty-web"] {
        for tag in ["9.9.9", VERSION] {
            let _ = rt.block_on(docker_api("podman").remove_image(
                &format!("{registry}/{svc}:{tag}"),
                None,
                None,
            ));
        }
    }
}

/// `--systemd` with Docker as the engine: refused before anything is written
/// (Quadlet units are Podman's), even where systemd runs.
#[test]
fn docker_systemd_is_refused_before_writing() {
    if !wanted("docker") {
        eprintln!("skipping: BTY_ENGINE_TESTS does not name docker");
        return;
    }
    if !have_tool(
        "docker engine socket /var/run/docker.sock",
        Path::new(socket("docker")).exists(),
    ) {
        return;
    }
    let t = TestDir::new();
    let dest = t.path().join("lab-qd");
    let rundir = t.path().join("run-systemd-system");
    std::fs::create_dir_all(&rundir).unwrap();
    let units = t.path().join("units");
    let o = std::process::Command::new(crate::util::bin())
        .args([
            "deploy",
            dest.to_str().unwrap(),
            "--systemd",
            "--engine",
            "docker",
        ])
        .args(["--host-addr", "127.0.0.1", "-y"])
        .env("BTY_LAB_SYSTEMD_RUNDIR", &rundir)
        .env("BTY_LAB_QUADLET_DIR", &units)
        .output()
        .unwrap();
    fails_with(&o, "which Podman runs");
    assert!(stderr(&o).contains("Nothing was changed"), "{}", stderr(&o));
    assert!(
        !dest.exists() && !units.exists(),
        "files written despite the refusal"
    );
}

/// Removes the images a test built under its own registry prefix, also when
/// the test panics half-way. Only these refs are ever touched.
struct ImageCleanup {
    engine: &'static str,
    refs: Vec<String>,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        let api = docker_api(self.engine);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for r in &self.refs {
                let opts = bollard::image::RemoveImageOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = api.remove_image(r, Some(opts), None).await;
            }
        });
    }
}

/// The stack's three image refs under `registry` at `tag`.
fn stack_refs(registry: &str, tag: &str) -> Vec<String> {
    ["withcache", "bty-web", "bty-tftp"]
        .iter()
        .map(|s| format!("{registry}/{s}:{tag}"))
        .collect()
}

/// A registry prefix on a loopback port nothing listens on (free a moment
/// ago): pulls from it fail at once with "connection refused", and no
/// packet leaves the host. Unique per test and run.
fn unreachable_registry(name: &str) -> String {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    format!("127.0.0.1:{port}/{name}-{}", std::process::id())
}

/// The `images: ...` lines deploy printed (there must be exactly one).
#[track_caller]
fn images_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("images: "))
        .collect();
    assert_eq!(lines.len(), 1, "want one images line:\n{err}");
    lines[0].to_string()
}

/// Image id and labels of `r` in `engine`, or None if it is not there.
fn image_facts(engine: &str, r: &str) -> Option<(String, HashMap<String, String>)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let img = rt.block_on(docker_api(engine).inspect_image(r)).ok()?;
    Some((
        img.id.unwrap_or_default(),
        img.config.and_then(|c| c.labels).unwrap_or_default(),
    ))
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(std::fs::read(path).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Containers labelled with `dest` in `engine`.
fn containers_of(engine: &str, dest: &str) -> Vec<bollard::models::ContainerSummary> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(docker_api(engine).list_containers(Some(
        bollard::container::ListContainersOptions::<String> {
            all: true,
            filters: HashMap::from([("label".to_string(), vec![format!("dev.bty.deploy={dest}")])]),
            ..Default::default()
        },
    )))
    .unwrap()
}

/// The bytes a TFTP fetch gave are the bootfile; when not, say what came
/// instead (a script, a short read) rather than dump 72 KiB.
fn assert_is_binary(got: &[u8], binary: &[u8]) {
    if got != binary {
        let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
        panic!(
            "expected the {}-byte bootfile, got {} bytes starting {head:?}",
            binary.len(),
            got.len()
        );
    }
}

/// `--images auto` (the default) on a host where no registry answers:
/// deploy builds the images from this binary and says so in one line; a
/// second deploy with the same binary reuses them (same image ids); an
/// image of the same tag built from another binary is rebuilt; an explicit
/// `--images pull` still fails with the engine's message. The deployed
/// bty-tftp breaks the iPXE loop for a real TFTP client.
#[test]
fn docker_images_auto_builds_without_a_registry_and_reuses_after() {
    let Some(bin) = static_bin("docker") else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join("lab-auto");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "docker",
        dest: dest.to_string(),
    };
    let registry = unreachable_registry("bty-auto");
    let refs = stack_refs(&registry, VERSION);
    let _images = ImageCleanup {
        engine: "docker",
        refs: refs.clone(),
    };
    let (pw, pc, pt) = (free_port(), free_port(), free_port());
    let (pw_s, pc_s, pt_s) = (pw.to_string(), pc.to_string(), pt.to_string());
    let o = lab(
        &bin,
        &[
            "deploy",
            dest,
            "--engine",
            "docker",
            "--host-addr",
            "127.0.0.1",
            "--registry",
            &registry,
            "--port-web",
            &pw_s,
            "--port-cache",
            &pc_s,
            "--tftp-port",
            &pt_s,
            "-y",
        ],
    );
    ok(&o);
    let line = images_line(&o);
    assert!(
        line.starts_with(&format!("images: built locally from {}", bin.display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("pull of {registry}/withcache:{VERSION} failed:"))
            && line.contains("connection refused"),
        "{line}"
    );
    let manifest = std::fs::read_to_string(dest_p.join(".bty-lab.toml")).unwrap();
    assert!(manifest.contains("images = \"auto\""), "{manifest}");
    assert_all_healthy(&status_json(&bin, dest, "docker"), VERSION);
    // The images carry this binary's sha256.
    let sha = sha256_hex(&bin);
    let ids: Vec<String> = refs
        .iter()
        .map(|r| {
            let (id, labels) = image_facts("docker", r).expect(r);
            assert_eq!(labels.get("dev.bty.binary"), Some(&sha), "{r}");
            id
        })
        .collect();

    // The deployed bty-tftp breaks the loop: a client that fetched the
    // binary gets, on its next fetch, a script chaining to bty-web.
    let kpxe = Path::new("/usr/lib/ipxe/undionly.kpxe");
    if have_tool("atftp", crate::util::on_path("atftp"))
        && have_tool("Debian's ipxe (/usr/lib/ipxe)", kpxe.exists())
    {
        let binary = std::fs::read(kpxe).unwrap();
        assert_is_binary(&atftp_get(pt, "undionly.kpxe", t.path()), &binary);
        let script = String::from_utf8(atftp_get(pt, "undionly.kpxe", t.path())).unwrap();
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        assert!(
            script.contains(&format!("chain http://127.0.0.1:{pw}/pxe-bootstrap.ipxe")),
            "{script}"
        );
        assert_is_binary(&atftp_get(pt, "undionly.kpxe", t.path()), &binary);
    }

    // Warm re-deploy, no flags: nothing pulled or built, same images.
    let o = lab(&bin, &["deploy", dest, "-y"]);
    ok(&o);
    let line = images_line(&o);
    assert!(
        line.starts_with("images: reused the ones in docker (built from this binary"),
        "{line}"
    );
    assert!(!stderr(&o).contains("built 127.0.0.1"), "{}", stderr(&o));
    let again: Vec<String> = refs
        .iter()
        .map(|r| image_facts("docker", r).unwrap().0)
        .collect();
    assert_eq!(again, ids, "a warm re-deploy rebuilt images");

    // The same tag built from another binary is not reused: rebuilt, and
    // only that one.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cf = format!("FROM {registry}/bty-web:{VERSION}\nLABEL dev.bty.binary=0000\n");
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(cf.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "Containerfile", cf.as_bytes())
            .unwrap();
        let opts = bollard::image::BuildImageOptions {
            dockerfile: "Containerfile".to_string(),
            t: format!("{registry}/bty-web:{VERSION}"),
            rm: true,
            ..Default::default()
        };
        let body = tar.into_inner().unwrap();
        let api = docker_api("docker");
        let mut s = api.build_image(opts, None, Some(body.into()));
        while let Some(r) = s.next().await {
            assert!(r.unwrap().error.is_none());
        }
    });
    let foreign = image_facts("docker", &refs[1]).unwrap().0;
    assert_ne!(foreign, ids[1]);
    let o = lab(&bin, &["deploy", dest, "-y"]);
    ok(&o);
    let line = images_line(&o);
    assert!(
        line.contains("was built from another bty-lab binary (sha256 0000)")
            && line.contains("built locally"),
        "{line}"
    );
    let (web_id, web_labels) = image_facts("docker", &refs[1]).unwrap();
    assert_ne!(web_id, foreign, "the foreign image was reused");
    assert_eq!(web_labels.get("dev.bty.binary"), Some(&sha));
    assert_eq!(image_facts("docker", &refs[0]).unwrap().0, ids[0]);
    assert_all_healthy(&status_json(&bin, dest, "docker"), VERSION);

    // An explicit pull is still just a pull: the engine's message.
    let o = lab(&bin, &["deploy", dest, "--images", "pull", "-y"]);
    fails_with(&o, &format!("pulling {registry}/withcache:{VERSION}"));
    assert!(stderr(&o).contains("connection refused"), "{}", stderr(&o));
    ok(&lab(&bin, &["purge", dest, "--images", "--yes"]));
    assert!(containers_of("docker", dest).is_empty());
    for r in &refs {
        assert!(image_facts("docker", r).is_none(), "{r} left after purge");
    }
}

/// A registry that accepts connections and never answers: the pull under
/// `--images auto` gives up after BTY_LAB_PULL_STALL_SECS without progress
/// and the images are built locally.
#[test]
fn docker_images_auto_gives_up_on_a_pull_that_makes_no_progress() {
    let Some(bin) = static_bin("docker") else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join("lab-stall");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "docker",
        dest: dest.to_string(),
    };
    // Accepts and holds every connection, never sends a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let registry = format!("127.0.0.1:{port}/bty-stall-{}", std::process::id());
    let refs = stack_refs(&registry, VERSION);
    let _images = ImageCleanup {
        engine: "docker",
        refs,
    };
    let (pw, pc) = (free_port().to_string(), free_port().to_string());
    let mut cmd = std::process::Command::new(&bin);
    cmd.args([
        "deploy",
        dest,
        "--engine",
        "docker",
        "--host-addr",
        "127.0.0.1",
    ])
    .args([
        "--registry",
        &registry,
        "--port-web",
        &pw,
        "--port-cache",
        &pc,
    ])
    .args(["--no-tftp", "-y"])
    .env("BTY_LAB_PULL_STALL_SECS", "3")
    .stdin(std::process::Stdio::null());
    let t0 = std::time::Instant::now();
    let o = cmd.output().unwrap();
    eprintln!("{}", stderr(&o));
    ok(&o);
    let line = images_line(&o);
    assert!(
        line.contains(&format!(
            "pull of {registry}/withcache:{VERSION} failed: no progress for 3 s"
        )) && line.starts_with("images: built locally from"),
        "{line}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "deploy took {:?}",
        t0.elapsed()
    );
    assert_all_healthy(&status_json(&bin, dest, "docker"), VERSION);
    ok(&lab(&bin, &["purge", dest, "--images", "--yes"]));
}

/// `deploy --engine podman` on a host where dockerd also runs: every later
/// command without --engine (status, passwd, upgrade, purge) acts on the
/// Podman stack, and Docker never sees a container of it. A deploy of the
/// same DEST on Docker is refused while Podman still runs it.
#[test]
fn podman_engine_is_remembered_by_every_later_command() {
    let _turn = podman_turn();
    let Some(bin) = static_bin("podman") else {
        return;
    };
    if !have_tool(
        "docker engine socket /var/run/docker.sock (Docker must run beside Podman)",
        Path::new(socket("docker")).exists(),
    ) {
        return;
    }
    let t = TestDir::new();
    let dest_p = t.path().join("lab-mem");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "podman",
        dest: dest.to_string(),
    };
    let registry = unreachable_registry("bty-mem");
    let mut refs = stack_refs(&registry, VERSION);
    refs.extend(stack_refs(&registry, "0.99.0"));
    let _images = ImageCleanup {
        engine: "podman",
        refs,
    };
    let (pw, pc, pt) = (free_port(), free_port(), free_port());
    let (pw_s, pc_s, pt_s) = (pw.to_string(), pc.to_string(), pt.to_string());
    // The operator's own password on a fresh DEST (--password-stdin).
    let o = run_with(
        &bin,
        &[
            "deploy",
            dest,
            "--engine",
            "podman",
            "--host-addr",
            "127.0.0.1",
            "--registry",
            &registry,
            "--port-web",
            &pw_s,
            "--port-cache",
            &pc_s,
            "--tftp-port",
            &pt_s,
            "-y",
            "--password-stdin",
        ],
        Some("chosen at deploy\n"),
    );
    eprintln!("{}", stderr(&o));
    ok(&o);
    assert_eq!(crate::util::printed_password(&stderr(&o)), None);
    for (port, path) in [(pw, "/api/machines"), (pc, "/blobs")] {
        assert_eq!(
            get(port, path, Some(("bty-lab", "chosen at deploy"))),
            200,
            "{path}"
        );
    }
    assert!(
        images_line(&o).starts_with("images: built locally from"),
        "{}",
        stderr(&o)
    );
    let manifest = std::fs::read_to_string(dest_p.join(".bty-lab.toml")).unwrap();
    assert!(
        manifest.contains("[engine]\nkind = \"podman\"\naddr = \"/run/podman/podman.sock\""),
        "{manifest}"
    );
    let docker_never_saw_it = |when: &str| {
        let d = containers_of("docker", dest);
        assert!(
            d.is_empty(),
            "Docker has containers of {dest} {when}: {d:?}"
        );
    };
    docker_never_saw_it("after deploy");

    // status, no --engine: the Podman stack, healthy.
    let o = lab(&bin, &["status", dest, "--json"]);
    ok(&o);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["engine"], "podman", "{st:#}");
    assert_eq!(st["engine_addr"], "/run/podman/podman.sock", "{st:#}");
    assert_all_healthy(&st, VERSION);

    // passwd, no --engine: the Podman container is recreated with the new
    // password.
    let web = "lab-mem-bty-web".to_string();
    let id_of = |name: &str| -> String {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(docker_api("podman").inspect_container(name, None))
            .map(|c| c.id.unwrap_or_default())
            .unwrap_or_default()
    };
    let before = id_of(&web);
    assert!(!before.is_empty());
    let o = run_with(
        &bin,
        &["passwd", dest, "--service", "bty-web", "--password-stdin"],
        Some("remembered engine pw\n"),
    );
    eprintln!("{}", stderr(&o));
    ok(&o);
    let after = id_of(&web);
    assert!(
        !after.is_empty() && after != before,
        "bty-web not recreated in Podman"
    );
    assert_eq!(
        get(
            pw,
            "/api/machines",
            Some(("bty-lab", "remembered engine pw"))
        ),
        200
    );
    docker_never_saw_it("after passwd");

    // Deploying the same DEST on Docker now is refused, nothing changed.
    let o = lab(&bin, &["deploy", dest, "--engine", "docker", "-y"]);
    fails_with(&o, "runs on podman at /run/podman/podman.sock");
    assert!(stderr(&o).contains("Nothing was changed"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dest_p.join(".bty-lab.toml")).unwrap(),
        manifest
    );
    docker_never_saw_it("after the refused deploy");

    // upgrade, no --engine, no --images: auto again, on Podman.
    let o = lab(&bin, &["upgrade", dest, "--to", "0.99.0"]);
    ok(&o);
    assert!(
        images_line(&o).starts_with("images: built locally from"),
        "{}",
        stderr(&o)
    );
    let o = lab(&bin, &["status", dest, "--json"]);
    ok(&o);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["engine"], "podman");
    assert_all_healthy(&st, "0.99.0");
    docker_never_saw_it("after upgrade");

    // purge, no --engine: gone from Podman.
    ok(&lab(&bin, &["purge", dest, "--images", "--yes"]));
    assert!(
        containers_of("podman", dest).is_empty(),
        "containers left in Podman after purge"
    );
    for r in stack_refs(&registry, "0.99.0") {
        assert!(image_facts("podman", &r).is_none(), "{r} left after purge");
    }
    docker_never_saw_it("after purge");
}

/// `bty-lab ARGS` with extra environment, output echoed.
fn lab_env(bin: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let o = std::process::Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    eprintln!("$ bty-lab {}\n{}{}", args.join(" "), stdout(&o), stderr(&o));
    o
}

/// An environment in which this binary's media cannot be had: no apt-get
/// (nor anything else) on PATH and an empty media cache under `dir`.
fn no_media_env(dir: &Path) -> Vec<(String, String)> {
    let path = dir.join("no-apt-path");
    let cache = dir.join("empty-media-cache");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    vec![
        ("PATH".into(), path.display().to_string()),
        ("BTY_MEDIA_CACHE".into(), cache.display().to_string()),
    ]
}

/// GET bty-web's `/boot/<initrd>` on `port` and say what its info file
/// names as the agent (`media status --initrd`).
fn served_initrd(port: u16, dir: &Path) -> serde_json::Value {
    let (code, body) = get_bytes(port, "/boot/bty-netboot-x86_64.initrd");
    assert_eq!(code, 200, "no initrd served");
    let p = dir.join("served.initrd");
    std::fs::write(&p, body).unwrap();
    crate::media::initrd_info(&p)
}

/// Wait until bty-web on `port` answers /healthz (after a restart: it
/// places its image's media before it listens).
fn wait_web(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && get(port, "/healthz", None) == 200;
        if up {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bty-web on {port} did not come back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Restart `container` in `engine` (as the engine does on a crash or a
/// host reboot) and wait for bty-web on `port`.
fn restart_web(engine: &str, container: &str, port: u16) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(docker_api(engine).restart_container(container, None))
        .unwrap();
    wait_web(port);
}

/// The default path carries the media. `deploy` with no `--images` and no
/// `--netboot` (no registry answers) builds images carrying this binary's
/// media; bty-web places it into its boot dir at start and serves it, and
/// bty-tftp serves the media's iPXE bootfile; a warm re-deploy rebuilds
/// nothing. A second DEST running the same images as a pulled image would
/// (`--images present`, with no apt and an empty media cache: nothing is
/// built on the host) gets the media into its fresh boot dir from the
/// image and says so in its log. `media status DEST` tells which media a
/// deploy serves. `upgrade` replaces an old media; a newer one, and the
/// operator's `--netboot` media, survive container restarts; an
/// operator's media that fell behind is replaced by `upgrade`.
#[test]
fn docker_deploy_carries_the_media_in_its_images() {
    let Some(bin) = static_bin("docker") else {
        return;
    };
    let t = TestDir::new();
    let d1p = t.path().join("lab-media");
    let d2p = t.path().join("lab-media2");
    let (d1, d2) = (d1p.to_str().unwrap(), d2p.to_str().unwrap());
    let _c1 = Cleanup {
        engine: "docker",
        dest: d1.to_string(),
    };
    let _c2 = Cleanup {
        engine: "docker",
        dest: d2.to_string(),
    };
    let registry = unreachable_registry("bty-media");
    let refs = stack_refs(&registry, VERSION);
    let _images = ImageCleanup {
        engine: "docker",
        refs: refs.clone(),
    };
    let (pw, pc, pt) = (free_port(), free_port(), free_port());
    let (pw_s, pc_s, pt_s) = (pw.to_string(), pc.to_string(), pt.to_string());
    let o = lab(
        &bin,
        &[
            "deploy",
            d1,
            "--engine",
            "docker",
            "--host-addr",
            "127.0.0.1",
            "--registry",
            &registry,
            "--port-web",
            &pw_s,
            "--port-cache",
            &pc_s,
            "--tftp-port",
            &pt_s,
            "-y",
        ],
    );
    ok(&o);
    assert!(
        images_line(&o).starts_with("images: built locally"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("serves media ") && stderr(&o).contains("matches this binary"),
        "{}",
        stderr(&o)
    );
    let sha = sha256_hex(&bin);
    // bty-web serves the initrd whose agent is this binary, and the kernel
    // and iPXE bootfiles it placed next to it.
    let boot1 = d1p.join("data/bty/boot");
    let info = served_initrd(pw, t.path());
    assert_eq!(info["agent_sha256"], sha, "{info}");
    for f in [
        "bty-netboot-x86_64.vmlinuz",
        "undionly.kpxe",
        "ipxe.efi",
        "snponly.efi",
    ] {
        let (code, body) = get_bytes(pw, &format!("/boot/{f}"));
        assert_eq!(code, 200, "{f}");
        assert!(body == std::fs::read(boot1.join(f)).unwrap(), "{f}");
    }
    assert!(!boot1.join(".operator-media.json").exists());
    // bty-tftp's image carries the same iPXE bootfile.
    if have_tool("atftp", crate::util::on_path("atftp")) {
        assert!(
            atftp_get(pt, "undionly.kpxe", t.path())
                == std::fs::read(boot1.join("undionly.kpxe")).unwrap(),
            "bty-tftp serves another undionly.kpxe"
        );
    }
    let ids: Vec<String> = refs
        .iter()
        .map(|r| {
            let (id, labels) = image_facts("docker", r).expect(r);
            assert_eq!(labels.get("dev.bty.binary"), Some(&sha), "{r}");
            id
        })
        .collect();

    // Warm: the media is a cache hit and the images are reused.
    let o = lab(&bin, &["deploy", d1, "-y"]);
    ok(&o);
    assert!(
        images_line(&o).starts_with("images: reused the ones in docker (built from this binary"),
        "{}",
        stderr(&o)
    );
    let again: Vec<String> = refs
        .iter()
        .map(|r| image_facts("docker", r).unwrap().0)
        .collect();
    assert_eq!(again, ids, "a warm re-deploy rebuilt images");

    // media status DEST: the media the deploy serves is this binary's.
    let o = lab(&bin, &["media", "status", d1, "--json"]);
    ok(&o);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["deploy"]["matches"], true, "{st:#}");
    assert_eq!(
        st["deploy"]["path"],
        boot1
            .join("bty-netboot-x86_64.initrd")
            .display()
            .to_string()
    );

    // The same images under another DEST, as pulled images: nothing is
    // built on the host, bty-web seeds its empty boot dir from its image.
    let (pw2, pc2) = (free_port(), free_port());
    let o = lab_env(
        &bin,
        &[
            "deploy",
            d2,
            "--engine",
            "docker",
            "--images",
            "present",
            "--host-addr",
            "127.0.0.1",
            "--registry",
            &registry,
            "--port-web",
            &pw2.to_string(),
            "--port-cache",
            &pc2.to_string(),
            "--no-tftp",
            "-y",
        ],
        &no_media_env(t.path()),
    );
    ok(&o);
    let boot2 = d2p.join("data/bty/boot");
    assert_eq!(served_initrd(pw2, t.path())["agent_sha256"], sha);
    assert_eq!(
        crate::media::sha256(&boot2.join("bty-netboot-x86_64.initrd")),
        crate::media::sha256(&boot1.join("bty-netboot-x86_64.initrd"))
    );
    let o = lab(&bin, &["logs", d2, "bty-web"]);
    ok(&o);
    let log = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        log.contains(&format!("media: placed media {VERSION}-k"))
            && log.contains(&boot_in_container()),
        "{log}"
    );

    // An old media in the boot dir (agent behind): `upgrade`, same
    // version, recreates the stack and the boot dir gets this binary's.
    let initrd1 = boot1.join("bty-netboot-x86_64.initrd");
    crate::media::fake_initrd(&initrd1, "0.0.1");
    let o = lab(&bin, &["upgrade", d1]);
    ok(&o);
    assert!(
        stderr(&o).contains("(agent 0.0.1), older than this bty-lab"),
        "{}",
        stderr(&o)
    );
    assert_eq!(served_initrd(pw, t.path())["agent_sha256"], sha);
    // Nothing behind any more: nothing to do.
    let o = lab(&bin, &["upgrade", d1]);
    ok(&o);
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));

    // A newer media stays, over an upgrade and a container restart.
    crate::media::fake_initrd(&initrd1, "9.9.9");
    let o = lab(&bin, &["upgrade", d1]);
    ok(&o);
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    restart_web("docker", "lab-media-bty-web", pw);
    assert_eq!(served_initrd(pw, t.path())["agent_version"], "9.9.9");

    // The operator's media of this very version (another kernel, an
    // initrd that is not this binary's) survives a restart...
    let op = t.path().join("operator-media");
    std::fs::create_dir_all(&op).unwrap();
    std::fs::write(
        op.join("bty-netboot-x86_64.vmlinuz"),
        b"the operator's kernel",
    )
    .unwrap();
    crate::media::fake_initrd(&op.join("bty-netboot-x86_64.initrd"), VERSION);
    let o = lab(
        &bin,
        &["deploy", d1, "--netboot", op.to_str().unwrap(), "-y"],
    );
    ok(&o);
    assert!(
        stderr(&o).contains("the operator's, from --netboot"),
        "{}",
        stderr(&o)
    );
    restart_web("docker", "lab-media-bty-web", pw);
    let (_, kernel) = get_bytes(pw, "/boot/bty-netboot-x86_64.vmlinuz");
    assert!(
        kernel == b"the operator's kernel",
        "a restart clobbered the operator's kernel"
    );
    let o = lab(&bin, &["logs", d1, "bty-web", "--tail", "20"]);
    let log = format!("{}{}", stdout(&o), stderr(&o));
    assert!(log.contains("keeps the operator's"), "{log}");
    // ... and once it is older than this binary (as after moving to a
    // newer bty-lab; here its initrd is swapped for an older one),
    // `upgrade` replaces it with the image's media.
    crate::media::fake_initrd(&initrd1, "0.0.2");
    assert_eq!(served_initrd(pw, t.path())["agent_version"], "0.0.2");
    let o = lab(&bin, &["upgrade", d1]);
    ok(&o);
    assert!(
        stderr(&o).contains("(agent 0.0.2), older"),
        "{}",
        stderr(&o)
    );
    assert_eq!(served_initrd(pw, t.path())["agent_sha256"], sha);
    let (_, kernel) = get_bytes(pw, "/boot/bty-netboot-x86_64.vmlinuz");
    assert!(kernel == std::fs::read(boot2.join("bty-netboot-x86_64.vmlinuz")).unwrap());
    assert!(!boot1.join(".operator-media.json").exists());

    ok(&lab(&bin, &["purge", d2, "--yes"]));
    ok(&lab(&bin, &["purge", d1, "--images", "--yes"]));
}

/// bty-web's boot dir as its container sees it.
fn boot_in_container() -> String {
    "/var/lib/bty/boot".to_string()
}

/// A deploy whose images must be built here, on a host where this
/// binary's media cannot be had (no apt, an empty cache, no `--from`):
/// `--images local` fails before it writes anything, `auto` once its pull
/// has failed; both before any container, naming the ways out.
#[test]
fn docker_deploy_without_a_way_to_get_media_fails_before_starting() {
    let Some(bin) = static_bin("docker") else {
        return;
    };
    let t = TestDir::new();
    let dest_p = t.path().join("lab-nomedia");
    let dest = dest_p.to_str().unwrap();
    let _cleanup = Cleanup {
        engine: "docker",
        dest: dest.to_string(),
    };
    let registry = unreachable_registry("bty-nomedia");
    let refs = stack_refs(&registry, VERSION);
    let _images = ImageCleanup {
        engine: "docker",
        refs: refs.clone(),
    };
    let (pw, pc) = (free_port().to_string(), free_port().to_string());
    let env = no_media_env(t.path());
    let args = |images: Option<&'static str>| {
        let mut v = vec![
            "deploy".to_string(),
            dest.to_string(),
            "--engine".into(),
            "docker".into(),
            "--host-addr".into(),
            "127.0.0.1".into(),
            "--registry".into(),
            registry.clone(),
            "--port-web".into(),
            pw.clone(),
            "--port-cache".into(),
            pc.clone(),
            "--no-tftp".into(),
            "-y".into(),
        ];
        if let Some(i) = images {
            v.extend(["--images".to_string(), i.to_string()]);
        }
        v
    };
    let a = args(Some("local"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = lab_env(&bin, &a, &env);
    for needle in [
        "the netboot media the images carry cannot be had",
        "no apt-get",
        "pass --from DIR",
        "--images pull",
    ] {
        fails_with(&o, needle);
    }
    assert!(
        !dest_p.join(".bty-lab.toml").exists(),
        "deploy wrote files before failing"
    );
    assert!(containers_of("docker", dest).is_empty());

    let a = args(None);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = lab_env(&bin, &a, &env);
    for needle in [
        &format!("pull of {registry}/withcache:{VERSION} failed"),
        "the images cannot be built here instead",
        "no apt-get",
        "pass --from DIR",
        "--images pull",
    ] {
        fails_with(&o, needle);
    }
    assert!(
        containers_of("docker", dest).is_empty(),
        "containers started"
    );
    for r in &refs {
        assert!(
            image_facts("docker", r).is_none(),
            "{r} built without media"
        );
    }
}
