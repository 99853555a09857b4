//! The container manager: Create, Start, Stop, Remove, status and listing, ExecSync and log
//! reopening. Containers run under their pod's monitor (crius-monitor), which owns their stdio,
//! writes their logs and records their exits in `<pod dir>/exits/<id>`; those exit files are
//! the truth about exits, also for exits that happened while criusd was down.
//!
//! ```text
//!   Create ──▶ Created ──Start──▶ Running ──(exit, Stop)──▶ Exited ──Remove──▶ (gone)
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crius_monitor::{CreateRequest, ExecRequest, MonitorClient};
use crius_oci::{
    ImageConfig, NsSource, OciRuntime, PodFiles, PodNamespaces, SpecFeatures, SpecInput,
};
use crius_state::{create_dir_all, create_dir_with_mode, read_json};
use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{RuntimeError, invalid, io_err, removed};
use crate::events::EventKind;
use crate::exit_watch::ExitWatch;
use crate::ids::{new_id, resolve};
use crate::keylocks::KeyLocks;
use crate::pods::PodManager;
use crate::record::{PodRecord, PodState};
use crate::records::{RecordLocks, Save};
use crate::rollback::Rollback;
use crate::rootfs;

mod attach;
mod stream_exec;
pub use stream_exec::ExecPlan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// The image's name as containerd reports it (its first repo tag, else the request's
    /// name), its id, and the reference it was pulled by.
    pub image: String,
    /// The image as the request named it (`user_specified_image`); empty in older records.
    #[serde(default)]
    pub user_image: String,
    pub image_id: String,
    pub image_ref: String,
    pub runtime_handler: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// The CRI log file (pod log_directory joined with the container's log_path).
    pub log_path: PathBuf,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// `<root>/containers/<id>`: upper and work dirs.
    pub layer_dir: PathBuf,
    pub stop_signal: String,
    /// Self bind mounts made shared for volumes with propagation; unmounted when no container
    /// uses them any more.
    #[serde(default)]
    pub shared_binds: Vec<PathBuf>,
}

/// What the caller resolved about the image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub reference: String,
    /// The first repo tag, if the image has one.
    pub tag: Option<String>,
    pub config: serde_json::Value,
    pub layers_dir: PathBuf,
    /// Relative to `layers_dir`, top layer first.
    pub lower: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ContainerManagerOptions {
    /// `<root>/containers`: records (`<id>.json`) and writable layers (`<id>/`).
    pub root_dir: PathBuf,
    /// `<state>/containers`: bundles and rootfs mount points.
    pub state_dir: PathBuf,
    /// `<state>/runtime`: the OCI runtimes' `--root` dirs, one per handler.
    pub runtime_root: PathBuf,
    pub monitor_binary: PathBuf,
    /// `<state>/m`: monitor sockets, with short names (a Unix socket path must fit 108 bytes).
    pub monitor_socket_dir: PathBuf,
    pub handlers: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub pod_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: BTreeMap<String, String>,
}

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

pub struct ContainerManager {
    opts: ContainerManagerOptions,
    pods: Arc<PodManager>,
    containers: Mutex<BTreeMap<String, ContainerRecord>>,
    locks: KeyLocks,
    records: RecordLocks,
    exec_slots: ExecSlots,
    features: SpecFeatures,
    oom_floor: Option<i64>,
    exit_watch: ExitWatch,
}

/// Marks a container whose exit its monitor could not record (the monitor died).
fn mark_lost(c: &mut ContainerRecord, code: i32, reason: &str, what: &str) {
    c.state = ContainerState::Exited;
    c.exit_code = code;
    c.finished_at = now();
    if c.started_at == 0 {
        c.started_at = c.finished_at;
    }
    c.reason = reason.into();
    c.message = format!(
        "the pod's monitor process exited unexpectedly, so the container's output and exit \
         could no longer be collected; {what}"
    );
}

/// How many ExecSync calls may run at once, per container and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    pub per_container: usize,
    pub total: usize,
}

impl Default for ExecLimits {
    /// Generous for probes (a few per container), and below tokio's 512 blocking threads so
    /// waiting execs never starve the other RPCs.
    fn default() -> Self {
        ExecLimits {
            per_container: 64,
            total: 256,
        }
    }
}

#[derive(Default)]
struct ExecSlots {
    limits: Mutex<ExecLimits>,
    running: Mutex<(usize, BTreeMap<String, usize>)>,
}

/// One running ExecSync; released on drop.
struct ExecSlot<'a> {
    slots: &'a ExecSlots,
    id: String,
}

impl ExecSlots {
    fn acquire(&self, id: &str) -> Result<ExecSlot<'_>, RuntimeError> {
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *running;
        let mine = per.get(id).copied().unwrap_or(0);
        let too_many = |limit, scope| RuntimeError::TooManyExecs {
            id: id.into(),
            limit,
            scope,
        };
        if mine >= limits.per_container {
            return Err(too_many(limits.per_container, "in this container"));
        }
        if *total >= limits.total {
            return Err(too_many(limits.total, "on this node"));
        }
        *total += 1;
        per.insert(id.to_owned(), mine + 1);
        Ok(ExecSlot {
            slots: self,
            id: id.to_owned(),
        })
    }
}

impl Drop for ExecSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *running;
        *total -= 1;
        if let Some(n) = per.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.id);
            }
        }
    }
}

/// Lets the caller of [`ContainerManager::exec_sync`] abandon it from another thread.
#[derive(Clone, Default)]
pub struct ExecCancel(Arc<Mutex<(bool, Option<std::os::unix::net::UnixStream>)>>);

impl ExecCancel {
    /// Makes a running exec call return at once; the monitor then kills the process.
    pub fn cancel(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        if let Some(s) = &g.1 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Registers the exec's connection; false when already cancelled.
    fn arm(&self, conn: std::os::unix::net::UnixStream) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 {
            return false;
        }
        g.1 = Some(conn);
        true
    }
}

/// Bounds every call to a pod monitor: above the monitor's own limit for a runtime command
/// (120 s), so the monitor reports a stuck runtime itself; only a hung monitor hits this.
const MONITOR_CALL_TIMEOUT: Duration = Duration::from_secs(130);
/// An exec's call may take this much longer than the exec's own timeout.
const EXEC_CALL_SLACK: Duration = Duration::from_secs(5);
/// The monitor answers `state` from memory: a refresh waits no longer than this.
const STATE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed monitor call; a call that timed out is DeadlineExceeded.
fn monitor_failed(id: &str, op: &'static str, e: std::io::Error) -> RuntimeError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return RuntimeError::MonitorTimeout { id: id.into(), op };
    }
    RuntimeError::Monitor {
        id: id.into(),
        op,
        message: e.to_string(),
    }
}

/// `log_path` is joined to the pod's log directory by root: it must stay inside it.
fn validate_log_path(log_path: &str) -> Result<(), RuntimeError> {
    const FIELD: &str = "config.log_path";
    if log_path.len() > 4096 {
        return Err(invalid(FIELD, "is longer than 4096 bytes"));
    }
    let path = Path::new(log_path);
    if path.is_absolute() {
        return Err(invalid(
            FIELD,
            format!("{log_path:?} must be relative to the pod's log_directory"),
        ));
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid(
            FIELD,
            format!("{log_path:?} must not contain \"..\""),
        ));
    }
    Ok(())
}

/// HOST_TO_CONTAINER and BIDIRECTIONAL propagation work only from a host mount that is
/// already shared (or, for HOST_TO_CONTAINER, a slave): crius never changes the host's mount
/// table to make them work, and refuses them otherwise, as containerd does.
fn check_propagation(i: usize, m: &k8s_cri::v1::Mount) -> Result<(), RuntimeError> {
    use k8s_cri::v1::MountPropagation as P;
    let (wanted, fix) = match P::try_from(m.propagation) {
        Ok(P::PropagationBidirectional) => ("shared", "rshared"),
        Ok(P::PropagationHostToContainer) => ("shared or a slave", "rshared"),
        _ => return Ok(()), // private, or unknown: refused by the spec step
    };
    if m.host_path.is_empty() {
        return Ok(()); // refused by the spec step
    }
    // A missing host path is created by the spec step on the mount of its nearest ancestor.
    let mut host = Path::new(&m.host_path);
    while !host.exists() {
        match host.parent() {
            Some(p) => host = p,
            None => break,
        }
    }
    let mount = rootfs::mount_of(host).map_err(io_err("finding the mount of", host))?;
    let ok = mount.shared || (mount.slave && wanted != "shared");
    if ok {
        return Ok(());
    }
    Err(RuntimeError::Propagation {
        field: format!("config.mounts[{i}].propagation"),
        path: PathBuf::from(&m.host_path),
        mount_point: mount.mount_point,
        wanted,
        fix,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl ContainerManager {
    /// Loads every container record, then brings each up to date from its exit file: exits
    /// that happened while criusd was down are reported with their real codes.
    pub fn open(
        opts: ContainerManagerOptions,
        pods: Arc<PodManager>,
    ) -> Result<ContainerManager, RuntimeError> {
        // No host user but root reaches a container's files (CVE-2021-41091 class): the
        // layers are under a 0700 dir, bundles under a 0711 one and each bundle is 0700.
        create_dir_with_mode(&opts.root_dir, 0o700)?;
        create_dir_with_mode(&opts.state_dir, 0o711)?;
        create_dir_all(&opts.monitor_socket_dir, 0o700)?;
        let mut containers = BTreeMap::new();
        for entry in fs::read_dir(&opts.root_dir)
            .map_err(io_err("reading", &opts.root_dir))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_json::<ContainerRecord>(&path) {
                Ok(Some(c)) => {
                    containers.insert(c.id.clone(), c);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable container record set aside");
                    let _ = fs::rename(&path, path.with_extension("json.corrupt"));
                }
            }
        }
        let features = SpecFeatures {
            recursive_read_only: false,
            memory_swap: swap_accounting(),
        };
        let mgr = ContainerManager {
            opts,
            pods,
            containers: Mutex::new(containers),
            locks: KeyLocks::default(),
            records: RecordLocks::default(),
            exec_slots: ExecSlots::default(),
            features,
            oom_floor: oom_floor(),
            exit_watch: ExitWatch::default(),
        };
        let ids: Vec<String> = mgr.lock().keys().cloned().collect();
        for id in ids {
            if let Err(e) = mgr.refresh(&id) {
                warn!(container_id = %id, error = %e, "refreshing container state");
            }
        }
        info!(containers = mgr.lock().len(), "container records loaded");
        Ok(mgr)
    }

    /// Caps concurrent ExecSync calls (config `exec_max_per_container`, `exec_max_total`).
    pub fn set_exec_limits(&self, limits: ExecLimits) {
        *self
            .exec_slots
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.opts.root_dir.join(format!("{id}.json"))
    }

    /// The OCI runtime of a container, called directly rather than through the pod's monitor.
    fn oci_runtime(&self, c: &ContainerRecord) -> Result<crius_oci::CliRuntime, RuntimeError> {
        Ok(crius_oci::CliRuntime::new(
            c.runtime_handler.clone(),
            self.runtime_path(&c.runtime_handler)?,
            self.opts.runtime_root.join(&c.runtime_handler),
            false,
        ))
    }

    /// The OCI runtime binary of a runtime handler.
    fn runtime_path(&self, handler: &str) -> Result<PathBuf, RuntimeError> {
        self.opts.handlers.get(handler).cloned().ok_or_else(|| {
            invalid(
                "runtime_handler",
                format!("unknown runtime handler {handler:?}"),
            )
        })
    }

    /// Saves an update of a record; dropped when the record was removed meanwhile (a status
    /// refresh racing a Remove must not bring it back).
    /// Saves an update and publishes the state change it makes (started, stopped).
    fn save(&self, c: &ContainerRecord) -> Result<(), RuntimeError> {
        let events = self.pods.events();
        self.records
            .save(
                &self.containers,
                &self.record_path(&c.id),
                &c.id,
                c,
                Save::Update,
                |previous| match (previous.map(|p| p.state), c.state) {
                    (Some(ContainerState::Created), ContainerState::Running) => {
                        events.publish(&c.id, &c.pod_id, EventKind::Started)
                    }
                    (Some(before), ContainerState::Exited) if before != ContainerState::Exited => {
                        events.publish(&c.id, &c.pod_id, EventKind::Stopped)
                    }
                    _ => {}
                },
            )
            .map(drop)
    }

    /// Starts noticing exits as they are recorded (see [`crate::exit_watch`]), for the pods
    /// that exist now and every one that gets a container later.
    pub fn watch_exits(self: &Arc<Self>) -> std::io::Result<()> {
        self.exit_watch.start(Arc::downgrade(self))?;
        for pod in self.pods.list(&crate::pods::PodFilter::default()) {
            let dir = Self::exit_dir(&pod);
            if dir.is_dir() {
                self.exit_watch.add(&dir);
            }
        }
        Ok(())
    }

    fn monitor_socket(&self, pod: &PodRecord) -> PathBuf {
        self.opts
            .monitor_socket_dir
            .join(format!("{}.sock", &pod.id[..pod.id.len().min(16)]))
    }

    fn exit_dir(pod: &PodRecord) -> PathBuf {
        pod.dir.join("exits")
    }

    /// The pod's monitor, started on first use, and started again if it died.
    fn monitor(&self, pod: &PodRecord) -> Result<MonitorClient, RuntimeError> {
        let client = self.monitor_unbounded(pod)?;
        client
            .set_timeout(Some(MONITOR_CALL_TIMEOUT))
            .map_err(io_err("setting a timeout on", self.monitor_socket(pod)))?;
        Ok(client)
    }

    fn monitor_unbounded(&self, pod: &PodRecord) -> Result<MonitorClient, RuntimeError> {
        let socket = self.monitor_socket(pod);
        if let Ok(c) = MonitorClient::connect(&socket) {
            return Ok(c);
        }
        // One (re)start per pod at a time: two monitors must not race for the socket.
        let _guard = self.locks.lock(&format!("monitor/{}", pod.id));
        if let Ok(c) = MonitorClient::connect(&socket) {
            return Ok(c);
        }
        let dir = pod.dir.join("monitor");
        create_dir_all(&dir, 0o700)?;
        crius_monitor::spawn_detached(&self.opts.monitor_binary, &pod.id, &dir, &socket).map_err(
            io_err("starting the pod monitor", &self.opts.monitor_binary),
        )?;
        let client = MonitorClient::connect(&socket)
            .map_err(io_err("connecting to the pod monitor", &socket))?;
        self.stop_orphans(pod)?;
        Ok(client)
    }

    /// Whether the pod's running monitor owns container `id` (and so will record its exit).
    /// Asked only once the container's process is gone without an exit file.
    fn monitor_knows(&self, pod: &PodRecord, id: &str) -> bool {
        MonitorClient::connect(&self.monitor_socket(pod))
            .and_then(|mut m| {
                // A status refresh must not hang on a hung monitor.
                m.set_timeout(Some(STATE_CALL_TIMEOUT))?;
                m.state()
            })
            .is_ok_and(|list| list.iter().any(|s| s.id == id))
    }

    /// Containers a dead monitor left behind: nothing reads their output (their next write
    /// fails) and nothing would record their exit, so they are killed and reported exited,
    /// as containerd does when a shim dies. The kubelet then restarts them per policy.
    fn stop_orphans(&self, pod: &PodRecord) -> Result<(), RuntimeError> {
        let orphans: Vec<ContainerRecord> = self
            .lock()
            .values()
            .filter(|c| c.pod_id == pod.id && c.state != ContainerState::Exited)
            .cloned()
            .collect();
        for mut c in orphans {
            if Self::exit_dir(pod).join(&c.id).exists() {
                continue; // the old monitor recorded the exit: refresh reads it
            }
            let alive = c.pid > 0 && crius_proc::alive(c.pid);
            if alive || c.state == ContainerState::Created {
                // The new monitor does not know the container: the runtime kills it directly.
                let _ = self.oci_runtime(&c)?.kill(&c.id, Signal::SIGKILL, true);
                let gone = crius_proc::poll_until(
                    Duration::from_secs(5),
                    Duration::from_millis(20),
                    || Ok::<_, RuntimeError>(!crius_proc::alive(c.pid)),
                )?;
                if !gone {
                    // Never report a container exited while its process still runs.
                    return Err(RuntimeError::Monitor {
                        id: c.id.clone(),
                        op: "stop",
                        message: "a container left by a dead monitor survived SIGKILL".into(),
                    });
                }
            }
            if alive {
                mark_lost(&mut c, 137, "Error", "crius stopped it");
            } else {
                mark_lost(&mut c, 255, "Unknown", "its exit status is unknown");
            }
            warn!(container_id = %c.id, pod_id = %pod.id, "the pod's monitor died: container marked exited");
            self.save(&c)?;
        }
        Ok(())
    }

    pub fn find(&self, id: &str) -> Result<Option<ContainerRecord>, RuntimeError> {
        if id.is_empty() {
            return Err(invalid("container_id", "must not be empty"));
        }
        let all = self.lock();
        match resolve(id, all.keys()) {
            Ok(found) => Ok(found.and_then(|id| all.get(&id).cloned())),
            Err(()) => Err(RuntimeError::Ambiguous { prefix: id.into() }),
        }
    }

    pub fn get(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        self.find(id)?
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })
    }

    pub fn create(
        &self,
        pod_id: &str,
        config: ContainerConfig,
        image: ImageInfo,
        image_name: String,
    ) -> Result<String, RuntimeError> {
        let pod = self.pods.get(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::NotReady { id: pod.id.clone() });
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("config.metadata", "is required"))?;
        if meta.name.is_empty() {
            return Err(invalid("config.metadata.name", "must not be empty"));
        }
        validate_log_path(&config.log_path)?;
        let key = format!("{}_{}_{}", meta.name, meta.attempt, pod.id);
        let _guard = self.locks.lock(&key);
        if let Some(existing) = self.lock().values().find(|c| {
            c.pod_id == pod.id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        }) {
            return Err(RuntimeError::NameInUse {
                name: meta.name.clone(),
                id: existing.id.clone(),
            });
        }
        // The stored pod config, never a copy from the request: it decides what the
        // container may be (privileged, sysctls).
        let sandbox = pod.config.clone();
        let image_config = ImageConfig::from_json(&image.config)
            .map_err(|e| invalid("image config", e.to_string()))?;

        let id = new_id();
        let layer_dir = self.opts.root_dir.join(&id);
        let bundle = self.opts.state_dir.join(&id);
        let rootfs = bundle.join("rootfs");
        let mut undo = Rollback::default();
        create_dir_with_mode(&layer_dir, 0o700)?;
        create_dir_with_mode(&bundle, 0o700)?;
        for d in [
            layer_dir.join("upper"),
            layer_dir.join("work"),
            rootfs.clone(),
        ] {
            create_dir_all(&d, 0o755)?;
        }
        undo.push({
            let (l, b) = (layer_dir.clone(), bundle.clone());
            move || {
                let _ = fs::remove_dir_all(&l);
                let _ = fs::remove_dir_all(&b);
            }
        });
        rootfs::mount_overlay(
            &image.layers_dir,
            &image.lower,
            &layer_dir.join("upper"),
            &layer_dir.join("work"),
            &rootfs,
        )
        .map_err(io_err("mounting the container rootfs", &rootfs))?;
        undo.push({
            let r = rootfs.clone();
            move || {
                let _ = rootfs::unmount(&r);
            }
        });

        for (i, m) in config.mounts.iter().enumerate() {
            check_propagation(i, m)?;
        }
        // Host paths are never re-shared any more (that changed the host's mount table);
        // the field stays for records of older versions, whose binds removal still undoes.
        let shared_binds = Vec::new();

        let handler_path = self.runtime_path(&pod.runtime_handler)?;
        let spec = crius_oci::container_spec(&SpecInput {
            container: &config,
            sandbox: &sandbox,
            sandbox_id: &pod.id,
            image: &image_config,
            rootfs: &rootfs,
            namespaces: namespaces(&pod, &config, |id| self.refresh(&self.get(id)?.id))?,
            cgroups_path: cgroups_path(&pod, &id),
            pod_files: PodFiles {
                hostname: Some(pod.hostname_file.clone()),
                resolv_conf: Some(pod.resolv_conf.clone()),
                hosts: Some(pod.hosts_file.clone()),
                shm: Some(pod.shm.clone()),
            },
            hostname: fs::read_to_string(&pod.hostname_file)
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            oom_score_adj_floor: self.oom_floor,
            features: self.features,
        })
        .map_err(|e| RuntimeError::Spec {
            id: id.clone(),
            source: e,
        })?;
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| invalid("spec", e.to_string()))?;
        crius_state::atomic_write(&bundle.join("config.json"), &spec_json)?;

        let log_path = match (pod.config.log_directory.as_str(), config.log_path.as_str()) {
            ("", _) | (_, "") => PathBuf::new(),
            (dir, file) => Path::new(dir).join(file),
        };
        if let Some(parent) = log_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all(parent, 0o755)?;
        }
        let mut monitor = self.monitor(&pod)?;
        let exit_dir = Self::exit_dir(&pod);
        create_dir_all(&exit_dir, 0o700)?;
        self.exit_watch.add(&exit_dir);
        let runtime_root = self.opts.runtime_root.join(&pod.runtime_handler);
        create_dir_all(&runtime_root, 0o700)?;
        let pid = monitor
            .create(&CreateRequest {
                id: id.clone(),
                bundle: bundle.clone(),
                runtime: handler_path,
                runtime_root,
                log_path: log_path.clone(),
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
                exit_dir,
            })
            .map_err(|e| monitor_failed(&id, "create", e))?;

        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            image: image.tag.clone().unwrap_or_else(|| image_name.clone()),
            user_image: image_name,
            image_id: image.id,
            image_ref: image.reference,
            runtime_handler: pod.runtime_handler.clone(),
            state: ContainerState::Created,
            created_at: now(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid,
            log_path,
            bundle,
            rootfs,
            layer_dir,
            stop_signal: image_config.stop_signal.clone(),
            shared_binds,
            config,
        };
        let created = self.records.save(
            &self.containers,
            &self.record_path(&id),
            &id,
            &record,
            Save::Create,
            |_| self.pods.events().publish(&id, &pod.id, EventKind::Created),
        );
        if let Err(e) = created {
            let _ = monitor.delete(&id, true);
            return Err(e);
        }
        undo.disarm();
        info!(container_id = %id, pod_id = %pod.id, "container created");
        Ok(id)
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        let _guard = self.locks.lock(&c.id);
        let c = self.get(&c.id)?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Created",
            });
        }
        let pod = self.pods.get(&c.pod_id)?;
        let started_at = self
            .monitor(&pod)?
            .start(&c.id)
            .map_err(|e| monitor_failed(&c.id, "start", e))?;
        let mut c = c;
        c.state = ContainerState::Running;
        c.started_at = started_at;
        self.save(&c)?;
        info!(container_id = %c.id, "container started");
        Ok(())
    }

    /// Picks up an exit recorded by the monitor.
    pub fn refresh(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let mut c = self.get(id)?;
        if c.state == ContainerState::Exited {
            return Ok(c);
        }
        let Some(pod) = self.pods.find(&c.pod_id)? else {
            return Ok(c);
        };
        let exit_file = Self::exit_dir(&pod).join(&c.id);
        match crius_monitor::read_exit_file(&exit_file) {
            Ok(Some(rec)) => {
                c.state = ContainerState::Exited;
                c.exit_code = rec.exit_code;
                c.finished_at = rec.exited_at_unix_nanos;
                if c.started_at == 0 {
                    c.started_at = c.finished_at;
                }
                c.reason = if rec.oom {
                    "OOMKilled".into()
                } else if rec.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                };
                self.save(&c)?;
            }
            Ok(None) => {
                // Its process is gone, nothing was recorded and no monitor owns it (the one
                // that did died): the exit was lost.
                if c.state == ContainerState::Running
                    && c.pid > 0
                    && !crius_proc::alive(c.pid)
                    && !self.monitor_knows(&pod, &c.id)
                    && crius_monitor::read_exit_file(&exit_file)
                        .ok()
                        .flatten()
                        .is_none()
                {
                    mark_lost(&mut c, 255, "Unknown", "its exit status is unknown");
                    self.save(&c)?;
                    return Ok(c);
                }
                // No exit recorded and the runtime state is gone (reboot): it can never exit
                // now, so report it as exited with an unknown code.
                if !pod.dir.is_dir() {
                    c.state = ContainerState::Exited;
                    c.exit_code = 255;
                    c.finished_at = now();
                    c.reason = "Unknown".into();
                    c.message = "the container's runtime state was lost (host reboot?)".into();
                    self.save(&c)?;
                }
            }
            Err(e) => warn!(container_id = %c.id, error = %e, "reading exit file"),
        }
        Ok(c)
    }

    /// Sends the stop signal, then SIGKILL after `timeout`; returns when the container exited.
    /// Stopping an exited or unknown container succeeds.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let Some(c) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&c.id);
        let c = self.refresh(&c.id)?;
        if c.state == ContainerState::Exited {
            return Ok(());
        }
        let pod = self.pods.get(&c.pod_id)?;
        let mut monitor = self.monitor(&pod)?;
        // The monitor signals through the runtime; a container it does not know (left by a
        // monitor that died) is signalled by the runtime directly.
        let mut kill = |sig: i32, all: bool| {
            if monitor.kill(&c.id, sig, all).is_err()
                && let (Ok(rt), Ok(sig)) = (self.oci_runtime(&c), Signal::try_from(sig))
            {
                let _ = rt.kill(&c.id, sig, all);
            }
        };
        if c.state == ContainerState::Created {
            // Never started: nothing to signal gracefully.
            kill(libc::SIGKILL, true);
        } else if !timeout.is_zero() {
            kill(
                signal_number(&c.stop_signal).unwrap_or(libc::SIGTERM),
                false,
            );
            if self.wait_exit(&c.id, timeout)? {
                return Ok(());
            }
        }
        kill(libc::SIGKILL, true);
        if !self.wait_exit(&c.id, Duration::from_secs(10))? {
            return Err(RuntimeError::Monitor {
                id: c.id.clone(),
                op: "stop",
                message: "the container did not exit after SIGKILL".into(),
            });
        }
        info!(container_id = %c.id, "container stopped");
        Ok(())
    }

    fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool, RuntimeError> {
        crius_proc::poll_until(timeout, Duration::from_millis(20), || {
            Ok(self.refresh(id)?.state == ContainerState::Exited)
        })
    }

    /// Removes a container: killed first if running; idempotent.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(c) = self.find(id)? else {
            return Ok(());
        };
        self.stop(&c.id, Duration::ZERO)?;
        let _guard = self.locks.lock(&c.id);
        if let Some(pod) = self.pods.find(&c.pod_id)? {
            let via_monitor = self.monitor(&pod).and_then(|mut m| {
                m.delete(&c.id, true)
                    .map_err(|e| monitor_failed(&c.id, "delete", e))
            });
            // A container left by a monitor that died is unknown to its successor: the
            // runtime deletes it directly (its state and cgroup would leak otherwise).
            if let Err(e) = via_monitor.or_else(|_| {
                self.oci_runtime(&c)?
                    .delete(&c.id, true)
                    .map_err(|e| RuntimeError::Monitor {
                        id: c.id.clone(),
                        op: "delete",
                        message: e.to_string(),
                    })
            }) {
                warn!(container_id = %c.id, error = %e, "runtime delete failed");
            }
            let _ = fs::remove_file(Self::exit_dir(&pod).join(&c.id));
        }
        rootfs::unmount(&c.rootfs).map_err(io_err("unmounting", &c.rootfs))?;
        for b in &c.shared_binds {
            let in_use = self
                .lock()
                .values()
                .any(|o| o.id != c.id && o.shared_binds.contains(b));
            if !in_use {
                rootfs::unmount(b).map_err(io_err("unmounting", b))?;
            }
        }
        for dir in [&c.bundle, &c.layer_dir] {
            removed(fs::remove_dir_all(dir), dir)?;
        }
        self.records
            .remove(&self.containers, &self.record_path(&c.id), &c.id)?;
        self.pods
            .events()
            .publish(&c.id, &c.pod_id, EventKind::Deleted);
        info!(container_id = %c.id, "container removed");
        Ok(())
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.iter()
            .filter_map(|id| self.refresh(id).ok())
            .filter(|c| {
                filter
                    .id
                    .as_ref()
                    .is_none_or(|p| c.id.starts_with(p.as_str()))
            })
            .filter(|c| {
                filter
                    .pod_id
                    .as_ref()
                    .is_none_or(|p| c.pod_id.starts_with(p.as_str()))
            })
            .filter(|c| filter.state.is_none_or(|s| c.state == s))
            .filter(|c| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .collect()
    }

    /// The writable layer (overlay upper dir) of container `id`.
    pub fn writable_layer(&self, id: &str) -> PathBuf {
        self.opts.root_dir.join(id).join("upper")
    }

    pub fn in_pod(&self, pod_id: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect()
    }

    /// The running container an exec of `cmd` goes into, and its OCI spec (whose process the
    /// exec inherits: user, groups, env, cwd).
    fn exec_target(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<(ContainerRecord, serde_json::Value), RuntimeError> {
        let c = self.refresh(&self.get(id)?.id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Running",
            });
        }
        if cmd.is_empty() {
            return Err(invalid("cmd", "must not be empty"));
        }
        let path = c.bundle.join("config.json");
        let spec = serde_json::from_slice(&fs::read(&path).map_err(io_err("reading", &path))?)
            .map_err(|e| invalid("config.json", e.to_string()))?;
        Ok((c, spec))
    }

    /// Runs `cmd` in a running container and returns its output.
    /// `cancel` lets the caller abandon the exec (its client went away): the call returns
    /// at once and the monitor kills the process.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        cancel: &ExecCancel,
    ) -> Result<ExecOutput, RuntimeError> {
        let (c, spec) = self.exec_target(id, &cmd)?;
        let process = &spec["process"];
        let user = crius_monitor::User {
            uid: process["user"]["uid"].as_u64().unwrap_or(0) as u32,
            gid: process["user"]["gid"].as_u64().unwrap_or(0) as u32,
            additional_gids: process["user"]["additionalGids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_u64().map(|g| g as u32))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let env = process["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let pod = self.pods.get(&c.pod_id)?;
        let _slot = self.exec_slots.acquire(&c.id)?;
        let mut monitor = self.monitor_unbounded(&pod)?;
        let call_timeout = (!timeout.is_zero()).then(|| timeout + EXEC_CALL_SLACK);
        monitor
            .set_timeout(call_timeout)
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        let handle = monitor
            .cancel_handle()
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        if !cancel.arm(handle) {
            return Err(RuntimeError::Monitor {
                id: c.id.clone(),
                op: "exec",
                message: "cancelled by the caller".into(),
            });
        }
        let out = monitor
            .exec(&ExecRequest {
                id: c.id.clone(),
                argv: cmd,
                env,
                cwd: process["cwd"].as_str().unwrap_or("/").to_string(),
                user,
                tty: false,
                timeout_ms: timeout.as_millis() as u64,
                no_new_privileges: process["noNewPrivileges"].as_bool().unwrap_or(false),
            })
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
            timed_out: out.timed_out,
        })
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.refresh(&self.get(id)?.id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Running",
            });
        }
        let pod = self.pods.get(&c.pod_id)?;
        self.monitor(&pod)?
            .reopen_log(&c.id)
            .map_err(|e| monitor_failed(&c.id, "reopen log", e))
    }

    /// Applies new cgroup limits to a running (or created) container.
    pub fn update_resources(
        &self,
        id: &str,
        resources: k8s_cri::v1::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let mut c = self.refresh(&self.get(id)?.id)?;
        if c.state == ContainerState::Exited {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: "Exited".into(),
                wanted: "Created or Running",
            });
        }
        let oci = crius_oci::linux_resources(&resources, self.features).map_err(|e| {
            RuntimeError::Spec {
                id: c.id.clone(),
                source: e,
            }
        })?;
        self.oci_runtime(&c)?
            .update_resources(&c.id, &oci)
            .map_err(|e| RuntimeError::Monitor {
                id: c.id.clone(),
                op: "update resources",
                message: e.to_string(),
            })?;
        c.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
        self.save(&c)?;
        info!(container_id = %c.id, "container resources updated");
        Ok(())
    }

    /// After the last container of a pod is removed: its monitor exits, and the pod cgroup
    /// crius made (when the kubelet gave no cgroup_parent) goes away.
    pub fn release_pod(&self, pod: &PodRecord) {
        let socket = self.monitor_socket(pod);
        if let Ok(mut m) = MonitorClient::connect(&socket) {
            let _ = m.set_timeout(Some(STATE_CALL_TIMEOUT));
            let _ = m.shutdown(true);
        }
        let _ = fs::remove_file(&socket);
        if pod
            .config
            .linux
            .as_ref()
            .is_none_or(|l| l.cgroup_parent.is_empty())
        {
            rootfs::remove_cgroup(&default_cgroup_parent(pod));
            // And /crius itself once no pod is left in it (EBUSY otherwise, ignored).
            rootfs::remove_cgroup(rootfs::CRIUS_CGROUP);
        }
    }
}

/// The pod's pid mode as the pod was created with it (POD when the message is absent).
fn pod_pid_mode(config: &PodSandboxConfig) -> i32 {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(NamespaceMode::Pod as i32, |n| n.pid)
}

/// The container's namespaces. `target` resolves the TARGET pid mode: a running container of
/// the same pod whose PID namespace is joined.
fn namespaces(
    pod: &PodRecord,
    config: &ContainerConfig,
    target: impl Fn(&str) -> Result<ContainerRecord, RuntimeError>,
) -> Result<PodNamespaces, RuntimeError> {
    let src = |p: &Option<PathBuf>| p.clone().map(NsSource::Path).unwrap_or(NsSource::Host);
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    // Without namespace_options the pid mode is the proto's zero value, POD, as containerd
    // reads it: the container follows its pod (the pod's PID namespace when it has one, the
    // host's for a host-PID pod, else a namespace of its own).
    let pid_mode = options.map(|n| n.pid).unwrap_or_else(|| {
        let mode = match NamespaceMode::try_from(pod_pid_mode(&pod.config)) {
            Ok(NamespaceMode::Pod) if pod.namespaces.pid.is_some() => NamespaceMode::Pod,
            Ok(NamespaceMode::Node) => NamespaceMode::Node,
            _ => NamespaceMode::Container,
        };
        mode as i32
    });
    let pid = match NamespaceMode::try_from(pid_mode) {
        Ok(NamespaceMode::Pod) => match &pod.namespaces.pid {
            Some(p) => NsSource::Path(p.clone()),
            None => {
                return Err(invalid(
                    "config.linux.security_context.namespace_options.pid",
                    "POD, but the pod has no PID namespace",
                ));
            }
        },
        Ok(NamespaceMode::Node) => NsSource::Host,
        Ok(NamespaceMode::Container) => NsSource::New,
        Ok(NamespaceMode::Target) => {
            let field = "config.linux.security_context.namespace_options.target_id";
            let id = options.map(|n| n.target_id.as_str()).unwrap_or_default();
            if id.is_empty() {
                return Err(invalid(
                    field,
                    "must name a container for the TARGET pid mode",
                ));
            }
            let t = target(id)?;
            if t.pod_id != pod.id {
                return Err(invalid(
                    field,
                    format!("container {} is not in pod {}", t.id, pod.id),
                ));
            }
            if t.state != ContainerState::Running || t.pid == 0 {
                return Err(RuntimeError::WrongState {
                    id: t.id,
                    state: format!("{:?}", t.state),
                    wanted: "Running",
                });
            }
            NsSource::Path(PathBuf::from(format!("/proc/{}/ns/pid", t.pid)))
        }
        _ => {
            return Err(invalid(
                "config.linux.security_context.namespace_options.pid",
                format!("mode {pid_mode} is not supported yet"),
            ));
        }
    };
    Ok(PodNamespaces {
        network: src(&pod.namespaces.net),
        ipc: src(&pod.namespaces.ipc),
        uts: src(&pod.namespaces.uts),
        pid,
        cgroup: if rootfs::cgroup_v2() {
            NsSource::New
        } else {
            NsSource::Host
        },
    })
}

/// cgroupfs paths: under the pod's cgroup_parent (set by the kubelet), else under /crius.
pub(crate) fn cgroups_path(pod: &PodRecord, id: &str) -> String {
    format!(
        "{}/crius-{id}",
        pod_cgroup_parent(pod).trim_end_matches('/')
    )
}

/// The cgroup a pod's containers are created under.
pub(crate) fn pod_cgroup_parent(pod: &PodRecord) -> String {
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if parent.is_empty() {
        default_cgroup_parent(pod)
    } else {
        parent
    }
}

fn default_cgroup_parent(pod: &PodRecord) -> String {
    format!("{}/{}", rootfs::CRIUS_CGROUP, pod.id)
}

/// The daemon's own oom_score_adj when it may not go lower (no CAP_SYS_RESOURCE).
fn oom_floor() -> Option<i64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(cap_eff, 16).ok()?;
    const CAP_SYS_RESOURCE: u32 = 24;
    if caps & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn swap_accounting() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || (rootfs::cgroup_v2() && Path::new("/sys/fs/cgroup/memory.swap.max").exists())
}

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if n.is_empty() {
        return None;
    }
    if let Ok(v) = n.parse::<i32>() {
        return Some(v);
    }
    let n = n.strip_prefix("SIG").unwrap_or(n);
    let sig = match n {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(sig)
}

#[cfg(test)]
mod tests {
    use super::signal_number;

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("INT"), Some(libc::SIGINT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number(""), None);
        assert_eq!(signal_number("SIGBOGUS"), None);
    }
}
