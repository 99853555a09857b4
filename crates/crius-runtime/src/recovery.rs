//! Crash consistency: intent records and the reconcile on start.
//!
//! RunPodSandbox and CreateContainer write an intent record (`<id>.intent`, state `creating`)
//! next to where the final record will be, before their first side effect, and remove it once
//! the final record is on disk (or their own rollback finished). A SIGKILL at any instant
//! therefore leaves either a final record (the work completed), an intent (the work may be
//! half done) or nothing. On start, [`recover_pods`] and [`recover_containers`]:
//!
//! - drop an intent whose final record exists (the crash came after the record was written);
//! - roll back every other intent: everything its id may own is undone (a container deleted
//!   through its pod's monitor and the runtime, its rootfs unmounted, its cgroup and dirs
//!   removed; a pod's init killed, its network detached by CNI DEL from the cached result, its
//!   /dev/shm and pinned namespaces unmounted, its dir removed);
//! - sweep what no record or intent owns: pod dirs, netns pins, bundles, writable layers,
//!   runtime state, monitors of pods that no longer exist.
//!
//! One failure is logged and never stops the others; an intent whose rollback failed stays for
//! the next start.
//!
//! For deterministic crash tests, `CRIUS_TEST_CRASH_AT_FILE` names a file: when it holds the
//! name of a step reached ([`crash_point`]), criusd removes the file and aborts right there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_cgroups::CgroupManager;
use crius_monitor::{ForeignRuntime, MonitorClient, MonitorConn};
use crius_sandbox::PinnedNamespaces;
use crius_state::read_json;
use k8s_cri::v1::PodSandboxConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::RuntimeError;
use crate::network::PodNetwork;
use crate::ops::SandboxOps;
use crate::record::PodRecord;
use crate::rootfs;

/// Above the monitor's own limit for a runtime command (120 s), as for every monitor call.
const MONITOR_DELETE_TIMEOUT: Duration = Duration::from_secs(130);

/// An intent's state. Only `creating` exists: a final record replaces the intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IntentState {
    Creating,
}

/// A RunPodSandbox in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PodIntent {
    pub id: String,
    pub state: IntentState,
    /// `<state>/pods/<id>`.
    pub dir: PathBuf,
    /// `<state>/netns/<id>`.
    pub net_pin: PathBuf,
    /// For CNI DEL (pod args) and the pod's cgroup.
    pub config: PodSandboxConfig,
}

/// A CreateContainer in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerIntent {
    pub id: String,
    pub state: IntentState,
    pub pod_id: String,
    pub runtime_handler: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub layer_dir: PathBuf,
    pub cgroups_path: String,
}

pub(crate) fn intent_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.intent"))
}

/// Writes an intent atomically; the caller's first side effect comes after this.
pub(crate) fn write_intent<T: Serialize>(dir: &Path, id: &str, v: &T) -> Result<(), RuntimeError> {
    // Not fsynced: an intent guards against a crash of criusd; after a power loss its
    // side effects (mounts, processes, netns) are gone, and the start sweep removes the
    // directories no record owns.
    let data = serde_json::to_vec(v).map_err(|e| RuntimeError::Invalid {
        field: "intent".into(),
        message: e.to_string(),
    })?;
    crius_state::atomic_write_volatile(&intent_path(dir, id), &data)?;
    Ok(())
}

/// Removes an intent; one already gone is fine.
pub(crate) fn remove_intent(dir: &Path, id: &str) {
    let path = intent_path(dir, id);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "removing an intent record"),
    }
}

/// Every intent in `dir`. An unreadable one is set aside (`.intent.corrupt`) and its id
/// still returned, so what it may own is swept.
fn read_intents<T: DeserializeOwned>(dir: &Path) -> (Vec<T>, BTreeSet<String>) {
    let mut good = Vec::new();
    let mut bad = BTreeSet::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("intent") {
            continue;
        }
        match read_json::<T>(&path) {
            Ok(Some(v)) => good.push(v),
            Ok(None) => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "unreadable intent record set aside");
                let _ = fs::rename(&path, path.with_extension("intent.corrupt"));
                if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                    bad.insert(id.to_string());
                }
            }
        }
    }
    (good, bad)
}

/// Removes temp files of atomic writes (`.<name>.tmp.<pid>.<seq>`) that a crash left in `dir`;
/// ours (this process's pid) are in flight and kept. The root lock makes every other one stale.
pub(crate) fn sweep_temp_files(dir: &Path) {
    let me = std::process::id().to_string();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, rest)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp.")) else {
            continue;
        };
        if rest.split('.').next() == Some(me.as_str()) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => info!(path = %entry.path().display(), "recovery: stale temp file removed"),
            Err(e) => {
                warn!(path = %entry.path().display(), error = %e, "removing a stale temp file")
            }
        }
    }
}

/// What recovery does with one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The final record exists: the work completed; only the intent goes.
    DropIntent,
    /// An intent without a final record: undo everything the id may own.
    RollBack,
    /// Left on the host, owned by no record and no intent: undo it too.
    Sweep,
}

/// The reconcile decision, from the ids that have a final record, those with an intent and
/// those found on the host (dirs, pins, runtime state).
pub(crate) fn reconcile(
    records: &BTreeSet<String>,
    intents: &BTreeSet<String>,
    found: &BTreeSet<String>,
) -> BTreeMap<String, Action> {
    let mut out = BTreeMap::new();
    for id in intents {
        let action = if records.contains(id) {
            Action::DropIntent
        } else {
            Action::RollBack
        };
        out.insert(id.clone(), action);
    }
    for id in found {
        if !records.contains(id) && !intents.contains(id) {
            out.insert(id.clone(), Action::Sweep);
        }
    }
    out
}

/// A name that can be an id of ours (64 hex digits): nothing else in a scanned dir is touched.
fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn names_in(dir: &Path, dirs_only: bool) -> BTreeSet<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !dirs_only || e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_id(n))
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(crius_cgroups::unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

fn unmount_all_under(dir: &Path) -> Result<(), RuntimeError> {
    for m in mounts_under(dir) {
        rootfs::unmount(&m).map_err(crate::error::io_err("unmounting", &m))?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), RuntimeError> {
    // Never recurse into something still mounted (a tmpfs's files, a bind's source).
    unmount_all_under(dir)?;
    crate::error::removed(fs::remove_dir_all(dir), dir)
}

/// SIGKILLs every process in the PID namespace pinned at `pin` (the pod's crius-init is its
/// PID 1, so the kernel kills the rest) and waits until they are gone.
fn kill_pid_namespace(pin: &Path) {
    let Ok(md) = fs::metadata(pin) else { return };
    // A pin file that is not (or no longer) a mount is an empty regular file: nothing runs.
    if md.len() != 0 || !mounts_under(pin).contains(&pin.to_path_buf()) {
        return;
    }
    let ino = md.ino();
    let members = || -> Vec<i32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == ino))
            .collect()
    };
    for pid in members() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = crius_proc::poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
        Ok::<_, std::io::Error>(members().is_empty())
    });
}

/// SIGKILLs processes started for the pods `ids` (crius-init, whose environment names its
/// pod: [`crius_sandbox::POD_ID_ENV`]), also those a crash left before their namespace was
/// pinned. One scan of /proc for all of them.
fn kill_pod_processes(ids: &BTreeSet<String>) {
    if ids.is_empty() {
        return;
    }
    let prefix = format!("{}=", crius_sandbox::POD_ID_ENV);
    let me = std::process::id() as i32;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = fs::read(e.path().join("environ")) else {
            continue;
        };
        let owner = env
            .split(|b| *b == 0)
            .filter_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .find_map(|v| std::str::from_utf8(v).ok());
        if owner.is_some_and(|id| ids.contains(id)) {
            warn!(
                pid,
                pod_id = owner.unwrap_or_default(),
                "recovery: killing a process of a half-built pod"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Undoes whatever RunPodSandbox may have built for pod `id`, in reverse order of the build.
/// Every step is idempotent and tried even when an earlier one failed; returns the first error.
pub(crate) fn undo_pod(
    ops: &dyn SandboxOps,
    network: &dyn PodNetwork,
    cgroups: &dyn CgroupManager,
    id: &str,
    dir: &Path,
    net_pin: &Path,
    config: &PodSandboxConfig,
) -> Result<(), RuntimeError> {
    let mut first: Option<RuntimeError> = None;
    let ns_dir = dir.join("ns");
    kill_pid_namespace(&ns_dir.join("pid"));
    // DEL also without a netns or a cache entry: IPAM and NAT state outlive the namespace. A
    // pin file that was never bind-mounted is no namespace: DEL goes without one.
    let netns = if mounts_under(net_pin).iter().any(|m| m == net_pin) {
        net_pin
    } else {
        Path::new("")
    };
    // A pin caught half-made may not be enterable: DEL then goes without the namespace too.
    let del = network.teardown(id, netns, config).or_else(|e| {
        if netns.as_os_str().is_empty() {
            return Err(e);
        }
        warn!(pod_id = %id, error = %e, "recovery: CNI DEL in the pinned netns failed; retrying without it");
        network.teardown(id, Path::new(""), config)
    });
    if let Err(source) = del {
        first.get_or_insert(RuntimeError::Network {
            pod_id: id.into(),
            source,
        });
    }
    let shm = dir.join("shm");
    if shm.exists()
        && let Err(source) = ops.unmount_shm(&shm)
    {
        first.get_or_insert(RuntimeError::Sandbox {
            pod_id: id.into(),
            source,
        });
    }
    let existing = |p: PathBuf| p.exists().then_some(p);
    let pinned = PinnedNamespaces {
        pod_id: id.into(),
        net: existing(net_pin.to_path_buf()),
        ipc: existing(ns_dir.join("ipc")),
        uts: existing(ns_dir.join("uts")),
        pid: existing(ns_dir.join("pid")),
        init: None,
        ns_dir: existing(ns_dir.clone()),
    };
    if let Err(source) = ops.unpin(&pinned) {
        first.get_or_insert(RuntimeError::Sandbox {
            pod_id: id.into(),
            source,
        });
    }
    if let Err(e) = remove_tree(dir) {
        first.get_or_insert(e);
    }
    // The pod's cgroups crius made (a parent the kubelet named stays, as on RemovePodSandbox).
    if let Ok(pod) = crate::cgroups::for_config(cgroups, config, id)
        && let Err(e) = cgroups.remove_pod(&pod)
    {
        warn!(pod_id = %id, error = %e, "recovery: removing the pod cgroups failed");
    }
    first.map_or(Ok(()), Err)
}

/// Reconciles pods on start: see the module doc. `records` are the pods loaded.
pub(crate) fn recover_pods(
    records_dir: &Path,
    state_dir: &Path,
    ops: &dyn SandboxOps,
    network: &dyn PodNetwork,
    cgroups: &dyn CgroupManager,
    records: &BTreeMap<String, PodRecord>,
) {
    sweep_temp_files(records_dir);
    let (intents, unreadable) = read_intents::<PodIntent>(records_dir);
    let by_id: BTreeMap<String, PodIntent> =
        intents.into_iter().map(|i| (i.id.clone(), i)).collect();
    let intent_ids: BTreeSet<String> = by_id.keys().cloned().collect();
    let mut found = names_in(&state_dir.join("pods"), true);
    found.extend(names_in(&state_dir.join("netns"), false));
    found.extend(unreadable);
    let record_ids: BTreeSet<String> = records.keys().cloned().collect();
    let plan = reconcile(&record_ids, &intent_ids, &found);
    let undone: BTreeSet<String> = plan
        .iter()
        .filter(|(_, a)| **a != Action::DropIntent)
        .map(|(id, _)| id.clone())
        .collect();
    kill_pod_processes(&undone);
    let (mut rolled_back, mut swept, mut failed) = (0, 0, 0);
    for (id, action) in plan {
        if action == Action::DropIntent {
            remove_intent(records_dir, &id);
            continue;
        }
        let dir = state_dir.join("pods").join(&id);
        let net_pin = state_dir.join("netns").join(&id);
        let config = by_id.get(&id).map(|i| i.config.clone()).unwrap_or_default();
        match undo_pod(ops, network, cgroups, &id, &dir, &net_pin, &config) {
            Ok(()) => {
                remove_intent(records_dir, &id);
                if action == Action::RollBack {
                    rolled_back += 1;
                } else {
                    swept += 1;
                }
                info!(pod_id = %id, ?action, "recovery: half-built pod undone");
            }
            Err(e) => {
                failed += 1;
                warn!(pod_id = %id, ?action, error = %e, "recovery: undoing a half-built pod failed; retried on the next start");
            }
        }
    }
    if rolled_back + swept + failed > 0 {
        info!(rolled_back, swept, failed, "pod recovery done");
    }
}

/// Paths and runtimes the container reconcile works on.
pub(crate) struct ContainerPaths<'a> {
    /// `<root>/containers`: records, intents and writable layers.
    pub root_dir: &'a Path,
    /// `<state>/containers`: bundles.
    pub state_dir: &'a Path,
    /// `<state>/runtime`: one `--root` per handler.
    pub runtime_root: &'a Path,
    pub handlers: &'a BTreeMap<String, PathBuf>,
    /// The pod's monitor socket.
    pub monitor_socket: &'a dyn Fn(&str) -> PathBuf,
    pub cgroups: &'a dyn CgroupManager,
    /// The pod's exit dir, when the pod exists.
    pub exit_dir: &'a dyn Fn(&str) -> Option<PathBuf>,
}

/// The bundle's cgroups path, as the spec handed to the runtime names it.
fn cgroups_path_of(bundle: &Path) -> Option<String> {
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).ok()?).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// Runtime commands (`runc create … <id>`) still running for container `id`: a crash inside
/// CreateContainer leaves the pod's monitor running one. Waits for them (3 s, then kills
/// them) so the undo does not race a create that completes afterwards.
fn settle_runtime_commands(id: &str, handlers: &BTreeMap<String, PathBuf>) {
    // Runtime commands run in our PID namespace and outside the container's cgroup; a created
    // container's init (which for crun still carries the `create` command line) is in the
    // container's namespace or cgroup and is left alone.
    let container_cgroup = format!("crius-{id}");
    let ns = |pid: &str| {
        fs::metadata(format!("/proc/{pid}/ns/pid"))
            .map(|m| m.ino())
            .ok()
    };
    let own_ns = ns("self");
    let running = || -> Vec<i32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
                if ns(&pid.to_string()) != own_ns
                    || fs::read_to_string(e.path().join("cgroup"))
                        .is_ok_and(|cg| cg.contains(&container_cgroup))
                {
                    return None;
                }
                let cmd = fs::read(e.path().join("cmdline")).ok()?;
                let mut args = cmd.split(|b| *b == 0).filter(|a| !a.is_empty());
                let bin = Path::new(std::str::from_utf8(args.next()?).ok()?);
                let ours = handlers.values().any(|h| h == bin);
                (ours && args.any(|a| a == id.as_bytes())).then_some(pid)
            })
            .collect()
    };
    let settled = crius_proc::poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
        Ok::<_, std::io::Error>(running().is_empty())
    });
    if !matches!(settled, Ok(true)) {
        for pid in running() {
            // Where it waits, for the log: a create should never take this long.
            let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            warn!(container_id = %id, pid, %wchan, "recovery: killing a runtime command that did not finish");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Undoes whatever CreateContainer may have built for container `id`.
fn undo_container(
    p: &ContainerPaths<'_>,
    id: &str,
    intent: Option<&ContainerIntent>,
) -> Result<(), RuntimeError> {
    settle_runtime_commands(id, p.handlers);
    // The pod's monitor may hold it (created, waiting for start): it deletes it, with the
    // runtime's state and cgroup.
    let mut monitor = None;
    if let Some(pod_id) = intent.map(|i| i.pod_id.as_str()) {
        let socket = (p.monitor_socket)(pod_id);
        if let Ok(mut m) = MonitorClient::connect(&socket) {
            let _ = m.set_timeout(Some(MONITOR_DELETE_TIMEOUT));
            let _ = m.delete(id, true);
            monitor = Some(m);
        }
        if let Some(exits) = (p.exit_dir)(pod_id) {
            let _ = fs::remove_file(exits.join(id));
        }
    }
    // Whatever the runtime still knows of it (any handler: a swept id has no intent): deleted
    // through the pod's monitor when it runs, else by the runtime itself (the pod is gone).
    for (name, path) in p.handlers {
        let root = p.runtime_root.join(name);
        if root.join(id).exists() {
            let foreign = ForeignRuntime {
                runtime: path.clone(),
                root: root.clone(),
            };
            let deleted = match monitor.as_mut() {
                Some(m) => m.delete_foreign(id, foreign),
                None => runtime_delete(&foreign, id),
            };
            if let Err(e) = deleted {
                warn!(container_id = %id, runtime = %name, error = %e, "recovery: runtime delete failed");
            }
            let _ = crate::error::removed(fs::remove_dir_all(root.join(id)), &root.join(id));
        }
    }
    let bundle = p.state_dir.join(id);
    let cgroups = cgroups_path_of(&bundle).or_else(|| intent.map(|i| i.cgroups_path.clone()));
    let mut first = None;
    for dir in [bundle, p.root_dir.join(id)] {
        if let Err(e) = remove_tree(&dir) {
            first.get_or_insert(e);
        }
    }
    // A cgroupfs path (systemd's `slice:prefix:name` scopes go with the runtime's delete).
    if let Some(cg) = cgroups.filter(|c| c.starts_with('/')) {
        p.cgroups.hierarchy().remove_dir(&cg);
    }
    first.map_or(Ok(()), Err)
}

/// `<runtime> delete --force <id>` for a container whose pod and monitor are both gone: the one
/// OCI runtime command crius runs outside a pod monitor. Bounded like the monitor's commands.
fn runtime_delete(rt: &ForeignRuntime, id: &str) -> std::io::Result<()> {
    let mut child = std::process::Command::new(&rt.runtime)
        .arg("--root")
        .arg(&rt.root)
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    match crius_proc::wait_timeout(&mut child, MONITOR_DELETE_TIMEOUT)? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(std::io::Error::other(format!("exited with {status}"))),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        }
    }
}

/// Reconciles containers on start: see the module doc. `records` are the containers loaded.
pub(crate) fn recover_containers(p: &ContainerPaths<'_>, records: &BTreeSet<String>) {
    sweep_temp_files(p.root_dir);
    let (intents, unreadable) = read_intents::<ContainerIntent>(p.root_dir);
    let by_id: BTreeMap<String, ContainerIntent> =
        intents.into_iter().map(|i| (i.id.clone(), i)).collect();
    let intent_ids: BTreeSet<String> = by_id.keys().cloned().collect();
    let mut found = names_in(p.state_dir, true);
    found.extend(names_in(p.root_dir, true));
    for name in p.handlers.keys() {
        found.extend(names_in(&p.runtime_root.join(name), true));
    }
    found.extend(unreadable);
    let plan = reconcile(records, &intent_ids, &found);
    for (id, action) in plan {
        if action == Action::DropIntent {
            remove_intent(p.root_dir, &id);
            continue;
        }
        match undo_container(p, &id, by_id.get(&id)) {
            Ok(()) => {
                remove_intent(p.root_dir, &id);
                info!(container_id = %id, ?action, "recovery: half-built container undone");
            }
            Err(e) => {
                warn!(container_id = %id, ?action, error = %e, "recovery: undoing a half-built container failed; retried on the next start");
            }
        }
    }
}

/// Monitors of pods that no longer exist (a crash inside RemovePodSandbox, or a pod swept):
/// shut down, their sockets removed. `live` tells whether a socket belongs to a listed pod.
pub(crate) fn sweep_monitors(socket_dir: &Path, live: impl Fn(&str) -> bool) {
    for entry in fs::read_dir(socket_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(short) = name.strip_suffix(".sock") else {
            continue;
        };
        if live(short) {
            continue;
        }
        let socket = entry.path();
        if let Ok(mut m) = MonitorClient::connect(&socket) {
            let _ = m.set_timeout(Some(Duration::from_secs(5)));
            let _ = m.shutdown(true);
        }
        let _ = fs::remove_file(&socket);
        info!(socket = %socket.display(), "recovery: monitor of a removed pod shut down");
    }
}

/// Aborts the daemon when the crash-test file names this step (see the module doc).
pub(crate) fn crash_point(step: &str) {
    static FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let Some(file) =
        FILE.get_or_init(|| std::env::var_os("CRIUS_TEST_CRASH_AT_FILE").map(PathBuf::from))
    else {
        return;
    };
    if fs::read_to_string(file).is_ok_and(|s| s.trim() == step) {
        let _ = fs::remove_file(file);
        warn!(step, "CRIUS_TEST_CRASH_AT_FILE: aborting here");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_intent_with_a_record_is_dropped_and_one_without_is_rolled_back() {
        let plan = reconcile(&set(&["a", "b"]), &set(&["b", "c"]), &set(&[]));
        assert_eq!(plan.get("a"), None, "a completed pod is left alone");
        assert_eq!(plan.get("b"), Some(&Action::DropIntent));
        assert_eq!(plan.get("c"), Some(&Action::RollBack));
    }

    #[test]
    fn what_no_record_or_intent_owns_is_swept() {
        let plan = reconcile(&set(&["a"]), &set(&["c"]), &set(&["a", "c", "d"]));
        assert_eq!(plan.get("a"), None);
        assert_eq!(plan.get("c"), Some(&Action::RollBack));
        assert_eq!(plan.get("d"), Some(&Action::Sweep));
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn stale_temp_files_go_and_in_flight_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".a.json.tmp.1.7");
        let ours = dir
            .path()
            .join(format!(".b.json.tmp.{}.3", std::process::id()));
        let record = dir.path().join("c.json");
        for f in [&stale, &ours, &record] {
            fs::write(f, "{}").unwrap();
        }
        sweep_temp_files(dir.path());
        assert!(!stale.exists());
        assert!(ours.exists());
        assert!(record.exists());
    }

    #[test]
    fn only_id_shaped_names_are_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        fs::create_dir(dir.path().join(&id)).unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        fs::write(dir.path().join(format!("{id}.json")), "{}").unwrap();
        assert_eq!(names_in(dir.path(), true), set(&[&id]));
    }

    #[test]
    fn intents_round_trip_and_a_corrupt_one_is_set_aside_but_its_id_kept() {
        let dir = tempfile::tempdir().unwrap();
        let good = ContainerIntent {
            id: "1".repeat(64),
            state: IntentState::Creating,
            pod_id: "p".into(),
            runtime_handler: "runc".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            layer_dir: "/l".into(),
            cgroups_path: "/crius/p/crius-1".into(),
        };
        write_intent(dir.path(), &good.id, &good).unwrap();
        let bad_id = "2".repeat(64);
        fs::write(intent_path(dir.path(), &bad_id), "{not json").unwrap();
        let (read, bad) = read_intents::<ContainerIntent>(dir.path());
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].id, good.id);
        assert_eq!(read[0].state, IntentState::Creating);
        assert_eq!(bad, set(&[&bad_id]));
        assert!(!intent_path(dir.path(), &bad_id).exists());
        remove_intent(dir.path(), &good.id);
        remove_intent(dir.path(), &good.id);
        assert!(!intent_path(dir.path(), &good.id).exists());
    }

    /// A pod rollback runs every step even when one fails, and leaves no dir behind.
    #[test]
    fn undoing_a_pod_runs_every_step_despite_a_failure() {
        use std::sync::Mutex;
        #[derive(Default)]
        struct Ops(Mutex<Vec<String>>);
        impl SandboxOps for Ops {
            fn pin(
                &self,
                _: &crius_sandbox::PinRequest,
            ) -> Result<PinnedNamespaces, crius_sandbox::SandboxError> {
                unreachable!()
            }
            fn unpin(&self, p: &PinnedNamespaces) -> Result<(), crius_sandbox::SandboxError> {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("unpin ipc={}", p.ipc.is_some()));
                Ok(())
            }
            fn mount_shm(&self, _: &Path, _: u64) -> Result<(), crius_sandbox::SandboxError> {
                unreachable!()
            }
            fn unmount_shm(&self, _: &Path) -> Result<(), crius_sandbox::SandboxError> {
                self.0.lock().unwrap().push("unmount_shm".into());
                Ok(())
            }
        }
        struct FailingNet(Mutex<Vec<String>>);
        impl PodNetwork for FailingNet {
            fn setup(
                &self,
                _: &str,
                _: &Path,
                _: &PodSandboxConfig,
            ) -> Result<Vec<std::net::IpAddr>, crius_cni::CniError> {
                unreachable!()
            }
            fn teardown(
                &self,
                id: &str,
                _: &Path,
                _: &PodSandboxConfig,
            ) -> Result<(), crius_cni::CniError> {
                self.0.lock().unwrap().push(format!("del {id}"));
                Err(crius_cni::CniError::NoConfig {
                    dir: PathBuf::from("/nowhere"),
                })
            }
        }
        let state = tempfile::tempdir().unwrap();
        let id = "3".repeat(64);
        let dir = state.path().join("pods").join(&id);
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::create_dir_all(dir.join("shm")).unwrap();
        fs::write(dir.join("ns").join("ipc"), "").unwrap();
        fs::write(dir.join("hostname"), "x").unwrap();
        let ops = Ops::default();
        let net = FailingNet(Mutex::default());
        let cgroups = crius_cgroups::CgroupfsManager::new(crius_cgroups::Hierarchy::v2_at(
            &state.path().join("cgroup"),
        ));
        let r = undo_pod(
            &ops,
            &net,
            &cgroups,
            &id,
            &dir,
            &state.path().join("netns").join(&id),
            &PodSandboxConfig::default(),
        );
        assert!(matches!(r, Err(RuntimeError::Network { .. })), "{r:?}");
        assert_eq!(*net.0.lock().unwrap(), vec![format!("del {id}")]);
        assert_eq!(
            *ops.0.lock().unwrap(),
            vec!["unmount_shm".to_string(), "unpin ipc=true".to_string()]
        );
        assert!(
            !dir.exists(),
            "the pod dir is removed even though DEL failed"
        );
    }
}
