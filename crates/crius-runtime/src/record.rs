use std::path::PathBuf;

use crius_sandbox::PinnedNamespaces;
use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

/// Everything crius knows about a pod; persisted atomically on every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    /// The handler asked for, resolved (never empty).
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub state: PodState,
    pub namespaces: PinnedNamespaces,
    /// `<state>/pods/<id>`: runtime files of the pod.
    pub dir: PathBuf,
    /// The pod's /dev/shm: a tmpfs mounted by crius, or the host's for host-IPC pods.
    pub shm: PathBuf,
    pub shm_mounted: bool,
    pub hostname_file: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts_file: PathBuf,
    /// The pod's IPs from its network, primary first (empty for host-network pods).
    #[serde(default)]
    pub ips: Vec<String>,
}

impl PodRecord {
    pub fn name_key(&self) -> String {
        name_key(&self.config)
    }
}

/// The kubelet's unique name of a pod sandbox: name, namespace, uid and attempt.
pub fn name_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}
