//! The cadvisor metrics the kubelet exposes when the runtime provides them (KEP-2371):
//! their descriptors and their values from the runtime's usage samples.
//!
//! Every metric carries the base labels below, in this order, then its own (`cpu`,
//! `interface`, ...). Values are integers (the CRI `Metric` holds a `UInt64Value`), so the
//! `*_seconds_total` counters are whole seconds, as CRI-O reports them too. Pod-level
//! metrics (the pod cgroup and its network) have an empty `container`, `image` and `name`.

use std::path::Path;

use crius_runtime::{ContainerUsage, PodUsage};
use k8s_cri::v1::{ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics};

/// Labels of every metric: the same keys the kubelet's cadvisor puts on container metrics.
const BASE: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const NS_PER_S: u64 = 1_000_000_000;

/// One metric family: what ListMetricDescriptors announces and what the values refer to.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Labels after [`BASE`].
    pub extra: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        kind: MetricType::Counter,
        extra,
    }
}

const fn gauge(name: &'static str, help: &'static str, extra: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        kind: MetricType::Gauge,
        extra,
    }
}

const IFACE: &[&str] = &["interface"];
const DEVICE: &[&str] = &["device"];

pub const FAMILIES: &[Family] = &[
    counter(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        &["cpu"],
    ),
    counter(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        &[],
    ),
    counter(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        &[],
    ),
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
    ),
    gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
    ),
    gauge("container_memory_rss", "Size of RSS in bytes.", &[]),
    gauge(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        &[],
    ),
    gauge(
        "container_memory_swap",
        "Container swap usage in bytes.",
        &[],
    ),
    counter(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        &[],
    ),
    counter(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
    ),
    gauge(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
    ),
    gauge(
        "container_processes",
        "Number of processes running inside the container.",
        &[],
    ),
    gauge(
        "container_threads",
        "Number of threads running inside the container",
        &[],
    ),
    gauge(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        DEVICE,
    ),
    gauge(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        DEVICE,
    ),
    gauge("container_fs_inodes_total", "Number of Inodes", DEVICE),
    gauge(
        "container_fs_inodes_free",
        "Number of available Inodes",
        DEVICE,
    ),
    gauge(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
    ),
    gauge(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        &[],
    ),
    counter(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        IFACE,
    ),
    counter(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        IFACE,
    ),
    counter(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        IFACE,
    ),
    counter(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        IFACE,
    ),
    counter(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        IFACE,
    ),
    counter(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        IFACE,
    ),
    counter(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        IFACE,
    ),
    counter(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        IFACE,
    ),
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| MetricDescriptor {
            name: f.name.to_string(),
            help: f.help.to_string(),
            label_keys: BASE.iter().chain(f.extra).map(|k| k.to_string()).collect(),
        })
        .collect()
}

/// Collects metrics of one container or pod: its base label values and sample time.
struct Out {
    base: Vec<String>,
    timestamp: i64,
    metrics: Vec<Metric>,
}

impl Out {
    fn push(&mut self, name: &str, extra: &[&str], value: u64) {
        let Some(f) = FAMILIES.iter().find(|f| f.name == name) else {
            debug_assert!(false, "no descriptor for {name}");
            return;
        };
        debug_assert_eq!(f.extra.len(), extra.len(), "labels of {name}");
        self.metrics.push(Metric {
            name: name.to_string(),
            timestamp: self.timestamp,
            metric_type: f.kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|v| v.to_string()))
                .collect(),
            value: Some(k8s_cri::v1::UInt64Value { value }),
        });
    }

    /// The metrics read from a cgroup: CPU, memory, tasks.
    fn cgroup(&mut self, c: &crius_cgroups::CgroupStats) {
        if let Some(ns) = c.cpu_usage_ns {
            self.push(
                "container_cpu_usage_seconds_total",
                &["total"],
                ns / NS_PER_S,
            );
        }
        if let Some(ns) = c.cpu_user_ns {
            self.push("container_cpu_user_seconds_total", &[], ns / NS_PER_S);
        }
        if let Some(ns) = c.cpu_system_ns {
            self.push("container_cpu_system_seconds_total", &[], ns / NS_PER_S);
        }
        if let Some(m) = &c.memory {
            self.push("container_memory_usage_bytes", &[], m.usage);
            self.push("container_memory_working_set_bytes", &[], m.working_set);
            self.push("container_memory_rss", &[], m.rss);
            self.push("container_memory_cache", &[], m.cache);
            self.push("container_memory_swap", &[], m.swap_usage.unwrap_or(0));
            self.push("container_memory_failcnt", &[], m.failcnt);
            // memory.stat's fault counts cover the cgroup's subtree.
            let failures = "container_memory_failures_total";
            self.push(failures, &["pgfault", "hierarchy"], m.page_faults);
            self.push(failures, &["pgmajfault", "hierarchy"], m.major_page_faults);
            // cadvisor reports no limit as 0.
            self.push(
                "container_spec_memory_limit_bytes",
                &[],
                m.limit.unwrap_or(0),
            );
        }
        if let Some(n) = c.processes {
            self.push("container_processes", &[], n);
        }
        if let Some(n) = c.pids {
            self.push("container_threads", &[], n);
        }
    }
}

pub fn pod_metrics(u: &PodUsage) -> PodSandboxMetrics {
    let meta = u.pod.config.metadata.clone().unwrap_or_default();
    let mut pod = Out {
        base: vec![
            String::new(),
            u.pod.id.clone(),
            String::new(),
            String::new(),
            meta.namespace.clone(),
            meta.name.clone(),
        ],
        timestamp: u.timestamp,
        metrics: Vec::new(),
    };
    pod.cgroup(&u.cgroup);
    for i in &u.network {
        let iface = [i.name.as_str()];
        pod.push("container_network_receive_bytes_total", &iface, i.rx_bytes);
        pod.push(
            "container_network_receive_packets_total",
            &iface,
            i.rx_packets,
        );
        pod.push(
            "container_network_receive_packets_dropped_total",
            &iface,
            i.rx_dropped,
        );
        pod.push(
            "container_network_receive_errors_total",
            &iface,
            i.rx_errors,
        );
        pod.push("container_network_transmit_bytes_total", &iface, i.tx_bytes);
        pod.push(
            "container_network_transmit_packets_total",
            &iface,
            i.tx_packets,
        );
        pod.push(
            "container_network_transmit_packets_dropped_total",
            &iface,
            i.tx_dropped,
        );
        pod.push(
            "container_network_transmit_errors_total",
            &iface,
            i.tx_errors,
        );
    }
    pod.push(
        "container_last_seen",
        &[],
        (u.timestamp.max(0) as u64) / NS_PER_S,
    );
    PodSandboxMetrics {
        pod_sandbox_id: u.pod.id.clone(),
        metrics: pod.metrics,
        container_metrics: u
            .containers
            .iter()
            .filter(|c| c.record.state == crius_runtime::ContainerState::Running)
            .map(|c| container_metrics(c, &meta.namespace, &meta.name))
            .collect(),
    }
}

fn container_metrics(u: &ContainerUsage, namespace: &str, pod: &str) -> ContainerMetrics {
    let c = &u.record;
    let name = c
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut out = Out {
        base: vec![
            name.clone(),
            c.id.clone(),
            c.image.clone(),
            name,
            namespace.to_string(),
            pod.to_string(),
        ],
        timestamp: u.timestamp,
        metrics: Vec::new(),
    };
    out.cgroup(&u.cgroup);
    let device = u.writable_layer_dir.display().to_string();
    let device = [device.as_str()];
    if let Some(d) = u.writable_layer {
        out.push("container_fs_usage_bytes", &device, d.bytes);
    }
    if let Some(fs) = filesystem(&u.writable_layer_dir) {
        out.push("container_fs_limit_bytes", &device, fs.bytes);
        out.push("container_fs_inodes_total", &device, fs.inodes);
        out.push("container_fs_inodes_free", &device, fs.inodes_free);
    }
    if c.started_at > 0 {
        out.push(
            "container_start_time_seconds",
            &[],
            c.started_at as u64 / NS_PER_S,
        );
    }
    out.push(
        "container_last_seen",
        &[],
        (u.timestamp.max(0) as u64) / NS_PER_S,
    );
    ContainerMetrics {
        container_id: c.id.clone(),
        metrics: out.metrics,
    }
}

struct FsSize {
    bytes: u64,
    inodes: u64,
    inodes_free: u64,
}

/// The size of the filesystem holding `dir`.
fn filesystem(dir: &Path) -> Option<FsSize> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(FsSize {
        bytes: s.blocks() as u64 * s.fragment_size() as u64,
        inodes: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_are_unique_and_types_follow_the_prometheus_conventions() {
        let d = descriptors();
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            // Counters end in _total (or are cadvisor's failcnt); nothing else does but
            // cadvisor's gauge of the filesystem's inodes.
            let total = (f.name.ends_with("_total") && f.name != "container_fs_inodes_total")
                || f.name == "container_memory_failcnt";
            assert_eq!(f.kind == MetricType::Counter, total, "{}", f.name);
        }
        let keys: HashMap<&str, &Vec<String>> =
            d.iter().map(|d| (d.name.as_str(), &d.label_keys)).collect();
        assert_eq!(
            keys["container_network_receive_bytes_total"],
            &[
                "container",
                "id",
                "image",
                "name",
                "namespace",
                "pod",
                "interface"
            ]
        );
    }
}
