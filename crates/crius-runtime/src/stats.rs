//! Resource usage of containers and pods for the stats RPCs: each container's cgroup and
//! writable layer, each pod's cgroup parent (which holds its containers) and network namespace.
//!
//! CPU usage in nano-cores is the rate between this sample and the previous one of the same
//! container or pod, as the kubelet expects (containerd keeps the last sample the same way); a
//! first sample has no rate. Walking a large writable layer is costly, so its size is cached
//! for a few seconds and the walk stops at a bound a container cannot push further.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crius_cgroups::net::InterfaceStats;
use crius_cgroups::{CgroupStats, Hierarchy, read_stats};

use crate::containers::{ContainerFilter, ContainerManager, ContainerRecord};
use crate::error::RuntimeError;
use crate::pods::{PodFilter, PodManager};
use crate::record::PodRecord;

/// How long a writable layer's measured size is reused.
const DISK_TTL: Duration = Duration::from_secs(10);
/// The most entries one walk of a writable layer visits.
const DISK_WALK_LIMIT: u64 = 1_000_000;

/// A container's usage at `timestamp` (Unix nanoseconds).
#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub record: ContainerRecord,
    pub timestamp: i64,
    pub cgroup: CgroupStats,
    pub nano_cores: Option<u64>,
    pub writable_layer: Option<DiskUsage>,
    /// The directory the writable layer lives in (its filesystem's mount point is looked up by
    /// the caller if it wants one).
    pub writable_layer_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// A pod's usage: its cgroup parent, its network, its containers.
#[derive(Debug, Clone)]
pub struct PodUsage {
    pub pod: PodRecord,
    pub timestamp: i64,
    pub cgroup: CgroupStats,
    pub nano_cores: Option<u64>,
    pub network: Vec<InterfaceStats>,
    pub containers: Vec<ContainerUsage>,
}

pub struct StatsCollector {
    pods: Arc<PodManager>,
    containers: Arc<ContainerManager>,
    hierarchy: Hierarchy,
    /// id → (timestamp, cumulative CPU ns) of the previous sample.
    cpu: Mutex<HashMap<String, (i64, u64)>>,
    disk: Mutex<HashMap<String, (Instant, DiskUsage)>>,
}

impl StatsCollector {
    pub fn new(pods: Arc<PodManager>, containers: Arc<ContainerManager>) -> StatsCollector {
        StatsCollector {
            pods,
            containers,
            hierarchy: Hierarchy::host(),
            cpu: Mutex::default(),
            disk: Mutex::default(),
        }
    }

    pub fn container(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        let c = self.containers.get(id)?;
        let pod = self.pods.get(&c.pod_id)?;
        Ok(self.container_usage(&pod, c))
    }

    pub fn containers(&self, filter: &ContainerFilter) -> Vec<ContainerUsage> {
        let list = self.containers.list(filter);
        let mut pods: HashMap<String, Option<PodRecord>> = HashMap::new();
        let out = list
            .into_iter()
            .filter_map(|c| {
                let pod = pods
                    .entry(c.pod_id.clone())
                    .or_insert_with(|| self.pods.get(&c.pod_id).ok())
                    .clone()?;
                Some(self.container_usage(&pod, c))
            })
            .collect();
        self.forget_gone();
        out
    }

    pub fn pod(&self, id: &str) -> Result<PodUsage, RuntimeError> {
        let pod = self.pods.get(id)?;
        let containers = self
            .containers
            .in_pod(&pod.id)
            .iter()
            .filter_map(|c| self.containers.refresh(c).ok())
            .collect();
        Ok(self.pod_usage(pod, containers))
    }

    pub fn pods(&self, filter: &PodFilter) -> Vec<PodUsage> {
        // Every container's status is refreshed once, then grouped by pod: listing per pod
        // would refresh them all once per pod (10,000 refreshes for 100 pods).
        let mut by_pod: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
        for c in self.containers.list(&ContainerFilter::default()) {
            by_pod.entry(c.pod_id.clone()).or_default().push(c);
        }
        let out = self
            .pods
            .list(filter)
            .into_iter()
            .map(|p| {
                let containers = by_pod.remove(&p.id).unwrap_or_default();
                self.pod_usage(p, containers)
            })
            .collect();
        self.forget_gone();
        out
    }

    fn pod_usage(&self, pod: PodRecord, containers: Vec<ContainerRecord>) -> PodUsage {
        let timestamp = now();
        let cgroup = crate::containers::pod_dir(&self.pods, &pod)
            .map(|d| read_stats(&self.hierarchy, &d))
            .unwrap_or_default();
        let nano_cores = self.rate(&format!("pod:{}", pod.id), timestamp, cgroup.cpu_usage_ns);
        let network = pod
            .namespaces
            .net
            .as_ref()
            .and_then(|ns| crius_cgroups::net::interfaces_in(ns).ok())
            .unwrap_or_default();
        let containers = containers
            .into_iter()
            .map(|c| self.container_usage(&pod, c))
            .collect();
        PodUsage {
            pod,
            timestamp,
            cgroup,
            nano_cores,
            network,
            containers,
        }
    }

    fn container_usage(&self, pod: &PodRecord, record: ContainerRecord) -> ContainerUsage {
        let timestamp = now();
        let cgroup = crate::containers::container_dir(&self.pods, pod, &record.id)
            .map(|d| read_stats(&self.hierarchy, &d))
            .unwrap_or_default();
        let nano_cores = self.rate(&record.id, timestamp, cgroup.cpu_usage_ns);
        let dir = self.containers.writable_layer(&record.id);
        let writable_layer = self.disk_usage(&record.id, &dir);
        ContainerUsage {
            record,
            timestamp,
            cgroup,
            nano_cores,
            writable_layer,
            writable_layer_dir: dir,
        }
    }

    /// CPU nano-cores since the previous sample of `key`; this sample becomes the previous.
    fn rate(&self, key: &str, timestamp: i64, usage: Option<u64>) -> Option<u64> {
        let usage = usage?;
        let mut cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let prev = cpu.insert(key.to_string(), (timestamp, usage));
        let (t0, u0) = prev?;
        let dt = u64::try_from(timestamp - t0).ok().filter(|dt| *dt > 0)?;
        Some((u128::from(usage.saturating_sub(u0)) * 1_000_000_000 / u128::from(dt)) as u64)
    }

    fn disk_usage(&self, id: &str, dir: &Path) -> Option<DiskUsage> {
        if let Some((at, usage)) = self
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
            && at.elapsed() < DISK_TTL
        {
            return Some(usage);
        }
        let usage = walk(dir)?;
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (Instant::now(), usage));
        Some(usage)
    }

    /// Every container's writable layer together (ImageFsInfo's container filesystem).
    pub fn writable_layers(&self) -> DiskUsage {
        let mut total = DiskUsage::default();
        for id in self.containers.ids() {
            if let Some(u) = self.disk_usage(&id, &self.containers.writable_layer(&id)) {
                total.bytes += u.bytes;
                total.inodes += u.inodes;
            }
        }
        total
    }

    /// Drops samples of containers and pods that no longer exist (from the in-memory
    /// records: no status refresh).
    fn forget_gone(&self) {
        let mut known = std::collections::HashSet::new();
        for p in self.pods.list(&PodFilter::default()) {
            known.extend(self.containers.in_pod(&p.id));
            known.insert(format!("pod:{}", p.id));
        }
        let known = |k: &String| known.contains(k);
        self.cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| known(k));
        self.disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| known(k));
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// Bytes (allocated blocks, as `du`) and inodes under `dir`, hard links counted once, without
/// following symlinks or leaving the filesystem.
fn walk(dir: &Path) -> Option<DiskUsage> {
    let top = std::fs::symlink_metadata(dir).ok()?;
    let mut usage = DiskUsage {
        bytes: top.blocks() * 512,
        inodes: 1,
    };
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0u64;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            visited += 1;
            if visited > DISK_WALK_LIMIT {
                return Some(usage);
            }
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != top.dev() || (m.nlink() > 1 && !seen.insert(m.ino())) {
                continue;
            }
            usage.bytes += m.blocks() * 512;
            usage.inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_counts_blocks_and_inodes_once_per_hard_link() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(d.path().join("sub/a"), d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let u = walk(d.path()).unwrap();
        // top, sub, a (b is the same inode), link
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 100_000 && u.bytes < 200_000, "{u:?}");
        assert_eq!(walk(&d.path().join("missing")), None);
    }
}
