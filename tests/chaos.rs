//! The chaos suite (issue 11): random CRI operations against a real criusd (bridge network
//! through crius's CNI plugins, runc or crun) while SIGKILL hits criusd and the pod monitors at
//! random moments, with the invariants checked after every restart.
//!
//! A kill comes from a separate task after a random delay, so it lands inside an RPC. An RPC cut
//! by a kill is "unknown": either outcome is accepted, but what it may have built must then be
//! listed (and is undone by the client through CRI) or left nothing behind after the restart.
//! Leak checks look only at what this test's daemon made: its temp dir (mounts, state files),
//! processes carrying its environment tag (monitors, crius-init, runtimes, plugins), its pods'
//! cgroup parent, its bridge and IPAM directory, nft rules of its subnet.
//!
//! `CHAOS_SEED`, `CHAOS_OPS` (60), `CHAOS_KILLS` (6), `CHAOS_RUNTIME` (runc|crun, default runc)
//! choose the run; `hack/chaos.sh` runs the long form on both runtimes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use common::CRIUSD;
use common::pods::{container, prepare_runtime};
use crius_testkit::{Daemon, DaemonOptions, FaultMode, Proxy, Registry, image, push_image};
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, LinuxPodSandboxConfig, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxState, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};

/// Every RPC of the suite is bounded: a hang is a violation, not a stuck CI job.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_PODS: usize = 4;
const MAX_CONTAINERS_PER_POD: usize = 3;

/// splitmix64: a seeded, reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len() as u64) as usize])
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the client may see of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodExpect {
    Ready,
    NotReady,
    Either,
}

#[derive(Debug, Clone)]
struct PodModel {
    name: String,
    expect: PodExpect,
}

/// What the client may see of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtrExpect {
    Created,
    Running,
    /// Started, with a command that exits by itself.
    RunningOrExited,
    Exited,
    /// After an unknown outcome or a killed monitor.
    Any,
}

#[derive(Debug, Clone)]
struct CtrModel {
    pod: String,
    name: String,
    /// `Some(n)`: the command is `exit n`; `None`: it sleeps.
    exits_with: Option<i32>,
    expect: CtrExpect,
    /// The exit code once seen; it must never change afterwards.
    seen_exit: Option<i32>,
    /// False once its monitor was killed or a stop may have killed it: any code is true then.
    code_certain: bool,
}

#[derive(Default)]
struct Model {
    pods: BTreeMap<String, PodModel>,
    ctrs: BTreeMap<String, CtrModel>,
    /// Ids the client removed (acknowledged): nothing of them may exist.
    removed_pods: BTreeSet<String>,
    removed_ctrs: BTreeSet<String>,
    /// Creations cut by a kill, by name: looked up after the restart.
    unknown_pod_names: Vec<String>,
    unknown_ctr_names: Vec<(String, String)>,
    /// Failed (not cut) creations, by name: must never be listed.
    failed_pod_names: BTreeSet<String>,
    failed_ctr_names: BTreeSet<String>,
    /// Removals cut by a kill: the client repeats them after the restart.
    unknown_pod_removals: BTreeSet<String>,
    unknown_ctr_removals: BTreeSet<String>,
}

impl Model {
    fn ctrs_of(&self, pod: &str) -> Vec<String> {
        self.ctrs
            .iter()
            .filter(|(_, c)| c.pod == pod)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A bridge network of its own: a unique bridge name, subnet and IPAM directory.
struct Net {
    bridge: String,
    subnet_prefix: String,
    data_dir: PathBuf,
    conf_dir: PathBuf,
}

impl Net {
    fn new(dir: &Path, n: u16) -> Result<Net> {
        let bridge = format!("crc{n:04x}");
        let subnet_prefix = format!("10.{}.{}", 150 + (n % 40), (n >> 8) % 250);
        let conf_dir = dir.join("net.d");
        let data_dir = dir.join("ipam");
        std::fs::create_dir_all(&conf_dir)?;
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("net-{bridge}"),
            "plugins": [
                {"type": "crius-loopback"},
                {"type": "crius-bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "crius-host-local",
                          "ranges": [[{"subnet": format!("{subnet_prefix}.0/24")}]],
                          "dataDir": data_dir}},
            ]
        });
        std::fs::write(conf_dir.join("10-chaos.conflist"), conf.to_string())?;
        Ok(Net {
            bridge,
            subnet_prefix,
            data_dir,
            conf_dir,
        })
    }

    /// Host-side veths attached to the bridge.
    fn veths(&self) -> Vec<String> {
        std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// IPAM allocations: file name is the IP, content the pod id.
    fn allocations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![self.data_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned())
                    && name.parse::<std::net::IpAddr>().is_ok()
                {
                    let owner = std::fs::read_to_string(&p).unwrap_or_default();
                    let owner = owner.lines().next().unwrap_or_default().to_string();
                    out.push((name, owner));
                }
            }
        }
        out
    }

    fn nft_rules_left(&self) -> bool {
        Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).contains(&format!("{}.", self.subnet_prefix))
            })
            .unwrap_or(false)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Processes started (directly or not) by this test's daemons: they carry its tag in their
/// environment. Container processes get the spec's environment instead and are found by cgroup.
fn tagged_processes(tag: &str) -> Vec<(i32, String)> {
    let needle = format!("CRIUS_CHAOS_TAG={tag}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // Zombies have no command line: they are gone once reaped.
            if !cmd.trim().is_empty() {
                out.push((pid, cmd.trim().to_string()));
            }
        }
    }
    out
}

/// `(hierarchy-relative path, pids)` of every cgroup at or below `parent` in every v1 hierarchy
/// and the unified one.
fn cgroups_under(parent: &str) -> Vec<(PathBuf, Vec<i32>)> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let base = h.path().join(parent.trim_start_matches('/'));
        let mut stack = vec![base];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            let procs: Vec<i32> = std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            out.push((d, procs));
        }
    }
    out
}

/// Removes the test's cgroup parent, deepest first (the kubelet's part of cleanup).
fn remove_cgroup_tree(parent: &str) {
    let mut dirs: Vec<PathBuf> = cgroups_under(parent).into_iter().map(|(d, _)| d).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
}

struct Chaos {
    daemon: Daemon,
    net: Net,
    rng: Rng,
    model: Model,
    tag: String,
    cgroup_parent: String,
    log_dir: tempfile::TempDir,
    handler: String,
    seq: u64,
    violations: Vec<String>,
    ops_done: u64,
    kills_criusd: u64,
    kills_monitor: u64,
    restarts: u64,
    /// Pods and containers acknowledged as created: a run that builds nothing proves nothing.
    created: u64,
    /// Operations whose RPC was cut by a kill.
    unknown_ops: u64,
    _registry: Registry,
    _proxy: Proxy,
    _dir: tempfile::TempDir,
}

impl Chaos {
    fn violation(&mut self, what: String) {
        eprintln!("chaos: VIOLATION after op {}: {what}", self.ops_done);
        self.violations
            .push(format!("op {}: {what}", self.ops_done));
    }

    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "chaos".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.log_dir.path().join(name).display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{name}", self.cgroup_parent),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs `op` with a kill of criusd armed to fire after a random delay when `kill` is set.
    /// Returns the op's result and whether the kill fired before the op finished.
    async fn with_kill<T>(
        &mut self,
        kill: bool,
        op: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> (Result<T, tonic::Status>, bool) {
        let fired = Arc::new(AtomicBool::new(false));
        let killer = kill.then(|| {
            // Most RPCs take 5-60 ms here: the delay lands inside many of them.
            let delay = Duration::from_micros(self.rng.below(40_000));
            let pid = self.daemon.pid().expect("daemon runs") as i32;
            let fired = fired.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                fired.store(true, Ordering::SeqCst);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            })
        });
        let result = match tokio::time::timeout(RPC_TIMEOUT, op).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded("chaos: RPC hung")),
        };
        let cut = fired.load(Ordering::SeqCst);
        if let Some(k) = killer {
            if cut {
                let _ = k.await;
            } else {
                k.abort();
                let _ = k.await;
            }
        }
        if let Err(s) = &result
            && s.message() == "chaos: RPC hung"
        {
            self.violation("an RPC did not answer within 60 s".into());
        }
        (result, cut || fired.load(Ordering::SeqCst))
    }

    async fn rt(
        &self,
    ) -> Result<k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>>
    {
        self.daemon.runtime().await
    }

    fn next_name(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}", self.seq)
    }

    async fn op(&mut self, kill: bool) -> Result<()> {
        let live_pods: Vec<String> = self.model.pods.keys().cloned().collect();
        // Ready pods with room for another container.
        let ready_pods: Vec<String> = self
            .model
            .pods
            .iter()
            .filter(|(id, p)| {
                p.expect == PodExpect::Ready
                    && self.model.ctrs_of(id).len() < MAX_CONTAINERS_PER_POD
            })
            .map(|(id, _)| id.clone())
            .collect();
        let ctrs: Vec<String> = self.model.ctrs.keys().cloned().collect();
        let created: Vec<String> = self
            .model
            .ctrs
            .iter()
            .filter(|(_, c)| c.expect == CtrExpect::Created)
            .map(|(id, _)| id.clone())
            .collect();
        let running: Vec<String> = self
            .model
            .ctrs
            .iter()
            .filter(|(_, c)| c.expect == CtrExpect::Running)
            .map(|(id, _)| id.clone())
            .collect();
        let mut rt = self.rt().await?;
        let choice = self.rng.below(100);
        let cut;
        match choice {
            0..=17 if live_pods.len() < MAX_PODS => {
                let name = self.next_name("p");
                let config = self.pod_config(&name);
                let handler = self.handler.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.run_pod_sandbox(RunPodSandboxRequest {
                            config: Some(config),
                            runtime_handler: handler,
                        })
                        .await
                        .map(|r| r.into_inner().pod_sandbox_id)
                    })
                    .await;
                cut = c;
                match r {
                    Ok(id) => {
                        self.created += 1;
                        self.model.pods.insert(
                            id,
                            PodModel {
                                name,
                                expect: PodExpect::Ready,
                            },
                        );
                    }
                    Err(_) if cut => self.model.unknown_pod_names.push(name),
                    Err(e) => {
                        eprintln!("chaos: RunPodSandbox {name} failed: {e}");
                        self.model.failed_pod_names.insert(name);
                    }
                }
            }
            0..=35 if !ready_pods.is_empty() => {
                let pod = self.rng.pick(&ready_pods).unwrap().clone();
                let name = self.next_name("c");
                let exits_with = (self.rng.below(3) == 0).then(|| self.rng.below(120) as i32 + 1);
                let cmd: Vec<String> = match exits_with {
                    Some(n) => vec!["sh".into(), "-c".into(), format!("sleep 0.2; exit {n}")],
                    None => vec!["sleep".into(), "3600".into()],
                };
                let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                let mut config = container(&name, &cmd);
                config.log_path = format!("{name}.log");
                let pod_id = pod.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.create_container(CreateContainerRequest {
                            pod_sandbox_id: pod_id,
                            config: Some(config),
                            sandbox_config: None,
                        })
                        .await
                        .map(|r| r.into_inner().container_id)
                    })
                    .await;
                cut = c;
                match r {
                    Ok(id) => {
                        self.created += 1;
                        self.model.ctrs.insert(
                            id,
                            CtrModel {
                                pod,
                                name,
                                exits_with,
                                expect: CtrExpect::Created,
                                seen_exit: None,
                                code_certain: true,
                            },
                        );
                    }
                    Err(_) if cut => self.model.unknown_ctr_names.push((pod, name)),
                    Err(e) => {
                        eprintln!("chaos: CreateContainer {name} failed: {e}");
                        self.model.failed_ctr_names.insert(name);
                    }
                }
            }
            0..=50 if !created.is_empty() => {
                let id = self.rng.pick(&created).unwrap().clone();
                let cid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.start_container(StartContainerRequest { container_id: cid })
                            .await
                            .map(drop)
                    })
                    .await;
                cut = c;
                let m = self.model.ctrs.get_mut(&id).unwrap();
                match r {
                    Ok(()) => {
                        m.expect = if m.exits_with.is_some() {
                            CtrExpect::RunningOrExited
                        } else {
                            CtrExpect::Running
                        }
                    }
                    Err(_) if cut => m.expect = CtrExpect::Any,
                    // A failed start (e.g. its monitor was killed meanwhile) may leave it
                    // created or exited.
                    Err(e) => {
                        eprintln!("chaos: StartContainer failed: {e}");
                        m.expect = CtrExpect::Any;
                    }
                }
            }
            0..=58 if !running.is_empty() => {
                let id = self.rng.pick(&running).unwrap().clone();
                let cid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.exec_sync(ExecSyncRequest {
                            container_id: cid,
                            cmd: vec!["echo".into(), "chaos".into()],
                            timeout: 10,
                        })
                        .await
                        .map(|r| r.into_inner())
                    })
                    .await;
                cut = c;
                if let Ok(out) = r
                    && (out.exit_code != 0 || out.stdout != b"chaos\n")
                {
                    self.violation(format!(
                        "ExecSync in {id}: exit {} stdout {:?}",
                        out.exit_code,
                        String::from_utf8_lossy(&out.stdout)
                    ));
                }
            }
            0..=66 if !ctrs.is_empty() => {
                let id = self.rng.pick(&ctrs).unwrap().clone();
                let cid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.stop_container(StopContainerRequest {
                            container_id: cid,
                            timeout: 0,
                        })
                        .await
                        .map(drop)
                    })
                    .await;
                cut = c;
                let m = self.model.ctrs.get_mut(&id).unwrap();
                match r {
                    Ok(()) => {
                        if m.seen_exit.is_none() {
                            // A stop kills it, unless it exited by itself first.
                            m.code_certain = false;
                        }
                        m.expect = CtrExpect::Exited;
                    }
                    _ => {
                        if m.seen_exit.is_none() {
                            m.code_certain = false;
                        }
                        if m.expect != CtrExpect::Exited {
                            m.expect = CtrExpect::Any;
                        }
                    }
                }
            }
            0..=74 if !ctrs.is_empty() => {
                let id = self.rng.pick(&ctrs).unwrap().clone();
                let cid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.remove_container(RemoveContainerRequest { container_id: cid })
                            .await
                            .map(drop)
                    })
                    .await;
                cut = c;
                match r {
                    Ok(()) => {
                        self.model.ctrs.remove(&id);
                        self.model.removed_ctrs.insert(id);
                    }
                    Err(e) => {
                        if !cut {
                            eprintln!("chaos: RemoveContainer failed: {e}");
                        }
                        self.model.unknown_ctr_removals.insert(id);
                    }
                }
            }
            0..=82 if !live_pods.is_empty() => {
                let id = self.rng.pick(&live_pods).unwrap().clone();
                let pid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: pid,
                        })
                        .await
                        .map(drop)
                    })
                    .await;
                cut = c;
                let ok = r.is_ok();
                if let Err(e) = &r
                    && !cut
                {
                    eprintln!("chaos: StopPodSandbox failed: {e}");
                }
                self.model.pods.get_mut(&id).unwrap().expect = if ok {
                    PodExpect::NotReady
                } else {
                    PodExpect::Either
                };
                for cid in self.model.ctrs_of(&id) {
                    let m = self.model.ctrs.get_mut(&cid).unwrap();
                    if m.seen_exit.is_none() {
                        m.code_certain = false;
                    }
                    if ok {
                        m.expect = CtrExpect::Exited;
                    } else if m.expect != CtrExpect::Exited {
                        m.expect = CtrExpect::Any;
                    }
                }
            }
            0..=90 if !live_pods.is_empty() => {
                let id = self.rng.pick(&live_pods).unwrap().clone();
                let pid = id.clone();
                let (r, c) = self
                    .with_kill(kill, async {
                        rt.remove_pod_sandbox(RemovePodSandboxRequest {
                            pod_sandbox_id: pid,
                        })
                        .await
                        .map(drop)
                    })
                    .await;
                cut = c;
                match r {
                    Ok(()) => self.forget_pod(&id),
                    Err(e) => {
                        if !cut {
                            eprintln!("chaos: RemovePodSandbox failed: {e}");
                        }
                        self.model.unknown_pod_removals.insert(id);
                    }
                }
            }
            0..=95 => {
                let mut images = self.daemon.images().await?;
                let (r, c) = self
                    .with_kill(kill, async {
                        images
                            .pull_image(k8s_cri::v1::PullImageRequest {
                                image: common::spec("busybox"),
                                auth: None,
                                sandbox_config: None,
                            })
                            .await
                            .map(drop)
                    })
                    .await;
                cut = c;
                if let Err(e) = r
                    && !cut
                {
                    self.violation(format!("PullImage failed without a kill: {e}"));
                }
            }
            _ => {
                // A plain restart (kill -9 between RPCs).
                self.daemon.kill9();
                self.ops_done += 1;
                return self.restart_and_check().await;
            }
        }
        self.ops_done += 1;
        if kill {
            // A kill that came after the RPC answered still happens, between RPCs.
            self.daemon.kill9();
            self.unknown_ops += u64::from(cut);
            self.restart_and_check().await?;
        }
        Ok(())
    }

    fn forget_pod(&mut self, id: &str) {
        self.model.pods.remove(id);
        self.model.unknown_pod_removals.remove(id);
        self.model.removed_pods.insert(id.to_string());
        for cid in self.model.ctrs_of(id) {
            self.model.ctrs.remove(&cid);
            self.model.unknown_ctr_removals.remove(&cid);
            self.model.removed_ctrs.insert(cid);
        }
    }

    /// Kills one pod's monitor: its containers' exits can no longer be recorded, so each is
    /// reported exited (any code) from then on, or still running until that is noticed.
    fn kill_a_monitor(&mut self) -> bool {
        let monitors: Vec<(i32, String)> = tagged_processes(&self.tag)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("crius-monitor"))
            .collect();
        let Some((pid, cmd)) = self.rng.pick(&monitors).cloned() else {
            return false;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.kills_monitor += 1;
        for m in self.model.ctrs.values_mut() {
            if cmd.contains(&format!("--pod-id {}", m.pod)) {
                m.code_certain = false;
                if m.expect != CtrExpect::Exited {
                    m.expect = CtrExpect::Any;
                }
            }
        }
        true
    }

    async fn restart_and_check(&mut self) -> Result<()> {
        let started = Instant::now();
        self.daemon.restart().await?;
        self.restarts += 1;
        eprintln!(
            "chaos: restart {} took {:?}",
            self.restarts,
            started.elapsed()
        );
        if started.elapsed() > Duration::from_secs(5) {
            self.print_warnings();
        }
        self.resolve_unknowns().await?;
        self.check().await
    }

    /// What a client does after a cut RPC: finds out whether a creation happened (adopting what
    /// it finds), and repeats removals.
    async fn resolve_unknowns(&mut self) -> Result<()> {
        let mut rt = self.rt().await?;
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        for name in std::mem::take(&mut self.model.unknown_pod_names) {
            if let Some(p) = pods
                .iter()
                .find(|p| p.metadata.as_ref().is_some_and(|m| m.name == name))
            {
                self.model.pods.insert(
                    p.id.clone(),
                    PodModel {
                        name,
                        expect: PodExpect::Either,
                    },
                );
            }
        }
        let ctrs = rt
            .list_containers(ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        for (pod, name) in std::mem::take(&mut self.model.unknown_ctr_names) {
            if let Some(c) = ctrs
                .iter()
                .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            {
                self.model.ctrs.insert(
                    c.id.clone(),
                    CtrModel {
                        pod,
                        name,
                        exits_with: None,
                        expect: CtrExpect::Any,
                        seen_exit: None,
                        code_certain: false,
                    },
                );
            }
        }
        for id in std::mem::take(&mut self.model.unknown_ctr_removals) {
            match rt
                .remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
            {
                Ok(_) => {
                    self.model.ctrs.remove(&id);
                    self.model.removed_ctrs.insert(id);
                }
                Err(e) => self.violation(format!("repeating RemoveContainer {id}: {e}")),
            }
        }
        for id in std::mem::take(&mut self.model.unknown_pod_removals) {
            match rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                Ok(_) => self.forget_pod(&id),
                Err(e) => self.violation(format!("repeating RemovePodSandbox {id}: {e}")),
            }
        }
        Ok(())
    }

    /// The invariants: listings match the model, states are true, and nothing exists for what
    /// was removed or never acknowledged.
    async fn check(&mut self) -> Result<()> {
        let mut rt = self.rt().await?;
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        let listed: BTreeMap<String, i32> = pods.iter().map(|p| (p.id.clone(), p.state)).collect();
        let mut found = Vec::new();
        for (id, m) in &self.model.pods {
            match listed.get(id) {
                None => found.push(format!("pod {id} ({}) is not listed", m.name)),
                Some(s) => {
                    let ready = *s == PodSandboxState::SandboxReady as i32;
                    let ok = match m.expect {
                        PodExpect::Ready => ready,
                        PodExpect::NotReady => !ready,
                        PodExpect::Either => true,
                    };
                    if !ok {
                        found.push(format!(
                            "pod {id} ({}) is {s}, expected {:?}",
                            m.name, m.expect
                        ));
                    }
                }
            }
        }
        for p in &pods {
            if !self.model.pods.contains_key(&p.id) {
                let name = p
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                found.push(format!(
                    "pod {} ({name}) is listed but was never acknowledged or was removed",
                    p.id
                ));
            }
        }
        let ctrs = rt
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter::default()),
            })
            .await?
            .into_inner()
            .containers;
        for c in &ctrs {
            if !self.model.ctrs.contains_key(&c.id) {
                let name = c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                found.push(format!(
                    "container {} ({name}) is listed but was never acknowledged or was removed",
                    c.id
                ));
            }
        }
        let ids: Vec<String> = self.model.ctrs.keys().cloned().collect();
        for id in ids {
            let st = match rt
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    found.push(format!("container {id}: status failed: {e}"));
                    continue;
                }
            };
            let s = st.status.clone().unwrap_or_default();
            let m = self.model.ctrs.get_mut(&id).unwrap();
            let state =
                ContainerState::try_from(s.state).unwrap_or(ContainerState::ContainerUnknown);
            let ok = matches!(
                (m.expect, state),
                (CtrExpect::Any, _)
                    | (CtrExpect::Created, ContainerState::ContainerCreated)
                    | (
                        CtrExpect::Running | CtrExpect::RunningOrExited,
                        ContainerState::ContainerRunning
                    )
                    | (
                        CtrExpect::RunningOrExited | CtrExpect::Exited,
                        ContainerState::ContainerExited
                    )
            );
            if !ok {
                found.push(format!(
                    "container {id} ({}) is {state:?}, expected {:?}",
                    m.name, m.expect
                ));
            }
            if state == ContainerState::ContainerRunning {
                // A running container's process really runs.
                let pid = serde_json::from_str::<serde_json::Value>(
                    st.info.get("info").map(String::as_str).unwrap_or("{}"),
                )
                .ok()
                .and_then(|v| v["pid"].as_i64())
                .unwrap_or(0);
                if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                    found.push(format!(
                        "container {id} is listed running but its pid {pid} is gone"
                    ));
                }
            }
            if state == ContainerState::ContainerExited {
                match m.seen_exit {
                    Some(code) if code != s.exit_code => found.push(format!(
                        "container {id} exit code changed from {code} to {}",
                        s.exit_code
                    )),
                    Some(_) => {}
                    None => {
                        if m.code_certain
                            && let Some(want) = m.exits_with
                            && want != s.exit_code
                        {
                            found.push(format!(
                                "container {id} exited with {}, its command exits with {want}",
                                s.exit_code
                            ));
                        }
                        m.seen_exit = Some(s.exit_code);
                    }
                }
                m.expect = CtrExpect::Exited;
            } else if m.seen_exit.is_some() {
                found.push(format!("container {id} exited before and is now {state:?}"));
            }
        }
        for name in &self.model.failed_pod_names {
            if pods
                .iter()
                .any(|p| p.metadata.as_ref().is_some_and(|m| &m.name == name))
            {
                found.push(format!(
                    "pod {name}: RunPodSandbox failed but the pod is listed"
                ));
            }
        }
        for name in &self.model.failed_ctr_names {
            if ctrs
                .iter()
                .any(|c| c.metadata.as_ref().is_some_and(|m| &m.name == name))
            {
                found.push(format!(
                    "container {name}: CreateContainer failed but it is listed"
                ));
            }
        }
        found.extend(self.leaks());
        if !found.is_empty() {
            self.print_warnings();
        }
        for f in found {
            self.violation(f);
        }
        Ok(())
    }

    /// What the daemon said around its last start: its warnings and recovery steps.
    fn print_warnings(&self) {
        {
            let log = self.daemon.log();
            let since = log.rfind("pod records loaded").unwrap_or(0);
            let start = log[..since].rfind('\n').map_or(0, |i| i + 1);
            let before = log[..start].lines().rev().take(200).collect::<Vec<_>>();
            let warnings: Vec<&str> = before
                .into_iter()
                .rev()
                .chain(log[start..].lines())
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("recovery"))
                .collect();
            eprintln!(
                "chaos: daemon warnings around the restart:\n{}",
                warnings.join("\n")
            );
        }
    }

    /// Everything of this daemon on the host that belongs to no pod or container the client
    /// still has.
    fn leaks(&self) -> Vec<String> {
        let mut found = Vec::new();
        let live: BTreeSet<&str> = self
            .model
            .pods
            .keys()
            .chain(self.model.ctrs.keys())
            .map(String::as_str)
            .collect();
        let owned = |s: &str| live.iter().any(|id| s.contains(id));
        let base = self.daemon.base_dir().to_path_buf();
        let netns_dir = self.daemon.state().join("netns");
        for m in crius_testkit::cleanup::mounts_under(&base) {
            if m == netns_dir {
                continue;
            }
            if !owned(&m.to_string_lossy()) {
                found.push(format!("mount {} belongs to nothing listed", m.display()));
            }
        }
        let state = self.daemon.state();
        let root = self.daemon.root();
        for (dir, what) in [
            (state.join("pods"), "pod state dir"),
            (state.join("netns"), "netns pin"),
            (root.join("pods"), "pod record"),
            (state.join("containers"), "container bundle"),
            (root.join("containers"), "container layer or record"),
        ] {
            for name in common::dir_names(&dir) {
                if !owned(&name) {
                    found.push(format!(
                        "{what} {} belongs to nothing listed",
                        dir.join(&name).display()
                    ));
                }
            }
        }
        // Monitor sockets are named by the first 16 characters of the pod id.
        for name in common::dir_names(&state.join("m")) {
            let short = name.trim_end_matches(".sock");
            if !self.model.pods.keys().any(|id| id.starts_with(short)) {
                found.push(format!("monitor socket {name} belongs to no listed pod"));
            }
        }
        let daemon_pid = self.daemon.pid().map(|p| p as i32);
        // PID namespaces pinned for pods the client still has.
        let pinned: Vec<u64> = crius_testkit::cleanup::mounts()
            .into_iter()
            .filter(|m| m.fs_type == "nsfs" && m.mount_point.starts_with(&base))
            .filter(|m| {
                self.model
                    .pods
                    .keys()
                    .any(|id| m.mount_point.to_string_lossy().contains(id.as_str()))
            })
            .filter_map(|m| std::fs::metadata(&m.mount_point).ok().map(|md| md.ino()))
            .collect();
        for (pid, cmd) in tagged_processes(&self.tag) {
            if Some(pid) == daemon_pid {
                continue;
            }
            // A created container's `runc init` inherits the monitor's environment: it
            // belongs to the container whose cgroup it is in.
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let container = cgroup
                .lines()
                .filter_map(|l| l.rsplit('/').next())
                .filter_map(|leaf| leaf.strip_prefix("crius-"))
                .find(|cid| cid.len() == 64)
                .map(str::to_string);
            let ok = match container {
                Some(cid) => self.model.ctrs.contains_key(&cid),
                // A pod's crius-init lives in the pod's pinned PID namespace.
                None => {
                    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
                        .is_ok_and(|m| pinned.contains(&m.ino()))
                        || (cmd.contains("crius-monitor") && owned(&cmd))
                }
            };
            if !ok {
                found.push(format!("process {pid} ({cmd}) belongs to nothing listed"));
            }
        }
        for (dir, procs) in cgroups_under(&self.cgroup_parent) {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(cid) = name.strip_prefix("crius-")
                && cid.len() == 64
                && !self.model.ctrs.contains_key(cid)
            {
                found.push(format!(
                    "cgroup {} of a container not listed (procs {procs:?})",
                    dir.display()
                ));
            }
        }
        let ready_pods = self.model.pods.len();
        let veths = self.net.veths();
        if veths.len() > ready_pods {
            found.push(format!(
                "{} veths on {} for {ready_pods} pods: {veths:?}",
                veths.len(),
                self.net.bridge
            ));
        }
        for (ip, owner) in self.net.allocations() {
            if !self.model.pods.contains_key(&owner) {
                found.push(format!("IP {ip} allocated to {owner}, not a listed pod"));
            }
        }
        found
    }

    /// The client's cleanup: every pod stopped and removed through CRI, then a restart; after
    /// that nothing of the daemon may remain but the daemon.
    async fn final_cleanup(&mut self) -> Result<()> {
        let mut rt = self.rt().await?;
        let pods = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        for p in pods {
            let stop = rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await;
            let remove = rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await;
            match stop.and(remove) {
                Ok(_) => self.forget_pod(&p.id),
                Err(e) => self.violation(format!("cleanup of pod {}: {e}", p.id)),
            }
        }
        self.restart_and_check().await?;
        let mut found = Vec::new();
        if self.net.nft_rules_left() {
            found.push(format!(
                "nft rules for {}.0/24 left",
                self.net.subnet_prefix
            ));
        }
        if !self.net.veths().is_empty() {
            found.push(format!(
                "veths left on {}: {:?}",
                self.net.bridge,
                self.net.veths()
            ));
        }
        for (dir, procs) in cgroups_under(&self.cgroup_parent) {
            if !procs.is_empty() {
                found.push(format!(
                    "processes {procs:?} left in cgroup {}",
                    dir.display()
                ));
            }
        }
        for f in found {
            self.violation(f);
        }
        Ok(())
    }
}

impl Chaos {
    /// A registry with busybox, a bridge network of its own and a daemon tagged for leak
    /// checks; `env` goes to the daemon too.
    async fn start(seed: u64, handler: String, env: Vec<(String, String)>) -> Result<Chaos> {
        prepare_runtime(&handler);

        let dir = tempfile::tempdir()?;
        let mut rng = Rng(seed);
        let n = (std::process::id() as u16) ^ (rng.next() as u16);
        let net = Net::new(dir.path(), n)?;
        let tag = format!("{}-{seed}", std::process::id());
        let cgroup_parent = format!("/crius-chaos-{tag}");
        let registry = Registry::start_plain()?;
        let proxy = Proxy::start(&registry.addr(), FaultMode::PassThrough)?;
        push_image(
            &registry,
            "library/busybox",
            "latest",
            &image::busybox_image(),
        )
        .await?;
        let own_plugins = Path::new(CRIUSD).parent().context("criusd dir")?;
        let config = format!(
            "{}fallback_to_upstream = false\n\n[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\", \"/usr/lib/cni\"]\nwrite_default_config = false\n",
            crius_testkit::mirror_config(&proxy.url(), "10s"),
            net.conf_dir.display(),
            own_plugins.display(),
        );
        let mut opts = DaemonOptions::new(CRIUSD).config(config).log_level("info");
        opts.env.push(("CRIUS_CHAOS_TAG".into(), tag.clone()));
        opts.ready_timeout = Duration::from_secs(90);
        opts.env.extend(env);
        let daemon = Daemon::start(opts).await?;
        common::pull(&daemon, "busybox", None).await?;

        Ok(Chaos {
            daemon,
            net,
            rng,
            model: Model::default(),
            tag,
            cgroup_parent,
            log_dir: tempfile::tempdir()?,
            handler,
            seq: 0,
            violations: Vec::new(),
            ops_done: 0,
            kills_criusd: 0,
            kills_monitor: 0,
            restarts: 0,
            created: 0,
            unknown_ops: 0,
            _registry: registry,
            _proxy: proxy,
            _dir: dir,
        })
    }
}

/// Random CRI operations with SIGKILLs of criusd and pod monitors; zero violations expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_chaos_random_operations_with_kills() -> Result<()> {
    let seed = env_u64(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    );
    let ops = env_u64("CHAOS_OPS", 60);
    let kills = env_u64("CHAOS_KILLS", 6);
    let handler = std::env::var("CHAOS_RUNTIME").unwrap_or_else(|_| "runc".into());
    eprintln!(
        "chaos: seed {seed} ops {ops} kills {kills} runtime {handler} (CHAOS_SEED={seed} reproduces)"
    );
    let mut chaos = Chaos::start(seed, handler, Vec::new()).await?;
    let started = Instant::now();
    let result = run(&mut chaos, ops, kills).await;
    let summary = format!(
        "chaos: seed {seed} runtime {}: {} ops ({} pods and containers created), {} criusd kills ({} cut an RPC), {} monitor kills, {} restarts, {} violations in {:?}",
        chaos.handler,
        chaos.ops_done,
        chaos.created,
        chaos.kills_criusd,
        chaos.unknown_ops,
        chaos.kills_monitor,
        chaos.restarts,
        chaos.violations.len(),
        started.elapsed()
    );
    eprintln!("{summary}");
    let cgroup_parent = chaos.cgroup_parent.clone();
    let created = chaos.created;
    let violations = std::mem::take(&mut chaos.violations);
    let log = chaos.daemon.log_tail(60);
    drop(chaos);
    remove_cgroup_tree(&cgroup_parent);
    result?;
    assert!(created > 0, "{summary}: nothing was created\n{log}");
    assert!(
        violations.is_empty(),
        "{summary}\n{}\n--- daemon log tail ---\n{log}",
        violations.join("\n")
    );
    Ok(())
}

async fn run(chaos: &mut Chaos, ops: u64, kills: u64) -> Result<()> {
    let mut kills_left = kills;
    for i in 0..ops {
        let ops_left = ops - i;
        // Spread the kills over the run: each op is hit with probability kills_left/ops_left.
        let kill = chaos.rng.below(ops_left) < kills_left;
        if kill {
            kills_left -= 1;
            // One kill in four hits a pod monitor instead of criusd.
            // (criusd instead when no monitor runs).
            if chaos.rng.below(4) == 0 && chaos.kill_a_monitor() {
                chaos.op(false).await?;
                continue;
            }
            chaos.kills_criusd += 1;
        }
        chaos.op(kill).await?;
    }
    chaos.final_cleanup().await
}

/// A crash at each named step of RunPodSandbox and CreateContainer (criusd aborts there,
/// `CRIUS_TEST_CRASH_AT_FILE`): after the restart the pod or container is listed when its
/// record was written and nothing of it exists otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_a_crash_at_each_step_is_finished_or_undone_by_the_restart() -> Result<()> {
    let crash_dir = tempfile::tempdir()?;
    let crash_file = crash_dir.path().join("crash-at");
    let handler = std::env::var("CHAOS_RUNTIME").unwrap_or_else(|_| "runc".into());
    let mut chaos = Chaos::start(
        0x5eed_c0de,
        handler.clone(),
        vec![(
            "CRIUS_TEST_CRASH_AT_FILE".into(),
            crash_file.display().to_string(),
        )],
    )
    .await?;
    let result = crash_steps(&mut chaos, &crash_file, &handler).await;
    let cgroup_parent = chaos.cgroup_parent.clone();
    let violations = std::mem::take(&mut chaos.violations);
    let log = chaos.daemon.log_tail(60);
    drop(chaos);
    remove_cgroup_tree(&cgroup_parent);
    result?;
    assert!(
        violations.is_empty(),
        "{}\n--- daemon log tail ---\n{log}",
        violations.join("\n")
    );
    Ok(())
}

async fn crash_steps(chaos: &mut Chaos, crash_file: &Path, handler: &str) -> Result<()> {
    // Steps before the record: nothing may be listed; the record step: listed.
    let pod_steps = [
        ("pod.dir", false),
        ("pod.pinned", false),
        ("pod.shm", false),
        ("pod.network", false),
        ("pod.record", true),
    ];
    for (step, listed) in pod_steps {
        std::fs::write(crash_file, step)?;
        let name = chaos.next_name("p");
        let config = chaos.pod_config(&name);
        let r = chaos
            .rt()
            .await?
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.into(),
            })
            .await;
        assert!(r.is_err(), "{step}: RunPodSandbox answered {r:?}");
        assert!(
            !crash_file.exists(),
            "{step}: criusd never reached the step"
        );
        chaos.model.unknown_pod_names.push(name.clone());
        chaos.restart_and_check().await?;
        let found = chaos.model.pods.values().any(|p| p.name == name);
        assert_eq!(found, listed, "{step}: pod listed after the restart");
        eprintln!(
            "chaos: crash at {step}: {} violations so far",
            chaos.violations.len()
        );
    }
    // A pod to create containers in (the one recorded above, if listed, is removed first).
    let leftovers: Vec<String> = chaos.model.pods.keys().cloned().collect();
    for id in leftovers {
        let mut rt = chaos.rt().await?;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        chaos.forget_pod(&id);
    }
    let name = chaos.next_name("p");
    let config = chaos.pod_config(&name);
    let pod = chaos
        .rt()
        .await?
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    chaos.model.pods.insert(
        pod.clone(),
        PodModel {
            name,
            expect: PodExpect::Ready,
        },
    );
    let ctr_steps = [
        ("container.rootfs", false),
        ("container.spec", false),
        ("container.record", true),
    ];
    for (step, listed) in ctr_steps {
        std::fs::write(crash_file, step)?;
        let name = chaos.next_name("c");
        let r = chaos
            .rt()
            .await?
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container(&name, &["sleep", "3600"])),
                sandbox_config: None,
            })
            .await;
        assert!(r.is_err(), "{step}: CreateContainer answered {r:?}");
        assert!(
            !crash_file.exists(),
            "{step}: criusd never reached the step"
        );
        chaos
            .model
            .unknown_ctr_names
            .push((pod.clone(), name.clone()));
        chaos.restart_and_check().await?;
        let found = chaos.model.ctrs.values().any(|c| c.name == name);
        assert_eq!(found, listed, "{step}: container listed after the restart");
        eprintln!(
            "chaos: crash at {step}: {} violations so far",
            chaos.violations.len()
        );
    }
    // StartContainer cut between the runtime's create and the record's save: the record
    // still says created while the runtime has the container. The restart must not lose
    // it, and its removal (final_cleanup) must leave nothing of it in the runtime.
    let step = "container.runtime_created";
    let name = chaos.next_name("c");
    let id = chaos
        .rt()
        .await?
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container(&name, &["sleep", "3600"])),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id;
    chaos.model.ctrs.insert(
        id.clone(),
        CtrModel {
            pod: pod.clone(),
            name,
            exits_with: None,
            expect: CtrExpect::Any,
            seen_exit: None,
            code_certain: false,
        },
    );
    std::fs::write(crash_file, step)?;
    let r = chaos
        .rt()
        .await?
        .start_container(StartContainerRequest { container_id: id })
        .await;
    assert!(r.is_err(), "{step}: StartContainer answered {r:?}");
    assert!(
        !crash_file.exists(),
        "{step}: criusd never reached the step"
    );
    chaos.restart_and_check().await?;
    eprintln!(
        "chaos: crash at {step}: {} violations so far",
        chaos.violations.len()
    );
    chaos.final_cleanup().await
}
