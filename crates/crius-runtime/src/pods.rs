//! The pod manager: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and listing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crius_sandbox::{DnsConfig, NsType, PinRequest};
use crius_state::{create_dir_all, create_dir_with_mode, read_json, write_json};
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use tracing::{info, warn};

use crate::error::{RuntimeError, invalid, io_err, removed};
use crate::events::{EventBus, EventKind};
use crate::ids::{new_id, resolve};
use crate::keylocks::{KeyGuard, KeyLocks};
use crate::network::PodNetwork;
use crate::ops::SandboxOps;
use crate::record::{PodRecord, PodState, name_key};
use crate::rollback::Rollback;

#[derive(Debug, Clone)]
pub struct PodManagerOptions {
    /// `<root>/pods`: one JSON record per pod.
    pub records_dir: PathBuf,
    /// `<state>`: runtime state (pod dirs under `pods/`, network namespaces under `netns/`).
    pub state_dir: PathBuf,
    /// Runtime handler name → OCI runtime binary.
    pub handlers: BTreeMap<String, PathBuf>,
    /// The handler used for `""`.
    pub default_handler: Option<String>,
    /// The cgroup driver's manager: pod cgroups, container cgroup names.
    pub cgroups: Arc<dyn crius_cgroups::CgroupManager>,
}

#[derive(Debug, Clone, Default)]
pub struct PodFilter {
    /// A full id or a prefix of one.
    pub id: Option<String>,
    pub state: Option<PodState>,
    pub labels: BTreeMap<String, String>,
}

pub struct PodManager {
    opts: PodManagerOptions,
    ops: Arc<dyn SandboxOps>,
    network: Arc<dyn PodNetwork>,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    /// Serialises work on one pod (by id) or one pod name (while it is being created), so a
    /// retried RunPodSandbox waits for the first and then finds its pod.
    locks: KeyLocks,
    events: Arc<EventBus>,
}

impl PodManager {
    /// Where pod and container events are published.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// Loads every pod record. A record that cannot be read is set aside and logged; it never
    /// stops the others from loading.
    pub fn open(
        opts: PodManagerOptions,
        ops: Arc<dyn SandboxOps>,
        network: Arc<dyn PodNetwork>,
    ) -> Result<PodManager, RuntimeError> {
        create_dir_all(&opts.records_dir, 0o700)?;
        // Traversable but not listable; each pod's dir below is root's alone (containerd's
        // 0711/0700), so no host user reaches a pod's files or its /dev/shm.
        create_dir_with_mode(&opts.state_dir.join("pods"), 0o711)?;
        let mut pods = BTreeMap::new();
        let entries =
            fs::read_dir(&opts.records_dir).map_err(io_err("reading", &opts.records_dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_json::<PodRecord>(&path) {
                Ok(Some(mut pod)) => {
                    // After a reboot the runtime state is gone: the pod cannot run anything.
                    if pod.state == PodState::Ready && !pod.dir.is_dir() {
                        warn!(pod_id = %pod.id, "pod state directory is gone (reboot?); marking NotReady");
                        pod.state = PodState::NotReady;
                        let _ = write_json(&path, &pod);
                    }
                    pods.insert(pod.id.clone(), pod);
                }
                Ok(None) => {}
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    warn!(path = %path.display(), error = %e, "unreadable pod record set aside");
                    let _ = fs::rename(&path, &aside);
                }
            }
        }
        info!(pods = pods.len(), "pod records loaded");
        // Finish or undo what a crash left half-built before anything new starts.
        crate::recovery::recover_pods(
            &opts.records_dir,
            &opts.state_dir,
            ops.as_ref(),
            network.as_ref(),
            opts.cgroups.as_ref(),
            &pods,
        );
        Ok(PodManager {
            opts,
            ops,
            network,
            pods: Mutex::new(pods),
            locks: KeyLocks::default(),
            events: Arc::default(),
        })
    }

    pub fn cgroups(&self) -> &Arc<dyn crius_cgroups::CgroupManager> {
        &self.opts.cgroups
    }

    fn lock_pods(&self) -> MutexGuard<'_, BTreeMap<String, PodRecord>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.opts.records_dir.join(format!("{id}.json"))
    }

    /// The runtime handlers (found once, when criusd started) and the default one.
    pub fn runtime_handlers(&self) -> (&BTreeMap<String, PathBuf>, Option<&str>) {
        (&self.opts.handlers, self.opts.default_handler.as_deref())
    }

    /// The handler to use for `requested`, or an error naming the unknown one.
    pub fn resolve_handler(&self, requested: &str) -> Result<String, RuntimeError> {
        let name = if requested.is_empty() {
            self.opts.default_handler.clone().ok_or_else(|| {
                invalid(
                    "runtime_handler",
                    "no OCI runtime (crun or runc) is installed or configured",
                )
            })?
        } else {
            requested.to_string()
        };
        if !self.opts.handlers.contains_key(&name) {
            let known: Vec<&str> = self.opts.handlers.keys().map(String::as_str).collect();
            return Err(invalid(
                "runtime_handler",
                format!(
                    "unknown runtime handler {name:?} (known: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(name)
    }

    /// Creates a pod, or returns the existing one when the same pod (name, namespace, uid,
    /// attempt) was already created, e.g. by a call the kubelet timed out on.
    pub fn run(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, RuntimeError> {
        let handler = self.resolve_handler(runtime_handler)?;
        let plan = Plan::from_config(&config)?;
        crius_sandbox::validate_sysctls(&plan.sysctls, &plan.own).map_err(|source| {
            RuntimeError::Sandbox {
                pod_id: String::new(),
                source,
            }
        })?;
        let key = name_key(&config);
        let _guard = self.locks.lock(&key);
        if let Some(existing) = self.lock_pods().values().find(|p| p.name_key() == key) {
            info!(pod_id = %existing.id, "RunPodSandbox retried: returning the existing pod");
            return Ok(existing.id.clone());
        }

        let id = new_id();
        // A cgroup_parent in the wrong driver's form is refused before anything is made.
        let cgroup = crate::cgroups::for_config(self.opts.cgroups.as_ref(), &config, &id)?;
        let dir = self.opts.state_dir.join("pods").join(&id);
        // The intent is on disk before the first side effect: a crash from here on is undone
        // on the next start (recovery.rs).
        let records_dir = self.opts.records_dir.clone();
        crate::recovery::write_intent(
            &records_dir,
            &id,
            &crate::recovery::PodIntent {
                id: id.clone(),
                state: crate::recovery::IntentState::Creating,
                dir: dir.clone(),
                net_pin: self.opts.state_dir.join("netns").join(&id),
                config: config.clone(),
            },
        )?;
        let mut undo = Rollback::default();
        let i = id.clone();
        undo.push(move || crate::recovery::remove_intent(&records_dir, &i));
        create_dir_with_mode(&dir, 0o700)?;
        crate::recovery::crash_point("pod.dir");
        let d = dir.clone();
        undo.push(move || {
            let _ = fs::remove_dir_all(&d);
        });
        // Undone after the namespaces (and so the pod's init) are gone; nothing made is fine.
        let (cgroups, c) = (self.opts.cgroups.clone(), cgroup.clone());
        undo.push(move || {
            if let Err(e) = cgroups.remove_pod(&c) {
                warn!(error = %e, "rollback: removing the pod cgroup failed");
            }
        });
        if !config.log_directory.is_empty() {
            let log_dir = Path::new(&config.log_directory);
            if !log_dir.is_absolute() {
                return Err(invalid(
                    "config.log_directory",
                    format!("{:?} is not an absolute path", config.log_directory),
                ));
            }
            create_dir_all(log_dir, 0o755)?;
        }

        let pinned = self
            .ops
            .pin(&PinRequest {
                pod_id: id.clone(),
                types: plan.own.clone(),
                net_dir: self.opts.state_dir.join("netns"),
                ns_dir: dir.join("ns"),
                hostname: plan
                    .own
                    .contains(&NsType::Uts)
                    .then(|| plan.hostname.clone()),
                sysctls: plan.sysctls.clone(),
                loopback_up: true,
            })
            .map_err(|source| RuntimeError::Sandbox {
                pod_id: id.clone(),
                source,
            })?;
        let ops = self.ops.clone();
        let p = pinned.clone();
        undo.push(move || {
            if let Err(e) = ops.unpin(&p) {
                warn!(error = %e, "rollback: unpinning namespaces failed");
            }
        });
        crate::recovery::crash_point("pod.pinned");
        // The pod's own processes (its PID 1 here, its monitor later) count against the
        // pod's cgroup, with the sandbox's resources and overhead applied.
        let (resources, overhead) = crate::cgroups::sandbox_limits(&config);
        self.opts
            .cgroups
            .create_pod(
                &cgroup,
                &resources,
                &overhead,
                pinned.init.as_ref().map(|i| i.pid),
            )
            .map_err(crate::cgroups::cgroup_err(&id))?;

        let (shm, shm_mounted) = if plan.own.contains(&NsType::Ipc) {
            let shm = dir.join("shm");
            create_dir_all(&shm, 0o700)?;
            self.ops
                .mount_shm(&shm, crius_sandbox::DEFAULT_SHM_SIZE)
                .map_err(|source| RuntimeError::Sandbox {
                    pod_id: id.clone(),
                    source,
                })?;
            let ops = self.ops.clone();
            let s = shm.clone();
            undo.push(move || {
                let _ = ops.unmount_shm(&s);
            });
            crate::recovery::crash_point("pod.shm");
            (shm, true)
        } else {
            (PathBuf::from("/dev/shm"), false)
        };

        let sandbox_err = |source| RuntimeError::Sandbox {
            pod_id: id.clone(),
            source,
        };
        let hostname_file = dir.join("hostname");
        let resolv_conf = dir.join("resolv.conf");
        let hosts_file = dir.join("hosts");
        crius_sandbox::write_hostname(&hostname_file, &plan.hostname).map_err(sandbox_err)?;
        let dns = config.dns_config.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        crius_sandbox::write_resolv_conf(&resolv_conf, dns.as_ref()).map_err(sandbox_err)?;
        // The pod's network: attached through CNI (rolled back by CNI itself when a plugin
        // fails part-way, and detached here when a later step fails).
        let mut ips = Vec::new();
        if let Some(netns) = pinned.net.clone() {
            ips = self.network.setup(&id, &netns, &config).map_err(|source| {
                RuntimeError::Network {
                    pod_id: id.clone(),
                    source,
                }
            })?;
            let (network, pod_id, cfg) = (self.network.clone(), id.clone(), config.clone());
            undo.push(move || {
                if let Err(e) = network.teardown(&pod_id, &netns, &cfg) {
                    warn!(error = %e, "rollback: detaching the pod network failed");
                }
            });
        }
        crate::recovery::crash_point("pod.network");
        crius_sandbox::write_hosts(&hosts_file, &plan.hostname, &ips).map_err(sandbox_err)?;

        let record = PodRecord {
            id: id.clone(),
            config,
            runtime_handler: handler,
            created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            state: PodState::Ready,
            namespaces: pinned,
            dir,
            shm,
            shm_mounted,
            hostname_file,
            resolv_conf,
            hosts_file,
            ips: ips.iter().map(|ip| ip.to_string()).collect(),
        };
        write_json(&self.record_path(&id), &record)?;
        crate::recovery::crash_point("pod.record");
        self.lock_pods().insert(id.clone(), record);
        undo.disarm();
        crate::recovery::remove_intent(&self.opts.records_dir, &id);
        self.events.publish(&id, &id, EventKind::Created);
        self.events.publish(&id, &id, EventKind::Started);
        info!(pod_id = %id, "pod sandbox ready");
        Ok(id)
    }

    /// Resolves an id or unique id prefix; `Ok(None)` when no pod matches.
    pub fn find(&self, id: &str) -> Result<Option<PodRecord>, RuntimeError> {
        if id.is_empty() {
            return Err(invalid("pod_sandbox_id", "must not be empty"));
        }
        let pods = self.lock_pods();
        match resolve(id, pods.keys()) {
            Ok(found) => Ok(found.and_then(|id| pods.get(&id).cloned())),
            Err(()) => Err(RuntimeError::Ambiguous { prefix: id.into() }),
        }
    }

    pub fn get(&self, id: &str) -> Result<PodRecord, RuntimeError> {
        self.find(id)?
            .ok_or_else(|| RuntimeError::PodNotFound { id: id.into() })
    }

    /// Stops the pod: its namespaces and /dev/shm are released. Stopping a stopped or unknown
    /// pod succeeds.
    pub fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.lock_pod(&pod.id);
        self.stop_locked(&pod.id)
    }

    /// Holds pod `id` (a full id) against concurrent Run/Stop/Remove and container creation.
    pub(crate) fn lock_pod(&self, id: &str) -> KeyGuard<'_> {
        self.locks.lock(id)
    }

    /// [`PodManager::stop`] for a caller that holds the pod's lock.
    pub(crate) fn stop_locked(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.find(id)? else {
            return Ok(());
        };
        self.teardown(&pod)?;
        let mut pods = self.lock_pods();
        if let Some(p) = pods
            .get_mut(&pod.id)
            .filter(|p| p.state != PodState::NotReady)
        {
            p.state = PodState::NotReady;
            write_json(&self.record_path(&p.id), p)?;
            self.events.publish(&p.id, &p.id, EventKind::Stopped);
            info!(pod_id = %p.id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// Idempotent release of what the pod holds on the host.
    fn teardown(&self, pod: &PodRecord) -> Result<(), RuntimeError> {
        let err = |source| RuntimeError::Sandbox {
            pod_id: pod.id.clone(),
            source,
        };
        // DEL is always attempted, also when the namespace is already gone: plugins release
        // host-side state (IPs, NAT rules) that outlives it.
        if let Some(netns) = &pod.namespaces.net {
            self.network
                .teardown(&pod.id, netns, &pod.config)
                .map_err(|source| RuntimeError::Network {
                    pod_id: pod.id.clone(),
                    source,
                })?;
        }
        if pod.shm_mounted {
            self.ops.unmount_shm(&pod.shm).map_err(err)?;
        }
        self.ops.unpin(&pod.namespaces).map_err(err)?;
        Ok(())
    }

    /// Removes the pod: stopped first if needed, then every file of it. Removing an unknown
    /// pod succeeds.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.lock_pod(&pod.id);
        self.remove_locked(&pod.id)
    }

    /// [`PodManager::remove`] for a caller that holds the pod's lock.
    pub(crate) fn remove_locked(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.find(id)? else {
            return Ok(());
        };
        self.stop_locked(&pod.id)?;
        // Its processes are gone (init with the namespaces, the monitor released): the
        // cgroups go with the pod, before the record that names them.
        // A pod made under the other driver (the config changed since) is still removable.
        match crate::cgroups::for_config(self.opts.cgroups.as_ref(), &pod.config, &pod.id) {
            Ok(cgroup) => self
                .opts
                .cgroups
                .remove_pod(&cgroup)
                .map_err(crate::cgroups::cgroup_err(&pod.id))?,
            Err(e) => warn!(pod_id = %pod.id, error = %e, "pod cgroups not removed"),
        }
        removed(fs::remove_dir_all(&pod.dir), &pod.dir)?;
        let path = self.record_path(&pod.id);
        removed(fs::remove_file(&path), &path)?;
        self.lock_pods().remove(&pod.id);
        self.events.publish(&pod.id, &pod.id, EventKind::Deleted);
        info!(pod_id = %pod.id, "pod sandbox removed");
        Ok(())
    }

    pub fn list(&self, filter: &PodFilter) -> Vec<PodRecord> {
        self.lock_pods()
            .values()
            .filter(|p| {
                filter
                    .id
                    .as_ref()
                    .is_none_or(|id| p.id.starts_with(id.as_str()))
            })
            .filter(|p| filter.state.is_none_or(|s| p.state == s))
            .filter(|p| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| p.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect()
    }
}

/// What a pod config asks for, validated.
struct Plan {
    own: Vec<NsType>,
    hostname: String,
    sysctls: BTreeMap<String, String>,
}

impl Plan {
    fn from_config(config: &PodSandboxConfig) -> Result<Plan, RuntimeError> {
        let meta = config
            .metadata
            .as_ref()
            .ok_or_else(|| invalid("config.metadata", "is required"))?;
        for (field, value) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if value.is_empty() {
                return Err(invalid(
                    &format!("config.metadata.{field}"),
                    "must not be empty",
                ));
            }
            // Passed to CNI plugins in CNI_ARGS (`K=V;K=V`): a `;` or `=` would inject
            // arguments of its own (IP=, MAC=), control characters break logs and env.
            if value.len() > 253
                || value
                    .chars()
                    .any(|c| c == ';' || c == '=' || c.is_control() || c.is_whitespace())
            {
                return Err(invalid(
                    &format!("config.metadata.{field}"),
                    format!(
                        "{value:?} must be at most 253 characters without ';', '=', spaces \
                         or control characters"
                    ),
                ));
            }
        }
        for (i, p) in config.port_mappings.iter().enumerate() {
            let field = |f: &str| format!("config.port_mappings[{i}].{f}");
            if !(1..=65535).contains(&p.container_port) {
                return Err(invalid(
                    &field("container_port"),
                    format!("{} is not a port number (1-65535)", p.container_port),
                ));
            }
            // 0 means "no host port" (the mapping is only informational).
            if !(0..=65535).contains(&p.host_port) {
                return Err(invalid(
                    &field("host_port"),
                    format!("{} is not a port number (0-65535)", p.host_port),
                ));
            }
            if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    &field("host_ip"),
                    format!("{:?} is not an IP address", p.host_ip),
                ));
            }
        }
        let linux = config.linux.clone().unwrap_or_default();
        let ns = linux
            .security_context
            .and_then(|s| s.namespace_options)
            .unwrap_or_default();
        let mode = |v: i32, field: &str| {
            NamespaceMode::try_from(v).map_err(|_| {
                invalid(
                    &format!("config.linux.security_context.namespace_options.{field}"),
                    format!("unknown mode {v}"),
                )
            })
        };
        let network = mode(ns.network, "network")?;
        let pid = mode(ns.pid, "pid")?;
        let ipc = mode(ns.ipc, "ipc")?;
        if network == NamespaceMode::Target
            || ipc == NamespaceMode::Target
            || pid == NamespaceMode::Target
        {
            return Err(invalid(
                "config.linux.security_context.namespace_options",
                "TARGET mode is only valid for containers",
            ));
        }
        let mut own = Vec::new();
        if network != NamespaceMode::Node {
            // A host-network pod shares the host's UTS namespace too, as with the kubelet.
            own.push(NsType::Net);
            own.push(NsType::Uts);
        }
        if ipc != NamespaceMode::Node {
            own.push(NsType::Ipc);
        }
        if pid == NamespaceMode::Pod {
            own.push(NsType::Pid);
        }
        let hostname = if network == NamespaceMode::Node {
            nix_hostname()
        } else if config.hostname.is_empty() {
            hostname_from_pod_name(&meta.name)
        } else {
            config.hostname.clone()
        };
        if hostname.len() > 64
            || hostname.is_empty()
            || !hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "config.hostname",
                format!("{hostname:?} is not a valid hostname"),
            ));
        }
        Ok(Plan {
            own,
            hostname,
            sysctls: linux.sysctls.into_iter().collect(),
        })
    }
}

/// The hostname of a pod that names none: its name, as the kubelet derives it (cut to 63
/// characters, trailing `-` and `.` trimmed), with characters a hostname cannot hold replaced by
/// `-` (CRI clients other than the kubelet name pods freely).
fn hostname_from_pod_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        "localhost".into()
    } else {
        trimmed.into()
    }
}

fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::hostname_from_pod_name;

    #[test]
    fn hostname_from_a_long_pod_name_is_cut_as_the_kubelet_does() {
        // critest's pod names run to 60-70 characters.
        let name = "create-PodSandbox-for-container-with-a-very-long-name-0123456789-abcdef";
        let h = hostname_from_pod_name(name);
        assert_eq!(h.len(), 63);
        assert_eq!(h, &name[..63]);
        // The cut lands on a '-': trimmed, as the kubelet's truncateHostname does.
        let name = format!("{}-.-rest", "a".repeat(61));
        assert_eq!(hostname_from_pod_name(&name), "a".repeat(61));
    }

    #[test]
    fn hostname_from_a_pod_name_holds_only_hostname_characters() {
        assert_eq!(hostname_from_pod_name("web_1 x"), "web-1-x");
        assert_eq!(hostname_from_pod_name("nginx.default"), "nginx.default");
        assert_eq!(hostname_from_pod_name("___"), "localhost");
    }
}
