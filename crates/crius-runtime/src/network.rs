//! Pod networking behind a trait: CNI in production, a stand-in in tests that inject faults.

use std::net::IpAddr;
use std::path::Path;

use crius_cni::{
    Attachment, CniError, CniManager, Dns, NetworkStatus, PodArgs, PortMapping, RuntimeConfig,
};
use k8s_cri::v1::PodSandboxConfig;

pub trait PodNetwork: Send + Sync {
    /// Attaches the pod's network namespace; returns its IPs, primary first.
    fn setup(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &PodSandboxConfig,
    ) -> Result<Vec<IpAddr>, CniError>;
    /// Detaches it; idempotent, also when the namespace is already gone.
    fn teardown(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &PodSandboxConfig,
    ) -> Result<(), CniError>;
}

/// The interface name every pod gets, as with the kubelet's other runtimes.
pub const POD_IFNAME: &str = "eth0";

pub struct CniNetwork {
    pub manager: CniManager,
    /// The pod CIDR from UpdateRuntimeConfig, for plugins that take `ipRanges`.
    pub pod_cidr: std::sync::RwLock<String>,
    /// The last network status and when it was taken: the kubelet polls Status every few
    /// seconds, and a CNI 1.1 STATUS forks every plugin of the chain.
    status: std::sync::Mutex<Option<(std::time::Instant, NetworkStatus)>>,
}

/// How long a network status is reused.
const STATUS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl CniNetwork {
    pub fn new(manager: CniManager) -> CniNetwork {
        CniNetwork {
            manager,
            pod_cidr: Default::default(),
            status: Default::default(),
        }
    }

    /// The NetworkReady condition, taken at most every few seconds. Blocking (it may run the
    /// plugins' STATUS).
    pub fn status(&self) -> NetworkStatus {
        let mut cached = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = cached.as_ref()
            && at.elapsed() < STATUS_TTL
        {
            return s.clone();
        }
        let s = self.manager.network_status();
        // Only readiness is reused: a network that is not ready yet (no config, a missing
        // plugin) is looked at again on the next poll, so a node becomes ready at once.
        *cached = s.ready.then(|| (std::time::Instant::now(), s.clone()));
        s
    }

    fn attachment(&self, pod_id: &str, netns: &Path, config: &PodSandboxConfig) -> Attachment {
        let meta = config.metadata.clone().unwrap_or_default();
        let port_mappings = config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| PortMapping {
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: match k8s_cri::v1::Protocol::try_from(p.protocol) {
                    Ok(k8s_cri::v1::Protocol::Udp) => "udp".into(),
                    Ok(k8s_cri::v1::Protocol::Sctp) => "sctp".into(),
                    _ => "tcp".into(),
                },
                host_ip: p.host_ip.clone(),
            })
            .collect();
        let dns = config.dns_config.as_ref().map(|d| Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        let cidr = self
            .pod_cidr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ip_ranges = cidr
            .split(',')
            .filter(|c| !c.trim().is_empty())
            .map(|c| {
                vec![crius_cni::IpRange {
                    subnet: c.trim().to_string(),
                    ..Default::default()
                }]
            })
            .collect();
        Attachment {
            container_id: pod_id.into(),
            netns: netns.into(),
            ifname: POD_IFNAME.into(),
            args: PodArgs {
                namespace: meta.namespace,
                name: meta.name,
                uid: meta.uid,
            },
            capabilities: RuntimeConfig {
                port_mappings,
                dns,
                ip_ranges,
                bandwidth: None,
            },
        }
    }
}

impl PodNetwork for CniNetwork {
    fn setup(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &PodSandboxConfig,
    ) -> Result<Vec<IpAddr>, CniError> {
        let result = self.manager.add(&self.attachment(pod_id, netns, config))?;
        Ok(result
            .ips()
            .map(|(first, rest)| std::iter::once(first).chain(rest).collect())
            .unwrap_or_default())
    }

    fn teardown(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &PodSandboxConfig,
    ) -> Result<(), CniError> {
        self.manager.del(&self.attachment(pod_id, netns, config))
    }
}
