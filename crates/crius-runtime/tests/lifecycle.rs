//! The pod and container lifecycle against fakes of everything outside crius-runtime: the
//! sandbox operations (namespaces, /dev/shm), the pod network, and the host the container
//! manager uses (the pod monitor, rootfs mounts, process liveness, cgroups). No root, no
//! runc, no network: these run in `cargo test` in well under a second.
//!
//! What they hold crius to: a failure at any step of RunPodSandbox or CreateContainer leaves
//! nothing behind; Stop and Remove are idempotent; a restart finds every pod and container in
//! its true state and is not stopped by a bad record; containers a dead monitor left are
//! killed and reported; a container can never be created into a pod being removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crius_cgroups::{CgroupfsManager, Hierarchy};
use crius_cni::CniError;
use crius_error::{ErrorKind, HasKind};
use crius_monitor::{
    ContainerState as MonitorState, ContainerStatus, ErrorCode, ExecResult, ExitRecord,
    MonitorConn, MonitorError, Request, Response,
};
use crius_runtime::{
    ContainerFilter, ContainerHost, ContainerManager, ContainerManagerOptions, ContainerState,
    ImageInfo, ImageSource, PodFilter, PodManager, PodManagerOptions, PodNetwork, PodState,
    Runtime, RuntimeError, SandboxOps,
};
use crius_sandbox::{PinRequest, PinnedNamespaces, SandboxError};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig, PodSandboxMetadata,
};

// ---------------------------------------------------------------------------------------------
// Fault injection: a step named here fails the next time it runs.

#[derive(Default)]
struct Faults(Mutex<BTreeSet<&'static str>>);

impl Faults {
    fn arm(&self, step: &'static str) {
        self.0.lock().unwrap().insert(step);
    }
    /// True (once) when `step` was armed.
    fn hit(&self, step: &'static str) -> bool {
        self.0.lock().unwrap().remove(step)
    }
}

fn injected(step: &str) -> io::Error {
    io::Error::other(format!("injected failure at {step}"))
}

// ---------------------------------------------------------------------------------------------
// Sandbox and network fakes.

#[derive(Default)]
struct FakeSandbox {
    faults: Arc<Faults>,
    pinned: Mutex<BTreeSet<String>>,
    shm: Mutex<BTreeSet<PathBuf>>,
}

impl SandboxOps for FakeSandbox {
    fn pin(&self, req: &PinRequest) -> Result<PinnedNamespaces, SandboxError> {
        if self.faults.hit("pin") {
            return Err(SandboxError::Io {
                op: "pinning",
                path: req.ns_dir.clone(),
                source: injected("pin"),
            });
        }
        std::fs::create_dir_all(&req.ns_dir).unwrap();
        std::fs::create_dir_all(&req.net_dir).unwrap();
        let net = req.net_dir.join(&req.pod_id);
        std::fs::write(&net, b"").unwrap();
        self.pinned.lock().unwrap().insert(req.pod_id.clone());
        Ok(PinnedNamespaces {
            pod_id: req.pod_id.clone(),
            net: Some(net),
            ipc: Some(req.ns_dir.join("ipc")),
            uts: Some(req.ns_dir.join("uts")),
            pid: None,
            init: None,
            ns_dir: Some(req.ns_dir.clone()),
        })
    }
    fn unpin(&self, pinned: &PinnedNamespaces) -> Result<(), SandboxError> {
        if let Some(net) = &pinned.net {
            let _ = std::fs::remove_file(net);
        }
        self.pinned.lock().unwrap().remove(&pinned.pod_id);
        Ok(())
    }
    fn mount_shm(&self, dir: &Path, _size: u64) -> Result<(), SandboxError> {
        if self.faults.hit("shm") {
            return Err(SandboxError::Io {
                op: "mounting",
                path: dir.into(),
                source: injected("shm"),
            });
        }
        self.shm.lock().unwrap().insert(dir.into());
        Ok(())
    }
    fn unmount_shm(&self, dir: &Path) -> Result<(), SandboxError> {
        self.shm.lock().unwrap().remove(dir);
        Ok(())
    }
}

#[derive(Default)]
struct FakeNetwork {
    faults: Arc<Faults>,
    attached: Mutex<BTreeSet<String>>,
}

impl PodNetwork for FakeNetwork {
    fn setup(
        &self,
        pod_id: &str,
        netns: &Path,
        _config: &PodSandboxConfig,
    ) -> Result<Vec<IpAddr>, CniError> {
        if self.faults.hit("network") {
            return Err(CniError::Io {
                op: "adding",
                path: netns.into(),
                source: Arc::new(injected("network")),
            });
        }
        self.attached.lock().unwrap().insert(pod_id.into());
        Ok(vec!["10.88.0.7".parse().unwrap()])
    }
    fn teardown(
        &self,
        pod_id: &str,
        _netns: &Path,
        _config: &PodSandboxConfig,
    ) -> Result<(), CniError> {
        self.attached.lock().unwrap().remove(pod_id);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The container host: a fake pod monitor speaking the monitor protocol, fake mounts, fake pids.

struct FakeContainer {
    pid: u32,
    status: ContainerStatus,
    exit_dir: PathBuf,
}

#[derive(Default)]
struct World {
    /// Live monitors by socket path, each with the containers it owns.
    monitors: HashMap<PathBuf, BTreeMap<String, FakeContainer>>,
    alive: BTreeSet<u32>,
    next_pid: u32,
    mounts: BTreeSet<PathBuf>,
    /// Kill requests for containers the monitor did not own, as (id, runtime).
    foreign_kills: Vec<(String, PathBuf)>,
}

#[derive(Default)]
struct FakeHost {
    faults: Arc<Faults>,
    world: Arc<Mutex<World>>,
}

impl FakeHost {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

struct FakeConn {
    socket: PathBuf,
    faults: Arc<Faults>,
    world: Arc<Mutex<World>>,
}

fn monitor_err(code: ErrorCode, message: &str) -> Response {
    Response::Error(MonitorError {
        code,
        message: message.into(),
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl MonitorConn for FakeConn {
    fn request(&mut self, req: &Request) -> io::Result<Response> {
        let mut w = self.world.lock().unwrap();
        let World {
            monitors,
            alive,
            next_pid,
            foreign_kills,
            ..
        } = &mut *w;
        let Some(containers) = monitors.get_mut(&self.socket) else {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        };
        Ok(match req {
            Request::Create(c) => {
                if self.faults.hit("monitor.create") {
                    return Ok(monitor_err(
                        ErrorCode::Runtime,
                        "runtime create exited with 1",
                    ));
                }
                if containers.contains_key(&c.id) {
                    return Ok(monitor_err(ErrorCode::AlreadyExists, "exists"));
                }
                *next_pid += 1;
                let pid = 100_000 + *next_pid;
                alive.insert(pid);
                containers.insert(
                    c.id.clone(),
                    FakeContainer {
                        pid,
                        status: ContainerStatus::Created,
                        exit_dir: c.exit_dir.clone(),
                    },
                );
                Response::Created { pid }
            }
            Request::Start { id } => match containers.get_mut(id) {
                Some(c) if c.status == ContainerStatus::Created => {
                    c.status = ContainerStatus::Running;
                    Response::Started {
                        started_at_unix_nanos: now(),
                    }
                }
                Some(_) => monitor_err(ErrorCode::FailedPrecondition, "not created"),
                None => monitor_err(ErrorCode::NotFound, "no such container"),
            },
            Request::Kill {
                id,
                signal,
                foreign,
                ..
            } => match (containers.get_mut(id), foreign) {
                (Some(c), _) => {
                    if c.status != ContainerStatus::Exited {
                        c.status = ContainerStatus::Exited;
                        alive.remove(&c.pid);
                        let record = ExitRecord {
                            exit_code: 128 + signal,
                            exited_at_unix_nanos: now(),
                            oom: false,
                        };
                        crius_monitor::write_exit_file(&c.exit_dir, id, &record)?;
                    }
                    Response::Ok
                }
                (None, Some(f)) => {
                    foreign_kills.push((id.clone(), f.runtime.clone()));
                    // The runtime kills every process of the container: the fake's pids are
                    // 100000 + n and each container has one.
                    alive.retain(|p| *p < 100_000 || *p >= 200_000);
                    Response::Ok
                }
                (None, None) => monitor_err(ErrorCode::NotFound, "no such container"),
            },
            Request::Delete { id, foreign, .. } => {
                if containers.remove(id).is_none() && foreign.is_none() {
                    monitor_err(ErrorCode::NotFound, "no such container")
                } else {
                    Response::Ok
                }
            }
            Request::Exec(e) => Response::ExecResult(ExecResult {
                exit_code: 0,
                stdout: e.argv.join(" ").into_bytes(),
                stderr: Vec::new(),
                timed_out: false,
            }),
            Request::Update { .. } | Request::ReopenLog { .. } => Response::Ok,
            Request::Attach { .. } | Request::StreamExec(_) => {
                monitor_err(ErrorCode::Invalid, "the fake has no stdio")
            }
            Request::State => Response::State(
                containers
                    .iter()
                    .map(|(id, c)| MonitorState {
                        id: id.clone(),
                        pid: c.pid,
                        status: c.status,
                        exit_code: None,
                        exited_at_unix_nanos: None,
                    })
                    .collect(),
            ),
            Request::Shutdown { force } => {
                if *force
                    || containers
                        .values()
                        .all(|c| c.status == ContainerStatus::Exited)
                {
                    monitors.remove(&self.socket);
                }
                Response::Ok
            }
        })
    }
    fn set_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn cancel_handle(&self) -> io::Result<UnixStream> {
        Ok(UnixStream::pair()?.0)
    }
}

impl ContainerHost for FakeHost {
    fn connect_monitor(&self, socket: &Path) -> io::Result<Box<dyn MonitorConn>> {
        if !self.world().monitors.contains_key(socket) {
            return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
        }
        Ok(Box::new(FakeConn {
            socket: socket.into(),
            faults: self.faults.clone(),
            world: self.world.clone(),
        }))
    }
    fn spawn_monitor(&self, _: &Path, _: &str, _: &Path, socket: &Path) -> io::Result<u32> {
        if self.faults.hit("monitor.spawn") {
            return Err(injected("monitor.spawn"));
        }
        let mut w = self.world();
        w.monitors.entry(socket.into()).or_default();
        w.next_pid += 1;
        // Monitors' pids are apart from containers' (100000 + n), and never "alive": the
        // fake has no process to leak.
        Ok(200_000 + w.next_pid)
    }
    fn alive(&self, pid: u32) -> bool {
        self.world().alive.contains(&pid)
    }
    fn mount_rootfs(
        &self,
        _layers: &Path,
        _lower: &[String],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> io::Result<()> {
        if self.faults.hit("mount") {
            return Err(injected("mount"));
        }
        self.world().mounts.insert(target.into());
        Ok(())
    }
    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.world().mounts.remove(target);
        Ok(())
    }
}

struct FakeImages(PathBuf);

impl ImageSource for FakeImages {
    fn image_info(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Ok((name == "busybox:latest").then(|| ImageInfo {
            id: "sha256:".to_string() + &"ab".repeat(32),
            reference: "docker.io/library/busybox@sha256:00".into(),
            tag: Some("docker.io/library/busybox:latest".into()),
            config: serde_json::json!({"config": {"Cmd": ["sh"], "StopSignal": "SIGTERM"}}),
            layers_dir: self.0.clone(),
            lower: vec!["l1".into()],
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// A node: the three managers on a temp dir, with the fakes.

struct Node {
    dir: tempfile::TempDir,
    faults: Arc<Faults>,
    sandbox: Arc<FakeSandbox>,
    network: Arc<FakeNetwork>,
    host: Arc<FakeHost>,
    rt: Runtime,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let sandbox = Arc::new(FakeSandbox {
            faults: faults.clone(),
            ..Default::default()
        });
        let network = Arc::new(FakeNetwork {
            faults: faults.clone(),
            ..Default::default()
        });
        let host = Arc::new(FakeHost {
            faults: faults.clone(),
            ..Default::default()
        });
        let rt = Self::open(dir.path(), &sandbox, &network, &host).unwrap();
        Node {
            dir,
            faults,
            sandbox,
            network,
            host,
            rt,
        }
    }

    fn open(
        dir: &Path,
        sandbox: &Arc<FakeSandbox>,
        network: &Arc<FakeNetwork>,
        host: &Arc<FakeHost>,
    ) -> Result<Runtime, RuntimeError> {
        std::fs::create_dir_all(dir.join("cgroup")).unwrap();
        let handlers: BTreeMap<String, PathBuf> =
            [("runc".to_string(), PathBuf::from("/usr/bin/runc"))].into();
        let pods = Arc::new(PodManager::open(
            PodManagerOptions {
                records_dir: dir.join("root/pods"),
                state_dir: dir.join("state"),
                handlers: handlers.clone(),
                default_handler: Some("runc".into()),
                // A cgroupfs manager over a directory tree: cgroups are plain directories.
                cgroups: Arc::new(CgroupfsManager::new(Hierarchy::v2_at(&dir.join("cgroup")))),
            },
            sandbox.clone(),
            network.clone(),
        )?);
        let containers = Arc::new(ContainerManager::open_with(
            ContainerManagerOptions {
                root_dir: dir.join("root/containers"),
                state_dir: dir.join("state/containers"),
                runtime_root: dir.join("state/runtime"),
                monitor_binary: PathBuf::from("/nonexistent/crius-monitor"),
                monitor_socket_dir: dir.join("state/m"),
                handlers,
            },
            pods.clone(),
            host.clone(),
        )?);
        let images = Arc::new(FakeImages(dir.join("root/layers")));
        Ok(Runtime::new(pods, containers, images))
    }

    /// criusd restarted: new managers over the same directories and the same host.
    fn restart(&mut self) {
        self.rt = Self::open(self.dir.path(), &self.sandbox, &self.network, &self.host).unwrap();
    }

    fn run_pod(&self, name: &str) -> Result<String, RuntimeError> {
        self.rt.pods.run(pod_config(name), "")
    }

    fn create(&self, pod: &str, name: &str) -> Result<String, RuntimeError> {
        self.rt.create_container(pod, container_config(name))
    }

    /// Every file under `sub` of the node's dir, relative to it.
    fn files(&self, sub: &str) -> Vec<String> {
        let root = self.dir.path().join(sub);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
        out.sort();
        out
    }

    /// Nothing of any pod or container is left: records, state dirs, pins, shm, network,
    /// mounts, container processes.
    fn assert_empty(&self, context: &str) {
        assert_eq!(
            self.files("root/pods"),
            Vec::<String>::new(),
            "{context}: pod records"
        );
        assert_eq!(
            self.files("root/containers"),
            Vec::<String>::new(),
            "{context}: layers"
        );
        assert_eq!(
            self.files("state/pods"),
            Vec::<String>::new(),
            "{context}: pod dirs"
        );
        assert_eq!(
            self.files("state/containers"),
            Vec::<String>::new(),
            "{context}: bundles"
        );
        assert!(
            self.sandbox.pinned.lock().unwrap().is_empty(),
            "{context}: pins"
        );
        assert!(
            self.sandbox.shm.lock().unwrap().is_empty(),
            "{context}: shm"
        );
        assert!(
            self.network.attached.lock().unwrap().is_empty(),
            "{context}: network"
        );
        let w = self.host.world();
        assert!(w.mounts.is_empty(), "{context}: mounts {:?}", w.mounts);
        assert!(w.alive.is_empty(), "{context}: processes {:?}", w.alive);
        assert!(
            w.monitors.values().all(|m| m.is_empty()),
            "{context}: containers in a monitor"
        );
    }
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

fn container_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn state_of(rt: &Runtime, id: &str) -> ContainerState {
    rt.container_status(id, false).unwrap().record.state
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_failure_at_any_step_of_run_pod_sandbox_leaves_nothing() {
    let n = Node::new();
    for step in ["pin", "shm", "network"] {
        n.faults.arm(step);
        let err = n.run_pod("web").expect_err(step);
        assert!(err.to_string().contains("injected"), "{step}: {err}");
        n.assert_empty(step);
        assert!(n.rt.pods.list(&PodFilter::default()).is_empty(), "{step}");
    }
    // And with no fault the same pod runs, and stopping and removing it undo everything.
    let id = n.run_pod("web").unwrap();
    assert_eq!(n.rt.pods.get(&id).unwrap().state, PodState::Ready);
    assert!(
        n.files("cgroup").iter().any(|f| f.contains(&id)),
        "the pod's cgroup is made: {:?}",
        n.files("cgroup")
    );
    assert!(n.network.attached.lock().unwrap().contains(&id));
    n.rt.remove_pod(&id).unwrap();
    n.assert_empty("removed");
}

#[test]
fn stop_and_remove_are_idempotent() {
    let n = Node::new();
    let pod = n.run_pod("web").unwrap();
    let c = n.create(&pod, "app").unwrap();
    n.rt.containers.start(&c).unwrap();
    for _ in 0..2 {
        n.rt.containers.stop(&c, Duration::ZERO).unwrap();
        n.rt.stop_pod(&pod).unwrap();
    }
    assert_eq!(n.rt.pods.get(&pod).unwrap().state, PodState::NotReady);
    assert!(
        n.network.attached.lock().unwrap().is_empty(),
        "stop detaches"
    );
    for _ in 0..2 {
        n.rt.containers.remove(&c).unwrap();
        n.rt.remove_pod(&pod).unwrap();
    }
    // Unknown ids are fine too, as the kubelet expects of Stop and Remove.
    n.rt.stop_pod("0123456789abcdef").unwrap();
    n.rt.remove_pod("0123456789abcdef").unwrap();
    n.rt.containers.remove("0123456789abcdef").unwrap();
    n.assert_empty("removed twice");
}

#[test]
fn a_failure_at_any_step_of_create_container_leaves_nothing_of_it() {
    let n = Node::new();
    let pod = n.run_pod("web").unwrap();
    // The runtime's create is Start's (see the next test); Create's side effect is the
    // rootfs mount.
    let step = "mount";
    n.faults.arm(step);
    let err = n.create(&pod, "app").expect_err(step);
    assert!(err.to_string().contains("injected"), "{step}: {err}");
    assert!(n.rt.containers.list(&ContainerFilter::default()).is_empty());
    assert_eq!(n.files("root/containers"), Vec::<String>::new());
    assert_eq!(n.files("state/containers"), Vec::<String>::new());
    assert!(n.host.world().mounts.is_empty());
    // The name is free again: a retry succeeds.
    let c = n.create(&pod, "app").unwrap();
    assert_eq!(state_of(&n.rt, &c), ContainerState::Created);
    n.rt.remove_pod(&pod).unwrap();
    n.assert_empty("after the pod");
}

#[test]
fn a_failure_at_any_step_of_start_container_leaves_it_exited_with_start_error() {
    let n = Node::new();
    let pod = n.run_pod("web").unwrap();
    for (i, step) in ["monitor.spawn", "monitor.create"].into_iter().enumerate() {
        let c = n.create(&pod, &format!("app{i}")).unwrap();
        n.faults.arm(step);
        let err = n.rt.containers.start(&c).expect_err(step);
        assert!(
            err.to_string().contains("injected") || err.to_string().contains("runtime create"),
            "{step}: {err}"
        );
        // As containerd: exited, code 128, StartError; the kubelet restarts it per policy.
        let view = n.rt.container_status(&c, false).unwrap().record;
        assert_eq!(view.state, ContainerState::Exited, "{step}");
        assert_eq!((view.exit_code, view.reason.as_str()), (128, "StartError"));
        assert!(view.message.contains("injected") || view.message.contains("runtime create"));
        let again = n.rt.containers.start(&c).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::FailedPrecondition, "{again}");
        n.rt.containers.remove(&c).unwrap();
        let w = n.host.world();
        assert!(w.monitors.values().all(|m| !m.contains_key(&c)), "{step}");
    }
    // A created container is not in the runtime yet: Stop ends it as a killed one.
    let c = n.create(&pod, "late").unwrap();
    n.rt.containers.stop(&c, Duration::from_secs(1)).unwrap();
    let view = n.rt.container_status(&c, false).unwrap().record;
    assert_eq!((view.state, view.exit_code), (ContainerState::Exited, 137));
    let c = n.create(&pod, "started").unwrap();
    n.rt.containers.start(&c).unwrap();
    assert_eq!(state_of(&n.rt, &c), ContainerState::Running);
    n.rt.remove_pod(&pod).unwrap();
    n.assert_empty("after the pod");
}

#[test]
fn a_container_lives_its_life_and_keeps_its_exit_code() {
    let n = Node::new();
    let pod = n.run_pod("web").unwrap();
    let c = n.create(&pod, "app").unwrap();
    // A second container of the same name and attempt is refused, naming the first.
    let dup = n.create(&pod, "app").unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert!(dup.to_string().contains(&c), "{dup}");

    n.rt.containers.start(&c).unwrap();
    let view = n.rt.container_status(&c[..8], false).unwrap();
    assert_eq!(view.record.state, ContainerState::Running);
    assert_eq!(view.user.as_ref().map(|u| u.uid), Some(0));
    let out =
        n.rt.containers
            .exec_sync(
                &c,
                vec!["echo".into(), "hi".into()],
                Duration::from_secs(5),
                &Default::default(),
            )
            .unwrap();
    assert_eq!(out.stdout, b"echo hi");

    // Stop with a grace period sends the stop signal (SIGTERM): 128 + 15.
    n.rt.containers.stop(&c, Duration::from_secs(5)).unwrap();
    let view = n.rt.container_status(&c, false).unwrap();
    assert_eq!(view.record.state, ContainerState::Exited);
    assert_eq!(view.record.exit_code, 143);
    assert!(view.record.finished_at >= view.record.started_at);

    n.rt.containers.remove(&c).unwrap();
    let gone = n.rt.container_status(&c, false).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    n.rt.remove_pod(&pod).unwrap();
    n.assert_empty("after the pod");
}

#[test]
fn errors_carry_the_right_kind() {
    let n = Node::new();
    let e = n.create("0123456789abcdef", "app").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let pod = n.run_pod("web").unwrap();
    let mut missing = container_config("app");
    missing.image.as_mut().unwrap().image = "nginx:latest".into();
    let e = n.rt.create_container(&pod, missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("config.image.image"), "{e}");
    n.rt.stop_pod(&pod).unwrap();
    let e = n.create(&pod, "app").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    // The monitor's own codes come through: starting a container twice.
    n.rt.remove_pod(&pod).unwrap();
    let pod = n.run_pod("web2").unwrap();
    let c = n.create(&pod, "app").unwrap();
    n.rt.containers.start(&c).unwrap();
    let e = n.rt.containers.start(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    n.rt.remove_pod(&pod).unwrap();
    n.assert_empty("after the pods");
}

#[test]
fn a_restart_finds_every_pod_and_container_in_its_true_state() {
    let mut n = Node::new();
    let pod = n.run_pod("web").unwrap();
    let running = n.create(&pod, "running").unwrap();
    n.rt.containers.start(&running).unwrap();
    let created = n.create(&pod, "created").unwrap();
    let exits = n.create(&pod, "exits").unwrap();
    n.rt.containers.start(&exits).unwrap();
    let stopped_pod = n.run_pod("stopped").unwrap();
    n.rt.stop_pod(&stopped_pod).unwrap();

    // While criusd is down, one container exits on its own (its monitor records it) and a
    // record is damaged: neither stops the others from loading.
    {
        let w = &mut *n.host.world();
        let socket = w
            .monitors
            .iter()
            .find(|(_, m)| m.contains_key(&exits))
            .map(|(s, _)| s.clone())
            .unwrap();
        let c = w
            .monitors
            .get_mut(&socket)
            .unwrap()
            .get_mut(&exits)
            .unwrap();
        c.status = ContainerStatus::Exited;
        w.alive.remove(&c.pid);
        let record = ExitRecord {
            exit_code: 3,
            exited_at_unix_nanos: now(),
            oom: false,
        };
        crius_monitor::write_exit_file(&c.exit_dir, &exits, &record).unwrap();
    }
    std::fs::write(
        n.dir.path().join("root/containers/ffff.json"),
        b"{ not json",
    )
    .unwrap();
    std::fs::write(n.dir.path().join("root/pods/eeee.json"), b"[]").unwrap();
    n.restart();

    assert_eq!(state_of(&n.rt, &running), ContainerState::Running);
    assert_eq!(state_of(&n.rt, &created), ContainerState::Created);
    let exited = n.rt.container_status(&exits, false).unwrap().record;
    assert_eq!(
        (exited.state, exited.exit_code),
        (ContainerState::Exited, 3)
    );
    assert_eq!(n.rt.pods.get(&pod).unwrap().state, PodState::Ready);
    assert_eq!(
        n.rt.pods.get(&stopped_pod).unwrap().state,
        PodState::NotReady
    );
    assert_eq!(n.rt.containers.list(&ContainerFilter::default()).len(), 3);

    n.rt.remove_pod(&pod).unwrap();
    n.rt.remove_pod(&stopped_pod).unwrap();
    // The damaged records were set aside, not deleted: remove them to check the rest.
    for f in [
        "root/containers/ffff.json.corrupt",
        "root/pods/eeee.json.corrupt",
    ] {
        let p = n.dir.path().join(f);
        if p.exists() {
            std::fs::remove_file(p).unwrap();
        }
    }
    n.assert_empty("after a restart");
}

#[test]
fn containers_a_dead_monitor_left_are_killed_and_reported_exited() {
    let n = Node::new();
    let pod = n.run_pod("web").unwrap();
    let c = n.create(&pod, "app").unwrap();
    n.rt.containers.start(&c).unwrap();
    // The monitor dies: its container's process lives on, and nobody owns it.
    n.host.world().monitors.clear();
    // The next call that needs the monitor starts a new one, which kills the orphan through
    // the runtime it is told about.
    let other = n.create(&pod, "other").unwrap();
    n.rt.containers.start(&other).unwrap();
    let view = n.rt.container_status(&c, false).unwrap().record;
    assert_eq!(view.state, ContainerState::Exited, "{}", view.message);
    assert_eq!(view.exit_code, 137);
    assert!(view.message.contains("monitor"), "{}", view.message);
    let kills = n.host.world().foreign_kills.clone();
    assert_eq!(kills, vec![(c.clone(), PathBuf::from("/usr/bin/runc"))]);
    assert_eq!(state_of(&n.rt, &other), ContainerState::Running);
    n.rt.remove_pod(&pod).unwrap();
    n.assert_empty("after the pod");
}

#[test]
fn no_container_is_ever_created_into_a_removed_pod() {
    // CreateContainer racing RemovePodSandbox: whatever the interleaving, every container
    // left has its pod, and removing the pods leaves nothing.
    let n = Arc::new(Node::new());
    for round in 0..20 {
        let pod = n.run_pod(&format!("p{round}")).unwrap();
        let creators: Vec<_> = (0..3)
            .map(|i| {
                let (n, pod) = (n.clone(), pod.clone());
                std::thread::spawn(move || {
                    let _ = n.create(&pod, &format!("c{i}"));
                })
            })
            .collect();
        n.rt.remove_pod(&pod).unwrap();
        for t in creators {
            t.join().unwrap();
        }
        for c in n.rt.containers.list(&ContainerFilter::default()) {
            assert!(
                n.rt.pods.find(&c.pod_id).unwrap().is_some(),
                "round {round}: container {} outlived its pod",
                c.id
            );
        }
    }
    n.assert_empty("after every round");
}
