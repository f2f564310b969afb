//! The Helm chart under `deploy/helm/bty`, rendered without Helm for
//! `bty-lab init --kubernetes`: the chart's own files are compiled in, so
//! the plain manifests and the chart cannot drift apart.
//!
//! The templates are Go text/template, executed by the `gtmpl` crate. Helm
//! adds sprig's functions to Go's; the chart keeps to Go's builtins plus the
//! six defined in [`FUNCS`] (`quote`, `default`, `required`, `fail`, `int`,
//! `hasPrefix`), written here with Helm's meaning, and to no `include`,
//! `toYaml` or `tpl` (the chart's README lists the subset). Writing six small
//! functions beats embedding a Go runtime or requiring Helm on the host.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use gtmpl::{Context, Template};
use gtmpl_value::{FuncError, Number, Value};
use serde_json::json;

/// `Chart.yaml`.
pub const CHART_YAML: &str = include_str!("../deploy/helm/bty/Chart.yaml");
/// The chart's default values.
pub const VALUES_YAML: &str = include_str!("../deploy/helm/bty/values.yaml");
/// The chart's `templates/NOTES.txt` (printed, not applied).
pub const NOTES: &str = include_str!("../deploy/helm/bty/templates/NOTES.txt");

/// Every manifest template of the chart, in the order Helm would install
/// their kinds (Secret and ConfigMap before the workloads that use them).
/// A unit test checks this list against the chart directory.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "validate.yaml",
        include_str!("../deploy/helm/bty/templates/validate.yaml"),
    ),
    (
        "secret.yaml",
        include_str!("../deploy/helm/bty/templates/secret.yaml"),
    ),
    (
        "configmap.yaml",
        include_str!("../deploy/helm/bty/templates/configmap.yaml"),
    ),
    (
        "web-pvc.yaml",
        include_str!("../deploy/helm/bty/templates/web-pvc.yaml"),
    ),
    (
        "web-service.yaml",
        include_str!("../deploy/helm/bty/templates/web-service.yaml"),
    ),
    (
        "withcache-service.yaml",
        include_str!("../deploy/helm/bty/templates/withcache-service.yaml"),
    ),
    (
        "web-deployment.yaml",
        include_str!("../deploy/helm/bty/templates/web-deployment.yaml"),
    ),
    (
        "web-pdb.yaml",
        include_str!("../deploy/helm/bty/templates/web-pdb.yaml"),
    ),
    (
        "withcache-statefulset.yaml",
        include_str!("../deploy/helm/bty/templates/withcache-statefulset.yaml"),
    ),
    (
        "tftp-daemonset.yaml",
        include_str!("../deploy/helm/bty/templates/tftp-daemonset.yaml"),
    ),
];

/// The sprig functions the chart uses, with Helm's meaning.
pub const FUNCS: &[(&str, gtmpl_value::Func)] = &[
    ("quote", quote),
    ("default", default),
    ("required", required),
    ("fail", fail),
    ("int", int),
    ("hasPrefix", has_prefix),
];

/// Go's notion of an empty value (what `if`, `default` and `required` test).
fn empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Object(m) | Value::Map(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Function(_) => false,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        v => v.to_string(),
    }
}

/// `quote V`: V as a double-quoted string. A JSON string is also a valid
/// YAML double-quoted scalar and a TOML basic string.
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let s: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(&text(a)).unwrap_or_default())
        .collect();
    Ok(Value::String(s.join(" ")))
}

/// `default D V`: V unless it is empty, else D.
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [d] => Ok(d.clone()),
        [d, v] => Ok(if empty(v) { d.clone() } else { v.clone() }),
        _ => Err(FuncError::ExactlyXArgs("default".into(), 2)),
    }
}

/// `required MSG V`: V, or the error MSG when V is empty.
fn required(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [msg] => Err(FuncError::Generic(text(msg))),
        [msg, v] if empty(v) => Err(FuncError::Generic(text(msg))),
        [_, v] => Ok(v.clone()),
        _ => Err(FuncError::ExactlyXArgs("required".into(), 2)),
    }
}

/// `fail MSG`: stop rendering with MSG.
fn fail(args: &[Value]) -> Result<Value, FuncError> {
    Err(FuncError::Generic(
        args.first().map(text).unwrap_or_default(),
    ))
}

/// `int V`: V as an integer (YAML numbers may be floats in Helm).
fn int(args: &[Value]) -> Result<Value, FuncError> {
    let n = match args.first() {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(Value::Bool(b)) => i64::from(*b),
        _ => 0,
    };
    Ok(Value::Number(Number::from(n)))
}

/// `hasPrefix PREFIX S`.
fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [p, s] => Ok(Value::Bool(text(s).starts_with(&text(p)))),
        _ => Err(FuncError::ExactlyXArgs("hasPrefix".into(), 2)),
    }
}

/// A YAML/JSON value as a template value.
fn to_gtmpl(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Number(if let Some(i) = n.as_i64() {
            Number::from(i)
        } else if let Some(u) = n.as_u64() {
            Number::from(u)
        } else {
            Number::from(n.as_f64().unwrap_or(0.0))
        }),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_gtmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// The chart's default values.
pub fn default_values() -> Result<serde_json::Value> {
    serde_yaml::from_str(VALUES_YAML).context("parsing the chart's values.yaml")
}

/// `over` laid onto `base` key by key, as Helm merges `--values` files.
pub fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
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

/// A Helm release: its name and namespace.
#[derive(Debug, Clone)]
pub struct Release {
    /// Prefix of every object's name.
    pub name: String,
    /// Namespace of every object.
    pub namespace: String,
}

/// The chart rendered: the manifests (one YAML document each) and NOTES.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `(template name, document)`, empty documents left out.
    pub docs: Vec<(String, String)>,
    /// NOTES.txt rendered.
    pub notes: String,
}

impl Rendered {
    /// One multi-document YAML file, each document headed by its template
    /// (as `helm template` writes them).
    pub fn to_multidoc(&self) -> String {
        let mut out = String::new();
        for (name, doc) in &self.docs {
            out.push_str(&format!("---\n# Source: bty/templates/{name}\n"));
            out.push_str(doc.trim_end());
            out.push('\n');
        }
        out
    }
}

fn chart_field(key: &str) -> Option<String> {
    CHART_YAML.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The template data: `.Values`, `.Release` and `.Chart`, as Helm gives it.
fn context(values: &serde_json::Value, release: &Release) -> Context {
    let field = |k: &str| chart_field(k).unwrap_or_default();
    Context::from(to_gtmpl(&json!({
        "Values": values,
        "Release": {
            "Name": release.name,
            "Namespace": release.namespace,
            "Service": "bty-lab",
        },
        "Chart": {
            "Name": field("name"),
            "Version": field("version"),
            "AppVersion": field("appVersion"),
        },
    })))
}

/// One template executed; `fail`/`required` errors carry the chart's text.
fn execute(name: &str, src: &str, ctx: &Context) -> Result<String> {
    let mut t = Template::default();
    t.add_funcs(FUNCS);
    t.parse(src)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("parsing the chart's templates/{name}"))?;
    t.render(ctx)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("rendering the chart's templates/{name}"))
}

/// The documents of one template's output, leaving out empty ones (as
/// Helm does: a template may render nothing).
fn split_docs(out: &str) -> impl Iterator<Item = String> + '_ {
    out.split("\n---\n").filter_map(|doc| {
        let doc = doc.trim_start_matches("---\n");
        let meaningful = doc.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---"
        });
        meaningful.then(|| doc.to_string())
    })
}

/// Render every template with `values` (already merged onto the
/// defaults) for `release`. A `fail`/`required` in the chart is an error
/// carrying the chart's message.
pub fn render(values: &serde_json::Value, release: &Release) -> Result<Rendered> {
    let ctx = context(values, release);
    let mut docs = Vec::new();
    for (name, src) in TEMPLATES {
        let out = execute(name, src, &ctx)?;
        docs.extend(split_docs(&out).map(|d| (name.to_string(), d)));
    }
    let notes = execute("NOTES.txt", NOTES, &ctx)?;
    Ok(Rendered { docs, notes })
}

/// What `init --kubernetes` sets on top of the chart's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// bty-web replicas.
    pub replicas: u32,
    /// PostgreSQL URL of bty-web's store (None: SQLite, one replica).
    pub database_url: Option<String>,
    /// Image registry prefix.
    pub registry: String,
    /// Image tag.
    pub tag: String,
    /// withcache's URL as machines reach it.
    pub withcache_url: Option<String>,
    /// Run bty-tftp.
    pub tftp: bool,
    /// bty-tftp's UDP port.
    pub tftp_port: Option<u16>,
    /// Turn the TFTP loop breaker off.
    pub no_second_stage: bool,
}

/// Refuse settings the chart cannot deploy, with what to do instead. The
/// chart's `validate.yaml` checks the same for Helm users; this says it in
/// the flags' words. The URL itself is never echoed (it holds a password).
pub fn check(s: &Settings) -> Result<()> {
    if s.replicas == 0 {
        bail!("--replicas 0 runs no bty-web; give 1 or more");
    }
    match &s.database_url {
        None if s.replicas > 1 => bail!(
            "--replicas {} needs --database-url postgres://USER:PASSWORD@HOST:PORT/DB: several \
             bty-web replicas share one PostgreSQL store (without it bty-web keeps SQLite on a \
             volume, and only one replica can open it); or use --replicas 1",
            s.replicas
        ),
        None => {}
        Some(u) => check_database_url(u)?,
    }
    if let Some(u) = &s.withcache_url {
        let p = reqwest::Url::parse(u)
            .with_context(|| format!("--withcache-url {u:?} is not a URL (http://HOST:PORT)"))?;
        if !matches!(p.scheme(), "http" | "https") || p.host_str().is_none() {
            bail!("--withcache-url {u:?} must be http(s)://HOST:PORT, an address machines reach");
        }
    }
    Ok(())
}

/// A namespace name Kubernetes accepts (an RFC 1123 label); it is written
/// into every object unquoted, so nothing else may pass.
pub fn check_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !ok {
        bail!(
            "--namespace {ns:?} is not a Kubernetes namespace name: lowercase letters, digits \
             and '-', at most 63, starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// A PostgreSQL URL: `postgres://` or `postgresql://` with a host.
pub fn check_database_url(u: &str) -> Result<()> {
    const WANT: &str = "a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DB";
    let p = reqwest::Url::parse(u)
        .map_err(|e| anyhow::anyhow!("--database-url is not {WANT} ({e})"))?;
    if !matches!(p.scheme(), "postgres" | "postgresql") {
        bail!(
            "--database-url has the scheme {:?}; it must be {WANT}",
            p.scheme()
        );
    }
    if p.host_str().is_none_or(str::is_empty) {
        bail!("--database-url names no host; it must be {WANT}");
    }
    Ok(())
}

/// The values `s` and `secrets` make, merged onto the chart's defaults.
pub fn values(s: &Settings, secrets: &crate::render::Secrets) -> Result<serde_json::Value> {
    let mut v = default_values()?;
    let mut tftp = json!({ "enabled": s.tftp });
    if let Some(p) = s.tftp_port {
        tftp["port"] = json!(p);
    }
    if s.no_second_stage {
        tftp["secondStage"] = json!("off");
    }
    merge(
        &mut v,
        &json!({
            "image": { "registry": s.registry, "tag": s.tag },
            "database": { "url": s.database_url.clone().unwrap_or_default() },
            "web": { "replicas": s.replicas },
            "withcache": { "url": s.withcache_url.clone().unwrap_or_default() },
            "tftp": tftp,
            "secrets": {
                "webPasswordHash": secrets.web_password_hash,
                "webSessionSecret": secrets.web_session_secret,
                "cachePasswordHash": secrets.cache_password_hash,
                "cacheSessionSecret": secrets.cache_session_secret,
                "serviceToken": secrets.service_token,
                "relayKey": secrets.relay_key,
            },
        }),
    );
    Ok(v)
}

/// A Namespace object, for a namespace other than `default` (Helm users
/// have `--create-namespace`; `kubectl apply` needs it first).
pub fn namespace_doc(ns: &str) -> Option<String> {
    (ns != "default").then(|| {
        format!(
            "---\n# Source: bty-lab init --kubernetes\napiVersion: v1\nkind: Namespace\n\
             metadata:\n  name: {ns}\n  labels:\n    app.kubernetes.io/part-of: bty\n"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> crate::render::Secrets {
        crate::render::Secrets {
            web_password_hash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA".into(),
            web_session_secret: "w".repeat(43),
            cache_password_hash: "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA".into(),
            cache_session_secret: "c".repeat(43),
            service_token: "t".repeat(43),
            relay_key: "r".repeat(43),
        }
    }

    fn settings() -> Settings {
        Settings {
            replicas: 1,
            database_url: None,
            registry: "ghcr.io/bty-rs".into(),
            tag: crate::stack::VERSION.into(),
            withcache_url: None,
            tftp: true,
            tftp_port: None,
            no_second_stage: false,
        }
    }

    fn release() -> Release {
        Release {
            name: "bty".into(),
            namespace: "lab".into(),
        }
    }

    #[test]
    fn every_chart_template_is_compiled_in() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/bty/templates");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "NOTES.txt")
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = TEMPLATES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new chart templates to kube::TEMPLATES"
        );
    }

    #[test]
    fn chart_app_version_is_this_cli_version() {
        assert_eq!(
            chart_field("appVersion").as_deref(),
            Some(crate::stack::VERSION)
        );
        assert_eq!(
            chart_field("version").as_deref(),
            Some(crate::stack::VERSION)
        );
    }

    #[test]
    fn defaults_render_one_sqlite_replica_with_its_volume() {
        let v = values(&settings(), &secrets()).unwrap();
        let r = render(&v, &release()).unwrap();
        let all = r.to_multidoc();
        assert!(all.contains("kind: PersistentVolumeClaim"), "{all}");
        assert!(all.contains("claimName: bty-web-state"), "{all}");
        assert!(!all.contains("BTY_SERVER_DATABASE"), "{all}");
        assert!(all.contains("namespace: lab"), "{all}");
        // The argon2 hash's `$` stays literal, quoted.
        assert!(
            all.contains(r#"BTY_ADMIN_PASSWORD_HASH: "$argon2id$v=19$"#),
            "{all}"
        );
        assert!(r.notes.contains("SQLite"), "{}", r.notes);
    }

    #[test]
    fn the_chart_itself_refuses_replicas_without_a_database() {
        let mut v = values(&settings(), &secrets()).unwrap();
        merge(&mut v, &json!({"web": {"replicas": 3}}));
        let e = format!("{:#}", render(&v, &release()).unwrap_err());
        assert!(
            e.contains("several bty-web replicas need one shared PostgreSQL"),
            "{e}"
        );
        merge(&mut v, &json!({"database": {"url": "mysql://h/db"}}));
        let e = format!("{:#}", render(&v, &release()).unwrap_err());
        assert!(e.contains("database.url must be a PostgreSQL URL"), "{e}");
        merge(
            &mut v,
            &json!({"database": {"url": "postgres://u:p@db:5432/bty"}}),
        );
        render(&v, &release()).unwrap();
    }

    #[test]
    fn a_missing_secret_names_its_value() {
        let mut v = values(&settings(), &secrets()).unwrap();
        merge(&mut v, &json!({"secrets": {"relayKey": ""}}));
        let e = format!("{:#}", render(&v, &release()).unwrap_err());
        assert!(e.contains("secrets.relayKey is required"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused_without_echoing_the_url() {
        let mut s = settings();
        s.replicas = 3;
        let e = format!("{:#}", check(&s).unwrap_err());
        assert!(e.contains("--replicas 3 needs --database-url"), "{e}");
        for bad in [
            "mysql://u:secretpw@h/db",
            "not a url secretpw",
            "postgres:///db",
        ] {
            s.database_url = Some(bad.into());
            let e = format!("{:#}", check(&s).unwrap_err());
            assert!(e.contains("--database-url"), "{bad}: {e}");
            assert!(!e.contains("secretpw"), "{bad}: {e}");
        }
        s.database_url = Some("postgresql://u:p@db.example:5432/bty".into());
        check(&s).unwrap();
        s.replicas = 0;
        assert!(check(&s).is_err());
    }

    #[test]
    fn an_existing_secret_carries_the_database_url() {
        let mut v = values(&settings(), &secrets()).unwrap();
        merge(
            &mut v,
            &json!({"web": {"replicas": 2}, "database": {"existingSecret": "pg", "existingSecretKey": "uri"}}),
        );
        let all = render(&v, &release()).unwrap().to_multidoc();
        let web = all
            .split("---\n")
            .find(|d| d.contains("kind: Deployment"))
            .unwrap();
        assert!(
            web.contains("- name: BTY_SERVER_DATABASE\n              valueFrom:\n                secretKeyRef:\n                  name: pg\n                  key: uri"),
            "{web}"
        );
        assert!(web.contains("replicas: 2"), "{web}");
        assert!(!all.contains("kind: PersistentVolumeClaim\n"), "{all}");
        assert!(
            !all.contains("  BTY_SERVER_DATABASE:"),
            "not in the chart's Secret: {all}"
        );
    }

    #[test]
    fn namespaces_are_rfc1123_labels() {
        for good in ["default", "bty", "lab-2"] {
            check_namespace(good).unwrap();
        }
        for bad in [
            "",
            "Lab",
            "-x",
            "x-",
            "a b",
            "x\n  evil: 1",
            &"a".repeat(64),
        ] {
            let e = format!("{:#}", check_namespace(bad).unwrap_err());
            assert!(
                e.contains("not a Kubernetes namespace name"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn sprig_functions_keep_helm_meaning() {
        let s = |v: &str| Value::String(v.into());
        assert_eq!(default(&[s("d"), s("")]).unwrap(), s("d"));
        assert_eq!(default(&[s("d"), s("v")]).unwrap(), s("v"));
        assert_eq!(quote(&[s("a\"b")]).unwrap(), s("\"a\\\"b\""));
        assert!(required(&[s("need x"), Value::NoValue]).is_err());
        assert_eq!(
            int(&[Value::Number(Number::from(3.0))]).unwrap(),
            Value::Number(Number::from(3i64))
        );
        assert_eq!(has_prefix(&[s("pg"), s("pgx")]).unwrap(), Value::Bool(true));
    }
}
