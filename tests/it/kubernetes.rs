//! `bty-lab init --kubernetes`: the Helm chart (deploy/helm/bty) rendered
//! as plain manifests. Every document is checked against the Kubernetes API
//! schemas offline by `kubernetes-validate` (PyPI; scripts/setup.sh installs
//! it), the objects the issue names are asserted field by field, and (with
//! BTY_ENGINE_TESTS naming podman) the manifests run under
//! `podman kube play` until bty-web and withcache answer /healthz.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::{exits_with, fails_with, have_tool, ok, on_path, run, stderr, TestDir};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The documents of a multi-document YAML file, as JSON values.
fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `init --kubernetes DEST ARGS...`, its output and documents.
fn render(dest: &Path, args: &[&str]) -> (Output, Vec<Value>) {
    let mut all = vec!["init", "--kubernetes", dest.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = run(&all);
    ok(&o);
    let file = dest.join("bty.yaml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "bty.yaml holds the secrets");
    let text = std::fs::read_to_string(&file).unwrap();
    (o, docs(&text))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// The first container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// `(NAME, secret, key)`: an env var taken from a Secret.
type SecretRef = (String, String, String);

/// `(NAME, secret, key)` for every env var a container takes from a
/// Secret, and `(NAME, value)` for the plain ones.
fn env_of(c: &Value) -> (Vec<SecretRef>, Vec<(String, String)>) {
    let (mut refs, mut plain) = (Vec::new(), Vec::new());
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            refs.push((
                name,
                r["name"].as_str().unwrap().into(),
                r["key"].as_str().unwrap().into(),
            ));
        } else {
            plain.push((name, e["value"].as_str().unwrap().to_string()));
        }
    }
    (refs, plain)
}

fn assert_probes_on_healthz(c: &Value) {
    for p in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[p]["httpGet"]["path"], "/healthz", "{p}: {c:#}");
        assert_eq!(c[p]["httpGet"]["port"], "http", "{p}: {c:#}");
    }
}

/// `kubernetes-validate --strict` on `file`: every document against the
/// API schemas it ships (no cluster, no network). None: not installed.
fn validate(file: &Path) -> Option<()> {
    if !have_tool(
        "kubernetes-validate (scripts/setup.sh)",
        on_path("kubernetes-validate"),
    ) {
        return None;
    }
    let o = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .arg(file)
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        o.status.success(),
        "kubernetes-validate {}:\n{out}",
        file.display()
    );
    Some(())
}

/// Defaults, then three replicas on PostgreSQL: both validate, and carry
/// the objects and fields the issue names.
#[test]
fn init_kubernetes_renders_valid_manifests_for_one_replica_and_for_three() {
    let t = TestDir::new();

    // Defaults: one bty-web on SQLite, its state on a PVC.
    let dest = t.path().join("k1");
    let (o, d) = render(&dest, &[]);
    let password = crate::util::printed_password(&stderr(&o)).expect("the password is shown");
    assert!(password.len() >= 20, "{password}");
    assert!(stderr(&o).contains("kubectl apply -f"), "{}", stderr(&o));
    assert_eq!(
        kinds(&d),
        BTreeSet::from(
            [
                "Secret/bty-secrets",
                "ConfigMap/bty-config",
                "PersistentVolumeClaim/bty-web-state",
                "Service/bty-web",
                "Service/bty-withcache",
                "Deployment/bty-web",
                "PodDisruptionBudget/bty-web",
                "StatefulSet/bty-withcache",
                "DaemonSet/bty-tftp",
            ]
            .map(String::from)
        )
    );
    let text = std::fs::read_to_string(dest.join("bty.yaml")).unwrap();
    assert!(
        !text.contains(&password),
        "bty.yaml holds the password itself"
    );
    validate(&dest.join("bty.yaml"));

    let secret = find(&d, "Secret", "bty-secrets");
    let data = secret["stringData"].as_object().unwrap();
    for k in ["BTY_ADMIN_PASSWORD_HASH", "WITHCACHE_ADMIN_PASSWORD_HASH"] {
        assert!(data[k].as_str().unwrap().starts_with("$argon2id$"), "{k}");
    }
    assert_eq!(data["BTY_WITHCACHE_TOKEN"], data["WITHCACHE_API_TOKEN"]);
    assert_eq!(data["BTY_PXE_RELAY_KEY"], data["BTY_TFTP_RELAY_KEY"]);
    assert!(!data.contains_key("BTY_SERVER_DATABASE"));

    let web = find(&d, "Deployment", "bty-web");
    assert_eq!(web["spec"]["replicas"], 1);
    assert_eq!(
        web["spec"]["strategy"]["type"], "Recreate",
        "one SQLite writer at a time"
    );
    let wc = container(web);
    assert_eq!(wc["image"], format!("ghcr.io/bty-rs/bty-web:{VERSION}"));
    assert_probes_on_healthz(wc);
    let vols = &web["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        vols[1]["persistentVolumeClaim"]["claimName"],
        "bty-web-state"
    );
    assert_eq!(
        web["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        65532
    );

    // Each container takes only its own keys, each from the chart's Secret
    // under the env name itself (as envvars routes them on a host).
    let sts = find(&d, "StatefulSet", "bty-withcache");
    let ds = find(&d, "DaemonSet", "bty-tftp");
    for (w, prefix, not) in [
        (web, "BTY_", Some("BTY_TFTP_")),
        (sts, "WITHCACHE_", None),
        (ds, "BTY_TFTP_", None),
    ] {
        let (refs, _) = env_of(container(w));
        assert!(!refs.is_empty());
        for (name, secret, key) in refs {
            assert_eq!(
                (secret.as_str(), key.as_str()),
                ("bty-secrets", name.as_str())
            );
            assert!(data.contains_key(&key), "{key} is not in the Secret");
            assert!(
                name.starts_with(prefix) && not.is_none_or(|n| !name.starts_with(n)),
                "{name}"
            );
        }
    }

    let pdb = find(&d, "PodDisruptionBudget", "bty-web");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "one replica: a drain may take it"
    );
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        web["spec"]["selector"]["matchLabels"]
    );

    let svc = find(&d, "Service", "bty-web");
    assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(
        svc["spec"]["ports"][0]["nodePort"],
        svc["spec"]["ports"][0]["port"]
    );

    let vct = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(vct["metadata"]["name"], "data");
    assert_eq!(vct["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert_eq!(container(sts)["volumeMounts"][0]["mountPath"], "/data");
    assert_probes_on_healthz(container(sts));
    assert_eq!(sts["spec"]["serviceName"], "bty-withcache");

    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let (_, plain) = env_of(container(ds));
    let get = |k: &str| plain.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("BTY_TFTP_RELAY"),
        Some("http://bty-web.default.svc.cluster.local:30080")
    );
    assert_eq!(get("BTY_TFTP_LISTEN"), Some("0.0.0.0:69"));
    assert!(
        get("BTY_TFTP_SECOND_STAGE")
            .unwrap()
            .contains("undionly.kpxe=http://${next-server}:30080/pxe-bootstrap.ipxe"),
        "{plain:?}"
    );

    // bty.toml in the ConfigMap is what bty-web parses.
    let toml_text = find(&d, "ConfigMap", "bty-config")["data"]["bty.toml"]
        .as_str()
        .unwrap();
    let toml: toml::Table = toml_text.parse().expect("bty.toml parses");
    assert_eq!(toml["server"]["state_dir"].as_str(), Some("/var/lib/bty"));

    // Three replicas on PostgreSQL, in a namespace, from another registry.
    let dest = t.path().join("k3");
    let url = "postgres://bty:s3cret@db.lab:5432/bty";
    let (_, d) = render(
        &dest,
        &[
            "--replicas",
            "3",
            "--database-url",
            url,
            "--namespace",
            "lab",
            "--registry",
            "reg.example/bty",
            "--tag",
            "9.9.9",
            "--withcache-url",
            "http://10.0.0.5:30300",
            "--no-tftp",
        ],
    );
    validate(&dest.join("bty.yaml"));
    assert!(kinds(&d).contains("Namespace/lab"));
    assert!(
        !kinds(&d).contains("PersistentVolumeClaim/bty-web-state"),
        "no SQLite volume"
    );
    assert!(!kinds(&d).contains("DaemonSet/bty-tftp"), "--no-tftp");
    assert!(d
        .iter()
        .filter(|x| x["kind"] != "Namespace")
        .all(|x| x["metadata"]["namespace"] == "lab"));
    let web = find(&d, "Deployment", "bty-web");
    assert_eq!(web["spec"]["replicas"], 3);
    assert!(
        web["spec"]["strategy"].is_null(),
        "rolling updates with a shared store"
    );
    assert_eq!(container(web)["image"], "reg.example/bty/bty-web:9.9.9");
    assert_eq!(
        container(find(&d, "StatefulSet", "bty-withcache"))["image"],
        "reg.example/bty/withcache:9.9.9"
    );
    assert_eq!(
        web["spec"]["template"]["spec"]["volumes"][1]["emptyDir"],
        json!({})
    );
    let (refs, _) = env_of(container(web));
    assert!(refs.contains(&(
        "BTY_SERVER_DATABASE".into(),
        "bty-secrets".into(),
        "BTY_SERVER_DATABASE".into()
    )));
    assert_eq!(
        find(&d, "Secret", "bty-secrets")["stringData"]["BTY_SERVER_DATABASE"],
        url
    );
    assert_eq!(
        find(&d, "PodDisruptionBudget", "bty-web")["spec"]["minAvailable"],
        1
    );
    let toml_text = find(&d, "ConfigMap", "bty-config")["data"]["bty.toml"]
        .as_str()
        .unwrap();
    let toml: toml::Table = toml_text.parse().unwrap();
    assert_eq!(
        toml["withcache"]["url"].as_str(),
        Some("http://10.0.0.5:30300")
    );
}

/// Settings that cannot work are refused before anything is written, and
/// a DEST's manifests (its secrets) are not replaced without --force.
#[test]
fn init_kubernetes_refuses_bad_settings_with_what_to_do() {
    let t = TestDir::new();
    let dest = t.path().join("k");
    let d = dest.to_str().unwrap();
    let o = run(&["init", "--kubernetes", d, "--replicas", "3"]);
    fails_with(&o, "--replicas 3 needs --database-url postgres://");
    assert!(!dest.join("bty.yaml").exists());
    for (bad, says) in [
        ("mysql://u:hunter22@h/db", "has the scheme \"mysql\""),
        (
            "hunter22 at db.lab",
            "--database-url is not a PostgreSQL URL",
        ),
        ("postgres:///bty?password=hunter22", "names no host"),
    ] {
        let o = run(&[
            "init",
            "--kubernetes",
            d,
            "--replicas",
            "2",
            "--database-url",
            bad,
        ]);
        fails_with(&o, says);
        assert!(
            !stderr(&o).contains("hunter22"),
            "the URL's password is echoed: {}",
            stderr(&o)
        );
    }
    let o = run(&["init", "--kubernetes", d, "--replicas", "0"]);
    fails_with(&o, "--replicas 0 runs no bty-web");
    let o = run(&["init", "--kubernetes", d, "--namespace", "Lab"]);
    fails_with(&o, "is not a Kubernetes namespace name");
    let o = run(&["init", "--kubernetes", d, "--systemd"]);
    fails_with(&o, "--systemd is for a container host, not --kubernetes");
    let o = run(&["init", d, "--replicas", "2"]);
    fails_with(&o, "--kubernetes");
    assert!(!dest.join("bty.yaml").exists());

    let (_, first) = render(&dest, &[]);
    let o = run(&["init", "--kubernetes", d]);
    exits_with(&o, 3);
    fails_with(&o, "replace it and its secrets with --force");
    let (_, again) = render(&dest, &["--force"]);
    let secret = |d: &[Value]| {
        find(d, "Secret", "bty-secrets")["stringData"]["BTY_SERVER_SESSION_SECRET"].clone()
    };
    assert_ne!(
        secret(&first),
        secret(&again),
        "--force renders fresh secrets"
    );
}

/// What `podman kube play` (4.3) cannot take, turned into what it can,
/// only for this test: a limit of the tool, not of the manifests (which
/// `kubernetes-validate` checked as they are).
/// - StatefulSet and DaemonSet: played as Deployments of one replica; the
///   StatefulSet's volumeClaimTemplates become PVCs named as Kubernetes
///   names them (`data-bty-withcache-0`); the DaemonSet's declared port is
///   dropped (podman refuses port mappings on the host network).
/// - Secret: `kube play` stores a Secret document as YAML but reads
///   `secretKeyRef`s as a JSON map of base64 values, so the test creates
///   that podman secret itself and leaves the document out.
fn for_podman(docs: &[Value]) -> (Vec<Value>, Vec<(String, Value)>) {
    let (mut play, mut secrets) = (Vec::new(), Vec::new());
    for d in docs {
        let mut d = d.clone();
        match d["kind"].as_str().unwrap() {
            "Secret" => {
                let map: serde_json::Map<String, Value> = d["stringData"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let b =
                            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap());
                        (k.clone(), Value::String(b))
                    })
                    .collect();
                secrets.push((
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                    Value::Object(map),
                ));
                continue;
            }
            "StatefulSet" => {
                let name = d["metadata"]["name"].as_str().unwrap().to_string();
                let vcts = d["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .unwrap()
                    .clone();
                let spec = d["spec"].as_object_mut().unwrap();
                spec.remove("volumeClaimTemplates");
                spec.remove("serviceName");
                for v in vcts {
                    let claim = format!("{}-{name}-0", v["metadata"]["name"].as_str().unwrap());
                    play.push(json!({
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": { "name": claim },
                        "spec": v["spec"],
                    }));
                    let vols = d["spec"]["template"]["spec"]
                        .as_object_mut()
                        .unwrap()
                        .entry("volumes")
                        .or_insert(json!([]));
                    vols.as_array_mut().unwrap().push(json!({
                        "name": v["metadata"]["name"],
                        "persistentVolumeClaim": { "claimName": claim },
                    }));
                }
                d["kind"] = json!("Deployment");
            }
            "DaemonSet" => {
                d["kind"] = json!("Deployment");
                d["spec"]["replicas"] = json!(1);
                // Podman maps a declared port even on the host network,
                // which it then refuses; the port is the host's anyway.
                for c in d["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                {
                    c.as_object_mut().unwrap().remove("ports");
                }
            }
            _ => {}
        }
        play.push(d);
    }
    (play, secrets)
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("running podman")
}

/// Takes the played objects down whatever happens to the test.
struct Played {
    file: std::path::PathBuf,
    /// Pods `kube play` names `<Deployment>-pod-0`.
    pods: Vec<String>,
    /// PVCs and ConfigMaps (played as named volumes).
    volumes: Vec<String>,
    secrets: Vec<String>,
    /// The images the test built, removed at the end only.
    images: Vec<String>,
}

impl Played {
    fn down(&self) {
        let _ = podman(&["kube", "down", self.file.to_str().unwrap()]);
        // `kube down` leaves the pods of a play that failed half-way.
        for p in &self.pods {
            let _ = podman(&["pod", "rm", "-f", p]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        for s in &self.secrets {
            let _ = podman(&["secret", "rm", s]);
        }
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        self.down();
        for i in &self.images {
            let _ = podman(&["rmi", "-f", i]);
        }
    }
}

/// The pod's address on podman's bridge network.
fn pod_ip(pod: &str) -> Option<String> {
    let o = podman(&["pod", "inspect", pod, "--format", "{{.InfraContainerID}}"]);
    let infra = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if infra.is_empty() {
        return None;
    }
    let o = podman(&[
        "inspect",
        &infra,
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    ]);
    let ip = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (!ip.is_empty()).then_some(ip)
}

/// GET http://ip:port/healthz; the status (0: no answer).
fn healthz(ip: &str, port: u16) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET /healthz HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The rendered manifests run: `podman kube play` starts bty-web (SQLite
/// on its PVC), withcache (its PVC) and bty-tftp (host network), bty-web
/// and withcache answer /healthz with 200 on their pods' addresses, and
/// bty-tftp serves a bootfile on the host's port. Images are built FROM
/// scratch from the static binary, as the engine tests build them.
#[test]
fn init_kubernetes_manifests_play_under_podman() {
    let Some(bin) = crate::engines::static_bin("podman") else {
        return;
    };
    if !have_tool("podman CLI", on_path("podman")) {
        return;
    }
    let _turn = crate::engines::podman_turn();
    let t = TestDir::new();
    let registry = "bty.test/kube";

    // The three images, built locally by a deploy, which is then purged
    // (the images stay).
    let media = t.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(
        media.join("bty-netboot-x86_64.vmlinuz"),
        vec![0x80u8; 60_000],
    )
    .unwrap();
    std::fs::write(media.join("bty-netboot-x86_64.initrd"), vec![7u8; 80_001]).unwrap();
    let host = t.path().join("host");
    let hs = host.to_str().unwrap();
    let (pw, pc, pt) = (
        crate::engines::free_port().to_string(),
        crate::engines::free_port().to_string(),
        crate::engines::free_port().to_string(),
    );
    let lab = |args: &[&str]| {
        let o = crate::util::run_with(&bin, args, None);
        eprintln!("$ bty-lab {}\n{}", args.join(" "), stderr(&o));
        o
    };
    ok(&lab(&[
        "deploy",
        hs,
        "--engine",
        "podman",
        "--images",
        "local",
        "-y",
        "--netboot",
        media.to_str().unwrap(),
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
    ]));
    ok(&lab(&["purge", hs, "--engine", "podman", "--yes"]));

    let tftp_port = crate::engines::free_port();
    let dest = t.path().join("kube");
    let o = lab(&[
        "init",
        "--kubernetes",
        dest.to_str().unwrap(),
        "--registry",
        registry,
        "--tftp-port",
        &tftp_port.to_string(),
    ]);
    ok(&o);
    let rendered = docs(&std::fs::read_to_string(dest.join("bty.yaml")).unwrap());
    let (play, secrets) = for_podman(&rendered);
    let file = dest.join("play.yaml");
    let text: String = play
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    std::fs::write(&file, text).unwrap();
    let names = |kinds: &[&str], suffix: &str| -> Vec<String> {
        play.iter()
            .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
            .map(|d| format!("{}{suffix}", d["metadata"]["name"].as_str().unwrap()))
            .collect()
    };
    let played = Played {
        file: file.clone(),
        pods: names(&["Deployment"], "-pod-0"),
        volumes: names(&["PersistentVolumeClaim", "ConfigMap"], ""),
        secrets: secrets.iter().map(|(n, _)| n.clone()).collect(),
        images: ["bty-web", "withcache", "bty-tftp"]
            .map(|s| format!("{registry}/{s}:{VERSION}"))
            .to_vec(),
    };
    played.down(); // what an earlier, killed run may have left
    for (name, map) in &secrets {
        let f = dest.join(format!("{name}.json"));
        std::fs::write(&f, map.to_string()).unwrap();
        let o = podman(&["secret", "create", name, f.to_str().unwrap()]);
        assert!(o.status.success(), "podman secret create: {}", stderr(&o));
        std::fs::remove_file(&f).unwrap();
    }
    let o = podman(&["kube", "play", file.to_str().unwrap()]);
    assert!(o.status.success(), "podman kube play:\n{}", stderr(&o));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut healthy = BTreeSet::new();
    while healthy.len() < 2 {
        for (pod, port) in [("bty-web-pod-0", 8080), ("bty-withcache-pod-0", 3000)] {
            if let Some(ip) = pod_ip(pod) {
                if healthz(&ip, port) == 200 {
                    healthy.insert(pod);
                }
            }
        }
        if Instant::now() > deadline {
            let logs = podman(&["pod", "logs", "bty-web-pod-0"]);
            let ps = podman(&["ps", "-a"]);
            panic!(
                "healthy after 120 s: {healthy:?}\n{}\n{}{}",
                String::from_utf8_lossy(&ps.stdout),
                String::from_utf8_lossy(&logs.stdout),
                stderr(&logs)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // bty-web keeps SQLite on its claim, as the uid the chart runs it as.
    let o = podman(&[
        "volume",
        "inspect",
        "bty-web-state",
        "--format",
        "{{.Mountpoint}}",
    ]);
    let mount = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let db = Path::new(&mount).join("state.db");
    assert!(db.is_file(), "no {}", db.display());
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 65532);
    // bty-tftp on the host network serves the bootfile its image carries.
    let got = crate::util::atftp_get(tftp_port, "undionly.kpxe", t.path());
    assert!(got.len() > 1000, "undionly.kpxe is {} bytes", got.len());
    drop(played);
    let o = podman(&["pod", "exists", "bty-web-pod-0"]);
    assert!(!o.status.success(), "kube down left the pod");
}

/// `over` laid onto `base` key by key (as Helm merges values).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The chart's templates in `init --kubernetes`'s order (`kube::TEMPLATES`).
const CHART_TEMPLATES: &[&str] = &[
    "validate.yaml",
    "secret.yaml",
    "configmap.yaml",
    "web-pvc.yaml",
    "web-service.yaml",
    "withcache-service.yaml",
    "web-deployment.yaml",
    "web-pdb.yaml",
    "withcache-statefulset.yaml",
    "tftp-daemonset.yaml",
];

/// Run tests/it/gotemplate (Go's text/template) on the chart with `values`.
fn go_render(exe: &Path, dir: &Path, values: &Value, namespace: &str) -> Output {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/bty");
    let file = dir.join("values.json");
    std::fs::write(&file, values.to_string()).unwrap();
    Command::new(exe)
        .arg(&chart)
        .arg(&file)
        .args([namespace, VERSION])
        .args(CHART_TEMPLATES)
        .output()
        .unwrap()
}

/// Helm is not installable here, so the chart is also executed by Go's own
/// text/template (the engine Helm runs; values as Helm holds them, numbers
/// as float64) with the six sprig functions the chart may use: for the
/// defaults and for three replicas on PostgreSQL it must print, byte for
/// byte, what `init --kubernetes` wrote with gtmpl, and the chart's own
/// refusals must fire there too. A template the two engines read apart
/// fails here.
#[test]
fn chart_renders_the_same_under_go_text_template() {
    if !have_tool("go (golang-go; scripts/setup.sh)", on_path("go")) {
        return;
    }
    let t = TestDir::new();
    let exe = t.path().join("gotemplate");
    let o = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(".")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/gotemplate"))
        // Standard library only: nothing to fetch.
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap();
    assert!(o.status.success(), "go build: {}", stderr(&o));
    let defaults: Value =
        serde_yaml::from_str(include_str!("../../deploy/helm/bty/values.yaml")).unwrap();

    let url = "postgres://bty:pw@db.lab:5432/bty";
    let cases: [(&str, &[&str], Value); 2] = [
        ("default", &[], json!({})),
        (
            "lab",
            &[
                "--replicas",
                "3",
                "--database-url",
                url,
                "--withcache-url",
                "http://10.0.0.5:30300",
                "--registry",
                "reg.example/x",
                "--tag",
                "9.9.9",
                "--tftp-port",
                "1069",
                "--no-second-stage",
            ],
            json!({
                "web": { "replicas": 3 },
                "database": { "url": url },
                "withcache": { "url": "http://10.0.0.5:30300" },
                "image": { "registry": "reg.example/x", "tag": "9.9.9" },
                "tftp": { "port": 1069, "secondStage": "off" },
            }),
        ),
    ];
    for (i, (ns, flags, over)) in cases.iter().enumerate() {
        let dest = t.path().join(format!("k{i}"));
        let mut args = vec!["--namespace", ns];
        args.extend_from_slice(flags);
        let (_, d) = render(&dest, &args);
        let sec = &find(&d, "Secret", "bty-secrets")["stringData"];
        let mut values = defaults.clone();
        merge(
            &mut values,
            &json!({
                "image": { "tag": VERSION },
                "secrets": {
                    "webPasswordHash": sec["BTY_ADMIN_PASSWORD_HASH"],
                    "webSessionSecret": sec["BTY_SERVER_SESSION_SECRET"],
                    "cachePasswordHash": sec["WITHCACHE_ADMIN_PASSWORD_HASH"],
                    "cacheSessionSecret": sec["WITHCACHE_SESSION_SECRET"],
                    "serviceToken": sec["BTY_WITHCACHE_TOKEN"],
                    "relayKey": sec["BTY_PXE_RELAY_KEY"],
                },
            }),
        );
        merge(&mut values, over);
        let o = go_render(&exe, &dest, &values, ns);
        assert!(o.status.success(), "Go's text/template: {}", stderr(&o));
        let ours = std::fs::read_to_string(dest.join("bty.yaml")).unwrap();
        let ours = &ours[ours.find("---\n# Source: bty/templates/").unwrap()..];
        assert_eq!(ours, String::from_utf8_lossy(&o.stdout), "case {ns}");

        // The chart's refusal, in Go's words.
        merge(
            &mut values,
            &json!({ "web": { "replicas": 2 }, "database": { "url": "" } }),
        );
        let o = go_render(&exe, &dest, &values, ns);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("web.replicas is 2 but no database is given"),
            "{}",
            stderr(&o)
        );
    }
}
