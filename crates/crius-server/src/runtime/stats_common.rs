//! Conversions shared by the stats RPCs: the runtime's usage samples as CRI messages.

use crius_runtime::{ContainerUsage, PodUsage};
use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

/// The interface the kubelet treats as the pod's default.
const DEFAULT_INTERFACE: &str = "eth0";

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

fn cpu(timestamp: i64, usage: Option<u64>, nano_cores: Option<u64>) -> Option<CpuUsage> {
    usage.map(|u| CpuUsage {
        timestamp,
        usage_core_nano_seconds: v(u),
        usage_nano_cores: nano_cores.and_then(v),
    })
}

fn memory(timestamp: i64, m: &Option<crius_cgroups::MemoryStats>) -> Option<MemoryUsage> {
    m.as_ref().map(|m| MemoryUsage {
        timestamp,
        working_set_bytes: v(m.working_set),
        available_bytes: m.available().and_then(v),
        usage_bytes: v(m.usage),
        rss_bytes: v(m.rss),
        page_faults: v(m.page_faults),
        major_page_faults: v(m.major_page_faults),
    })
}

pub fn container_stats(u: &ContainerUsage) -> ContainerStats {
    let c = &u.record;
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: cpu(u.timestamp, u.cgroup.cpu_usage_ns, u.nano_cores),
        memory: memory(u.timestamp, &u.cgroup.memory),
        writable_layer: u.writable_layer.map(|d| FilesystemUsage {
            timestamp: u.timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: u.writable_layer_dir.display().to_string(),
            }),
            used_bytes: v(d.bytes),
            inodes_used: v(d.inodes),
        }),
        swap: u.cgroup.memory.as_ref().and_then(|m| {
            m.swap_usage.map(|s| SwapUsage {
                timestamp: u.timestamp,
                swap_available_bytes: None,
                swap_usage_bytes: v(s),
            })
        }),
    }
}

pub fn pod_stats(u: &PodUsage) -> PodSandboxStats {
    let p = &u.pod;
    let interfaces: Vec<NetworkInterfaceUsage> = u
        .network
        .iter()
        .map(|i| NetworkInterfaceUsage {
            name: i.name.clone(),
            rx_bytes: v(i.rx_bytes),
            rx_errors: v(i.rx_errors),
            tx_bytes: v(i.tx_bytes),
            tx_errors: v(i.tx_errors),
        })
        .collect();
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: p.id.clone(),
            metadata: p.config.metadata.clone(),
            labels: p.config.labels.clone(),
            annotations: p.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cpu(u.timestamp, u.cgroup.cpu_usage_ns, u.nano_cores),
            memory: memory(u.timestamp, &u.cgroup.memory),
            network: (!interfaces.is_empty()).then(|| NetworkUsage {
                timestamp: u.timestamp,
                default_interface: interfaces
                    .iter()
                    .find(|i| i.name == DEFAULT_INTERFACE)
                    .or(interfaces.first())
                    .cloned(),
                interfaces,
            }),
            process: u.cgroup.pids.map(|n| ProcessUsage {
                timestamp: u.timestamp,
                process_count: v(n),
            }),
            containers: u.containers.iter().map(container_stats).collect(),
        }),
        windows: None,
    }
}
