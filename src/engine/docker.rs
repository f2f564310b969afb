//! [`ContainerEngine`] over the engine's HTTP API with bollard: Docker's
//! socket, or Podman's Docker-compatible one. Where Podman's answers differ
//! from Docker's schema, the difference is handled here, so callers see
//! one engine.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::{
    Config, CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::image::{BuildImageOptions, CreateImageOptions};
use bollard::models::{
    HealthConfig, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::network::CreateNetworkOptions;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt as _;

use super::{Container, ContainerEngine, ContainerSpec, Error, Image, Kind, Listed, Progress};

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Bollard {
    api: Docker,
    kind: Kind,
    addr: String,
    version: String,
}

impl Bollard {
    /// Connect to `addr` (a socket path, `unix://`, `tcp://` or `http://`
    /// URL) and ask its version; Err says why not in a few words.
    pub async fn connect(addr: &str) -> Result<Bollard, String> {
        let api = client(addr)?;
        let v = api
            .version()
            .await
            .map_err(|e| format!("not answering: {e}"))?;
        let podman = v
            .components
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.name.to_lowercase().contains("podman")));
        Ok(Bollard {
            api,
            kind: if podman { Kind::Podman } else { Kind::Docker },
            addr: addr.to_string(),
            version: v.version.unwrap_or_default(),
        })
    }
}

/// A client for `addr`; nothing is sent yet.
fn client(addr: &str) -> Result<Docker, String> {
    let unix = addr
        .strip_prefix("unix://")
        .or(addr.starts_with('/').then_some(addr));
    let api = if let Some(path) = unix {
        if !std::path::Path::new(path).exists() {
            return Err("absent".into());
        }
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if addr.starts_with("tcp://") || addr.starts_with("http://") {
        Docker::connect_with_http(addr, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err("unsupported address (use unix:///path or tcp://host:port)".into());
    };
    api.map_err(|e| e.to_string())
}

/// A bollard error as the engine said it.
fn err(e: BollardError) -> Error {
    let not_found = matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    );
    let message = match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("engine said ({status_code}): {message}"),
        // An error the engine sent inside a streamed answer (a Podman pull
        // or build); bollard's Display would drop the text.
        BollardError::DockerStreamError { error } => format!("engine said: {error}"),
        e => e.to_string(),
    };
    if not_found {
        Error::not_found(message)
    } else {
        Error::new(message)
    }
}

/// `Ok(None)` for a 404.
fn found<T>(r: Result<T, BollardError>) -> super::Result<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(e) => match err(e) {
            e if e.not_found => Ok(None),
            e => Err(e),
        },
    }
}

/// The stream's next item; an error when `stall` passes without one.
async fn next_within<S: futures::Stream + Unpin>(
    stream: &mut S,
    stall: Option<Duration>,
) -> super::Result<Option<S::Item>> {
    let Some(t) = stall else {
        return Ok(stream.next().await);
    };
    tokio::time::timeout(t, stream.next()).await.map_err(|_| {
        Error::new(format!(
            "no progress for {} s (BTY_LAB_PULL_STALL_SECS)",
            t.as_secs()
        ))
    })
}

/// `reg:5000/a/b:tag` → (`reg:5000/a/b`, `tag`).
pub fn split_ref(r: &str) -> (&str, &str) {
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (r, "latest"),
    }
}

/// The health in a listing's status text (`Up 3 minutes (healthy)`).
fn health_of(status: &str) -> &'static str {
    if status.contains("(healthy)") {
        "healthy"
    } else if status.contains("(unhealthy)") {
        "unhealthy"
    } else {
        ""
    }
}

fn nanos(secs: u64) -> i64 {
    (secs * 1_000_000_000) as i64
}

/// The bollard config for `spec`: restart unless stopped, health checked
/// every 2 s after a 60 s start period.
fn config(spec: &ContainerSpec) -> Config<String> {
    let (port_bindings, exposed_ports) = published(spec).unzip();
    let host = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        network_mode: Some(spec.network_mode.clone()),
        binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
        port_bindings,
        ..Default::default()
    };
    Config {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.clone()),
        exposed_ports,
        healthcheck: Some(HealthConfig {
            test: Some([vec!["CMD".to_string()], spec.health_cmd.clone()].concat()),
            interval: Some(nanos(2)),
            timeout: Some(nanos(3)),
            retries: Some(3),
            start_period: Some(nanos(60)),
            start_interval: None,
        }),
        host_config: Some(host),
        ..Default::default()
    }
}

type PortBindings = HashMap<String, Option<Vec<PortBinding>>>;
type ExposedPorts = HashMap<String, HashMap<(), ()>>;

/// The port bindings and exposed ports of `spec`'s published port.
fn published(spec: &ContainerSpec) -> Option<(PortBindings, ExposedPorts)> {
    let (port, host_port) = spec.publish.as_ref()?;
    let binding = PortBinding {
        host_ip: None,
        host_port: Some(host_port.to_string()),
    };
    Some((
        HashMap::from([(port.clone(), Some(vec![binding]))]),
        HashMap::from([(port.clone(), HashMap::new())]),
    ))
}

impl Bollard {
    /// Podman's compat API reports states Docker's schema does not have
    /// (e.g. `stopped`), which bollard's typed inspect cannot parse; then
    /// the container list (plain strings) says what it can.
    async fn container_from_list(&self, name: &str) -> super::Result<Option<Container>> {
        let filters = HashMap::from([("name".to_string(), vec![format!("^/?{name}$")])]);
        let list = self
            .api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(err)?;
        let Some(c) = list.into_iter().find(|c| {
            c.names
                .as_ref()
                .is_some_and(|n| n.iter().any(|n| n.trim_start_matches('/') == name))
        }) else {
            return Ok(None);
        };
        Ok(Some(Container {
            status: c.state.unwrap_or_default(),
            health: health_of(&c.status.unwrap_or_default()).to_string(),
            restarts: 0,
            image: c.image.unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
        }))
    }

    /// Follow a pull's progress messages until the end, an error, or
    /// `stall` without a message.
    async fn follow_pull(
        &self,
        r: &str,
        progress: Progress<'_>,
        stall: Option<Duration>,
    ) -> super::Result<()> {
        let (repo, tag) = split_ref(r);
        let opts = CreateImageOptions {
            from_image: repo.to_string(),
            tag: tag.to_string(),
            ..Default::default()
        };
        // Explicit empty credentials: Podman's compat API answers 400 to
        // the empty X-Registry-Config header bollard sends for None.
        let creds = bollard::auth::DockerCredentials::default();
        let mut stream = self.api.create_image(Some(opts), None, Some(creds));
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = next_within(&mut stream, stall).await? {
            let info = item.map_err(err)?;
            if let Some(e) = info.error {
                return Err(Error::new(format!("the engine said: {e}")));
            }
            if let (Some(id), Some(d)) = (info.id, info.progress_detail) {
                if let (Some(cur), Some(tot)) = (d.current, d.total) {
                    layers.insert(id, (cur.max(0) as u64, tot.max(0) as u64));
                    let (done, all) = layers.values().fold((0, 0), |a, l| (a.0 + l.0, a.1 + l.1));
                    progress(done, all);
                }
            }
        }
        Ok(())
    }

    /// Follow a build's messages to the end; its last lines (for the
    /// message when it left no image).
    async fn follow_build(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> super::Result<String> {
        let opts = BuildImageOptions {
            dockerfile: "Containerfile".to_string(),
            t: tag.to_string(),
            rm: true,
            forcerm: true,
            labels,
            ..Default::default()
        };
        // An empty credentials map, not None: Podman's compat API answers
        // 400 to the empty X-Registry-Config header bollard sends for None.
        let creds = Some(HashMap::new());
        let mut stream = self.api.build_image(opts, creds, Some(context.into()));
        let mut last = std::collections::VecDeque::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::new(format!("building {tag}: {}", err(e))))?;
            if let Some(e) = info.error {
                let lines: String = last.into_iter().collect();
                let msg = format!("building {tag}: the engine said: {e}\n{lines}");
                return Err(Error::new(msg));
            }
            last.extend(info.stream);
            if last.len() > 10 {
                last.pop_front();
            }
        }
        Ok(last.into_iter().collect())
    }
}

impl ContainerEngine for Bollard {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    async fn inspect_image(&self, r: &str) -> super::Result<Option<Image>> {
        Ok(found(self.api.inspect_image(r).await)?.map(|img| Image {
            labels: img.config.and_then(|c| c.labels).unwrap_or_default(),
            repo_digests: img.repo_digests.unwrap_or_default(),
        }))
    }

    async fn pull_image(
        &self,
        r: &str,
        progress: Progress<'_>,
        stall: Option<Duration>,
    ) -> super::Result<()> {
        self.follow_pull(r, progress, stall).await?;
        self.api.inspect_image(r).await.map_err(err)?;
        Ok(())
    }

    async fn build_image(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> super::Result<()> {
        let last = self.follow_build(tag, context, labels).await?;
        // Podman's compat build reports some failures only by not tagging.
        self.api.inspect_image(tag).await.map_err(|e| {
            let e = err(e);
            Error::new(format!("building {tag} left no image: {e}\n{last}"))
        })?;
        Ok(())
    }

    async fn remove_image(&self, r: &str) -> super::Result<()> {
        self.api.remove_image(r, None, None).await.map_err(err)?;
        Ok(())
    }

    async fn inspect_network(&self, name: &str) -> super::Result<Option<HashMap<String, String>>> {
        let n = found(self.api.inspect_network::<String>(name, None).await)?;
        Ok(n.map(|n| n.labels.unwrap_or_default()))
    }

    async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> super::Result<()> {
        let opts = CreateNetworkOptions {
            name: name.to_string(),
            driver: "bridge".to_string(),
            labels,
            ..Default::default()
        };
        self.api.create_network(opts).await.map_err(err)?;
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> super::Result<()> {
        self.api.remove_network(name).await.map_err(err)
    }

    async fn create_container(&self, name: &str, spec: &ContainerSpec) -> super::Result<()> {
        let opts = CreateContainerOptions {
            name: name.to_string(),
            platform: None,
        };
        self.api
            .create_container(Some(opts), config(spec))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn start_container(&self, name: &str) -> super::Result<()> {
        self.api
            .start_container(name, None::<StartContainerOptions<String>>)
            .await
            .map_err(err)
    }

    async fn remove_container(&self, name: &str) -> super::Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.api
            .remove_container(name, Some(opts))
            .await
            .map_err(err)
    }

    async fn inspect_container(&self, name: &str) -> super::Result<Option<Container>> {
        let c = match self.api.inspect_container(name, None).await {
            Err(BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {
                return self.container_from_list(name).await
            }
            r => match found(r)? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let state = c.state.unwrap_or_default();
        let cfg = c.config.unwrap_or_default();
        Ok(Some(Container {
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|h| h.to_string())
                .unwrap_or_default(),
            restarts: c.restart_count.unwrap_or(0),
            image: cfg.image.unwrap_or_default(),
            labels: cfg.labels.unwrap_or_default(),
        }))
    }

    async fn list_containers(&self, label: &str) -> super::Result<Vec<Listed>> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let list = self
            .api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(err)?;
        Ok(list
            .into_iter()
            .map(|c| Listed {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                state: c.state.unwrap_or_default(),
            })
            .collect())
    }

    async fn exec_ok(&self, name: &str, cmd: &[String]) -> bool {
        let opts = CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let Ok(exec) = self.api.create_exec(name, opts).await else {
            return false;
        };
        if let Ok(StartExecResults::Attached { mut output, .. }) =
            self.api.start_exec(&exec.id, None).await
        {
            while output.next().await.is_some() {}
        }
        matches!(self.api.inspect_exec(&exec.id).await, Ok(i) if i.exit_code == Some(0))
    }

    fn logs(&self, name: &str, tail: &str, follow: bool) -> BoxStream<'_, super::Result<String>> {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            follow,
            tail: tail.to_string(),
            ..Default::default()
        };
        self.api
            .logs(name, Some(opts))
            .map(|chunk| chunk.map(|c| c.to_string()).map_err(err))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_ref("127.0.0.1:5000/bty/bty-web:0.1.0"),
            ("127.0.0.1:5000/bty/bty-web", "0.1.0")
        );
        assert_eq!(
            split_ref("127.0.0.1:5000/bty/bty-web"),
            ("127.0.0.1:5000/bty/bty-web", "latest")
        );
    }

    #[test]
    fn a_spec_becomes_the_config_deploy_always_made() {
        let spec = ContainerSpec {
            image: "r/bty-web:1".into(),
            env: vec!["A=1".into()],
            labels: HashMap::from([("dev.bty.deploy".into(), "/opt/bty".into())]),
            network_mode: "bty-bty".into(),
            publish: Some(("8080/tcp".into(), 9080)),
            binds: vec!["/d:/var/lib/bty".into()],
            health_cmd: vec!["/bty-lab".into(), "internal".into()],
        };
        let c = config(&spec);
        let host = c.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("bty-bty"));
        let b = &host.port_bindings.unwrap()["8080/tcp"];
        assert_eq!(b.as_ref().unwrap()[0].host_port.as_deref(), Some("9080"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let h = c.healthcheck.unwrap();
        assert_eq!(h.test.unwrap(), ["CMD", "/bty-lab", "internal"]);
        assert_eq!(h.start_period, Some(60_000_000_000));
        // Host networking: no ports, no binds key when there are none.
        let host = config(&ContainerSpec {
            network_mode: "host".into(),
            ..Default::default()
        })
        .host_config
        .unwrap();
        assert!(host.port_bindings.is_none() && host.binds.is_none());
    }
}
