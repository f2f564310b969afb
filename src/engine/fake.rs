//! An in-memory [`ContainerEngine`] for unit tests: it holds images,
//! networks and containers, records every call that changes something
//! (`calls`), and fails where a test tells it to: a pull or a build that
//! fails, a start that fails with Podman's "write child: broken pipe", a
//! container that exits or never gets healthy, a removal that is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt as _;

use super::{Container, ContainerEngine, ContainerSpec, Error, Image, Kind, Listed, Progress};

/// How the containers of an image behave once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Running and healthy at once.
    Healthy,
    /// Exits right after the start (a crash on start-up).
    Exits,
    /// Runs, but its health check never passes.
    NeverHealthy,
}

/// One container the fake holds.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub spec: ContainerSpec,
    pub status: String,
    pub health: String,
}

#[derive(Debug, Default)]
struct State {
    images: BTreeMap<String, Image>,
    networks: BTreeMap<String, HashMap<String, String>>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<String>,
    next_id: u32,
    /// Pull failures by ref; `*` fails every pull.
    pull_fails: HashMap<String, String>,
    build_fails: Option<String>,
    /// The next this many starts fail with a broken pipe.
    broken_pipes: usize,
    /// After those, this many starts find a published port still in use.
    busy_ports: usize,
    behaviour: HashMap<String, Behaviour>,
    remove_fails: HashMap<String, String>,
}

/// The fake engine.
#[derive(Debug)]
pub struct Fake {
    kind: Kind,
    st: Mutex<State>,
}

impl Fake {
    pub fn new(kind: Kind) -> Fake {
        Fake {
            kind,
            st: Mutex::new(State::default()),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, c: String) {
        self.st().calls.push(c);
    }

    /// Every call that changed something, in order (`pull REF`,
    /// `build TAG`, `create NAME IMAGE`, `start NAME`, `rm NAME`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.st().calls.clone()
    }

    /// The calls starting with `prefix`, without it.
    pub fn calls_of(&self, prefix: &str) -> Vec<String> {
        let p = format!("{prefix} ");
        let calls = self.calls();
        calls
            .iter()
            .filter_map(|c| c.strip_prefix(&p).map(String::from))
            .collect()
    }

    /// Put an image into the engine.
    pub fn add_image(&self, r: &str, img: Image) {
        self.st().images.insert(r.to_string(), img);
    }

    pub fn image(&self, r: &str) -> Option<Image> {
        self.st().images.get(r).cloned()
    }

    /// Make pulls of `r` (`*`: every pull) fail with `message`.
    pub fn fail_pull(&self, r: &str, message: &str) {
        self.st().pull_fails.insert(r.into(), message.into());
    }

    pub fn fail_builds(&self, message: &str) {
        self.st().build_fails = Some(message.into());
    }

    /// Make the next `n` container starts fail as Podman 4.3's do under
    /// load.
    pub fn broken_pipe_starts(&self, n: usize) {
        self.st().broken_pipes = n;
    }

    /// The next `n` starts after the broken pipes find a published port
    /// still held (Podman's forwarder of a removed container).
    pub fn busy_port_starts(&self, n: usize) {
        self.st().busy_ports = n;
    }

    /// How containers from image `r` behave once started.
    pub fn behave(&self, r: &str, b: Behaviour) {
        self.st().behaviour.insert(r.into(), b);
    }

    /// Make removing container `name` fail with `message`.
    pub fn fail_remove(&self, name: &str, message: &str) {
        self.st().remove_fails.insert(name.into(), message.into());
    }

    /// Put a container into the engine as if created and started earlier.
    pub fn add_container(&self, name: &str, spec: ContainerSpec, status: &str) {
        let mut st = self.st();
        st.next_id += 1;
        let c = FakeContainer {
            id: format!("id{}", st.next_id),
            spec,
            status: status.into(),
            health: "healthy".into(),
        };
        st.containers.insert(name.into(), c);
    }

    /// Run a container as something outside the engine API would (systemd
    /// starting a Quadlet unit): replaced, started, behaving as its image
    /// was told to.
    pub fn run_now(&self, name: &str, spec: ContainerSpec) {
        let mut st = self.st();
        st.next_id += 1;
        let (status, health) = settle(&st, &spec.image);
        let c = FakeContainer {
            id: format!("id{}", st.next_id),
            spec,
            status: status.into(),
            health: health.into(),
        };
        st.containers.insert(name.into(), c);
    }

    /// Stop and remove a container as systemd would stopping its unit.
    pub fn stop_now(&self, name: &str) {
        self.st().containers.remove(name);
    }

    pub fn container(&self, name: &str) -> Option<FakeContainer> {
        self.st().containers.get(name).cloned()
    }

    /// The names of the containers held.
    pub fn container_names(&self) -> Vec<String> {
        self.st().containers.keys().cloned().collect()
    }

    pub fn networks(&self) -> Vec<String> {
        self.st().networks.keys().cloned().collect()
    }

    /// The container `name` or id refers to.
    fn find(st: &State, name: &str) -> Option<String> {
        st.containers
            .iter()
            .find(|(n, c)| *n == name || c.id == name)
            .map(|(n, _)| n.clone())
    }
}

/// The status and health a container of `image` has once started.
fn settle(st: &State, image: &str) -> (&'static str, &'static str) {
    match st
        .behaviour
        .get(image)
        .copied()
        .unwrap_or(Behaviour::Healthy)
    {
        Behaviour::Healthy => ("running", "healthy"),
        Behaviour::Exits => ("exited", ""),
        Behaviour::NeverHealthy => ("running", "starting"),
    }
}

fn gone(what: &str, name: &str) -> Error {
    Error::not_found(format!("engine said (404): no such {what}: {name}"))
}

impl ContainerEngine for Fake {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn version(&self) -> &str {
        match self.kind {
            Kind::Docker => "24.0.0-fake",
            Kind::Podman => "4.3.1-fake",
        }
    }

    fn addr(&self) -> &str {
        "/fake/engine.sock"
    }

    async fn inspect_image(&self, r: &str) -> super::Result<Option<Image>> {
        Ok(self.image(r))
    }

    async fn pull_image(
        &self,
        r: &str,
        progress: Progress<'_>,
        _stall: Option<Duration>,
    ) -> super::Result<()> {
        self.call(format!("pull {r}"));
        let mut st = self.st();
        if let Some(m) = st.pull_fails.get(r).or(st.pull_fails.get("*")) {
            return Err(Error::new(m.clone()));
        }
        let (repo, _) = super::split_ref(r);
        let img = Image {
            labels: HashMap::new(),
            repo_digests: vec![format!("{repo}@sha256:fake")],
        };
        st.images.insert(r.into(), img);
        progress(1, 1);
        Ok(())
    }

    async fn build_image(
        &self,
        tag: &str,
        context: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> super::Result<()> {
        self.call(format!("build {tag}"));
        let mut st = self.st();
        if let Some(m) = &st.build_fails {
            return Err(Error::new(format!("building {tag}: the engine said: {m}")));
        }
        assert!(!context.is_empty(), "an empty build context");
        let img = Image {
            labels,
            repo_digests: vec![],
        };
        st.images.insert(tag.into(), img);
        Ok(())
    }

    async fn remove_image(&self, r: &str) -> super::Result<()> {
        self.call(format!("image rm {r}"));
        match self.st().images.remove(r) {
            Some(_) => Ok(()),
            None => Err(gone("image", r)),
        }
    }

    async fn inspect_network(&self, name: &str) -> super::Result<Option<HashMap<String, String>>> {
        Ok(self.st().networks.get(name).cloned())
    }

    async fn create_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> super::Result<()> {
        self.call(format!("network create {name}"));
        self.st().networks.insert(name.into(), labels);
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> super::Result<()> {
        self.call(format!("network rm {name}"));
        match self.st().networks.remove(name) {
            Some(_) => Ok(()),
            None => Err(gone("network", name)),
        }
    }

    async fn create_container(&self, name: &str, spec: &ContainerSpec) -> super::Result<()> {
        self.call(format!("create {name} {}", spec.image));
        let mut st = self.st();
        if st.containers.contains_key(name) {
            return Err(Error::new(format!(
                "engine said (409): the container name {name} is already in use"
            )));
        }
        if !st.images.contains_key(&spec.image) {
            return Err(gone("image", &spec.image));
        }
        st.next_id += 1;
        let c = FakeContainer {
            id: format!("id{}", st.next_id),
            spec: spec.clone(),
            status: "created".into(),
            health: String::new(),
        };
        st.containers.insert(name.into(), c);
        Ok(())
    }

    async fn start_container(&self, name: &str) -> super::Result<()> {
        self.call(format!("start {name}"));
        let mut st = self.st();
        if st.broken_pipes > 0 {
            st.broken_pipes -= 1;
            return Err(Error::new(
                "engine said (500): crun: write child: broken pipe: OCI runtime error",
            ));
        }
        if st.busy_ports > 0 {
            st.busy_ports -= 1;
            return Err(Error::new(
                "engine said (500): cannot listen on the TCP port: listen tcp4 :3000: bind: address already in use",
            ));
        }
        let Some(c) = st.containers.get(name) else {
            return Err(gone("container", name));
        };
        let (status, health) = settle(&st, &c.spec.image);
        let c = st.containers.get_mut(name).expect("looked up above");
        c.status = status.into();
        c.health = health.into();
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> super::Result<()> {
        self.call(format!("rm {name}"));
        let mut st = self.st();
        let Some(n) = Fake::find(&st, name) else {
            return Err(gone("container", name));
        };
        if let Some(m) = st.remove_fails.get(&n) {
            return Err(Error::new(m.clone()));
        }
        st.containers.remove(&n);
        Ok(())
    }

    async fn inspect_container(&self, name: &str) -> super::Result<Option<Container>> {
        let st = self.st();
        Ok(st.containers.get(name).map(|c| Container {
            status: c.status.clone(),
            health: c.health.clone(),
            restarts: 0,
            image: c.spec.image.clone(),
            labels: c.spec.labels.clone(),
        }))
    }

    async fn list_containers(&self, label: &str) -> super::Result<Vec<Listed>> {
        let (k, v) = label.split_once('=').expect("a key=value label filter");
        let st = self.st();
        Ok(st
            .containers
            .iter()
            .filter(|(_, c)| c.spec.labels.get(k).map(String::as_str) == Some(v))
            .map(|(n, c)| Listed {
                id: c.id.clone(),
                name: n.clone(),
                state: c.status.clone(),
            })
            .collect())
    }

    async fn exec_ok(&self, name: &str, _cmd: &[String]) -> bool {
        let st = self.st();
        st.containers
            .get(name)
            .is_some_and(|c| c.status == "running" && c.health == "healthy")
    }

    fn logs(&self, name: &str, _tail: &str, _follow: bool) -> BoxStream<'_, super::Result<String>> {
        let line = match self.container(name) {
            Some(c) if c.status == "exited" => Ok(format!("{name}: panic: no config\n")),
            Some(_) => Ok(format!("{name}: listening\n")),
            None => Err(gone("container", name)),
        };
        futures::stream::iter([line]).boxed()
    }
}
