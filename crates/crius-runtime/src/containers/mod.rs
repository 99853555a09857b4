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

use crius_monitor::{CreateRequest, ExecRequest, ForeignRuntime, MonitorConn};
use crius_oci::{ImageConfig, NsSource, PodFiles, PodNamespaces, SpecFeatures, SpecInput};
use crius_state::{create_dir_all, create_dir_with_mode, read_json};
use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crius_error::ErrorKind;

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
mod cgroups;
mod create;
mod exec;
mod host;
mod lifecycle;
mod monitor;
mod stream_exec;
pub(crate) use cgroups::{container_dir, pod_dir};
use create::oom_floor;
use exec::ExecSlots;
pub use exec::{ExecCancel, ExecLimits};
pub use host::{ContainerHost, HostContainers};
pub use lifecycle::signal_number;
use monitor::{STATE_CALL_TIMEOUT, monitor_failed};
pub use stream_exec::ExecStreams;

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
    /// The process's effective user as its spec has it (the image's user or run_as_*, with
    /// groups resolved); `None` in records of older versions.
    #[serde(default)]
    pub user: Option<ProcessUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl ProcessUser {
    /// The user of an OCI spec's process.
    pub fn of_spec(spec: &serde_json::Value) -> Option<ProcessUser> {
        let u = spec["process"]["user"].as_object()?;
        let id = |k: &str| u.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        Some(ProcessUser {
            uid: id("uid"),
            gid: id("gid"),
            additional_gids: u
                .get("additionalGids")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_u64())
                        .map(|g| g as u32)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
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

impl ContainerFilter {
    /// Id and pod id match as prefixes, state exactly, labels all.
    pub fn matches(&self, c: &ContainerRecord) -> bool {
        let prefix = |p: &Option<String>, v: &str| p.as_ref().is_none_or(|p| v.starts_with(p));
        prefix(&self.id, &c.id)
            && prefix(&self.pod_id, &c.pod_id)
            && self.state.is_none_or(|s| c.state == s)
            && self
                .labels
                .iter()
                .all(|(k, v)| c.config.labels.get(k) == Some(v))
    }
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
    host: Arc<dyn ContainerHost>,
}

/// Marks a container whose exit its monitor could not record (the monitor died).
pub(super) fn mark_lost(c: &mut ContainerRecord, code: i32, reason: &str, what: &str) {
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

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl ContainerManager {
    /// Loads every container record, then brings each up to date from its exit file: exits
    /// that happened while criusd was down are reported with their real codes.
    pub fn open(
        opts: ContainerManagerOptions,
        pods: Arc<PodManager>,
    ) -> Result<ContainerManager, RuntimeError> {
        Self::open_with(opts, pods, Arc::new(HostContainers))
    }

    /// [`ContainerManager::open`] on a given host (a fake in lifecycle tests).
    pub fn open_with(
        opts: ContainerManagerOptions,
        pods: Arc<PodManager>,
        host: Arc<dyn ContainerHost>,
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
        // Finish or undo what a crash left half-built, and stop monitors of removed pods.
        let socket_dir = opts.monitor_socket_dir.clone();
        let monitor_socket = move |pod_id: &str| monitor::socket_in(&socket_dir, pod_id);
        let exit_dir = |pod_id: &str| pods.find(pod_id).ok().flatten().map(|p| Self::exit_dir(&p));
        crate::recovery::recover_containers(
            &crate::recovery::ContainerPaths {
                root_dir: &opts.root_dir,
                state_dir: &opts.state_dir,
                runtime_root: &opts.runtime_root,
                handlers: &opts.handlers,
                monitor_socket: &monitor_socket,
                cgroups: pods.cgroups().as_ref(),
                exit_dir: &exit_dir,
            },
            &containers.keys().cloned().collect(),
        );
        let live_pods = pods.list(&crate::pods::PodFilter::default());
        crate::recovery::sweep_monitors(&opts.monitor_socket_dir, |short| {
            live_pods.iter().any(|p| p.id.starts_with(short))
        });
        let features = SpecFeatures::detect();
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
            host,
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

    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ContainerRecord>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn record_path(&self, id: &str) -> PathBuf {
        self.opts.root_dir.join(format!("{id}.json"))
    }

    /// A container's OCI runtime, for a monitor that does not own the container (one a dead
    /// monitor left) to kill or delete it.
    pub(super) fn foreign(&self, c: &ContainerRecord) -> Result<ForeignRuntime, RuntimeError> {
        Ok(ForeignRuntime {
            runtime: self.runtime_path(&c.runtime_handler)?,
            root: self.opts.runtime_root.join(&c.runtime_handler),
        })
    }

    /// The OCI runtime binary of a runtime handler.
    pub(super) fn runtime_path(&self, handler: &str) -> Result<PathBuf, RuntimeError> {
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
    pub(super) fn save(&self, c: &ContainerRecord) -> Result<(), RuntimeError> {
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

    /// The containers `filter` matches, each brought up to date with its monitor's record.
    pub fn list(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.iter()
            .filter_map(|id| self.refresh(id).ok())
            .filter(|c| filter.matches(c))
            .collect()
    }

    /// [`list`](Self::list) as stored, without a refresh of each (the exit watch keeps the
    /// records current): for the stats calls, which must stay cheap over many containers.
    pub fn list_recorded(&self, filter: &ContainerFilter) -> Vec<ContainerRecord> {
        self.lock()
            .values()
            .filter(|c| filter.matches(c))
            .cloned()
            .collect()
    }

    /// The writable layer (overlay upper dir) of container `id`.
    pub fn writable_layer(&self, id: &str) -> PathBuf {
        self.opts.root_dir.join(id).join("upper")
    }

    /// Container `id` (or unique prefix), brought up to date, if it is running: what exec,
    /// attach and log reopening need.
    pub fn running(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let c = self.refresh(&self.get(id)?.id)?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Running",
            });
        }
        Ok(c)
    }

    /// Ids of every container.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// `<root>/containers`: where every writable layer is.
    pub fn layers_root(&self) -> &Path {
        &self.opts.root_dir
    }

    pub fn in_pod(&self, pod_id: &str) -> Vec<String> {
        self.lock()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect()
    }
}
