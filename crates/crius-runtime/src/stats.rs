//! Resource usage of containers and pods for the stats RPCs: each container's cgroup and
//! writable layer, each pod's cgroup parent (which holds its containers) and network namespace.
//!
//! One sample of a container or pod serves every caller for [`SAMPLE_TTL`]: the kubelet's
//! summary API, its eviction manager, metrics scrapes and ListPodSandboxMetrics ask for the same
//! numbers at about the same time, and one read serves them all (cAdvisor's housekeeping does
//! the same). Concurrent refreshes wait for one another rather than read twice.
//!
//! CPU usage in nano-cores is the rate between a new sample and the one it replaces, as the
//! kubelet expects (containerd keeps the last sample the same way); a first sample has no rate.
//! A sample is only replaced once it is [`SAMPLE_TTL`] old, so the rate's window is at least
//! that long whoever asked in between: a caller cannot shrink another's window to a few
//! milliseconds, where CPU accounting (updated at scheduler ticks) reads 0 or several cores.
//!
//! Walking a large writable layer is costly: its size is cached for [`DISK_TTL`], renewed in
//! the background once stale (the stale size is returned meanwhile), and the walk stops at a
//! bound a container cannot push further.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crius_cgroups::net::InterfaceStats;
use crius_cgroups::{CgroupStats, Hierarchy, read_stats};

use crate::containers::{ContainerFilter, ContainerManager, ContainerRecord};
use crate::error::RuntimeError;
use crate::pods::{PodFilter, PodManager};
use crate::record::PodRecord;
use crate::stats_net::NetReader;

/// How long a sample is reused, and the shortest window nano-cores are computed over.
const SAMPLE_TTL: Duration = Duration::from_secs(1);
/// How long a writable layer's measured size is used before it is measured again.
const DISK_TTL: Duration = Duration::from_secs(10);
/// The most entries one walk of a writable layer visits.
const DISK_WALK_LIMIT: u64 = 1_000_000;
/// Cgroups one thread reads before another one helps, and the most threads reading.
const READS_PER_THREAD: usize = 48;
const MAX_READ_THREADS: usize = 4;

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

/// One read of a container's or pod's cgroup (and a pod's network).
#[derive(Debug, Clone)]
struct Sample {
    read_at: Instant,
    timestamp: i64,
    cgroup: CgroupStats,
    nano_cores: Option<u64>,
    network: Vec<InterfaceStats>,
}

/// What to read for one container or pod.
struct Target {
    /// The container's id, or `pod:<id>`.
    key: String,
    cgroup: Option<String>,
    netns: Option<PathBuf>,
}

pub struct StatsCollector {
    pods: Arc<PodManager>,
    containers: Arc<ContainerManager>,
    hierarchy: Hierarchy,
    /// Key → its latest sample (containers and pods that exist: see `forget_gone`).
    samples: Mutex<HashMap<String, Sample>>,
    /// Held while reading: a concurrent caller waits, then finds the fresh samples.
    refresh: Mutex<()>,
    net: NetReader,
    disk: Arc<DiskCache>,
}

impl StatsCollector {
    pub fn new(pods: Arc<PodManager>, containers: Arc<ContainerManager>) -> StatsCollector {
        StatsCollector {
            pods,
            containers,
            hierarchy: Hierarchy::host(),
            samples: Mutex::default(),
            refresh: Mutex::default(),
            net: NetReader::default(),
            disk: Arc::new(DiskCache::new(DISK_TTL)),
        }
    }

    pub fn container(&self, id: &str) -> Result<ContainerUsage, RuntimeError> {
        let c = self.containers.get(id)?;
        let pod = self.pods.get(&c.pod_id)?;
        let target = self.container_target(&pod, &c);
        let sample = self.sample(&[target]).pop().unwrap_or_else(empty_sample);
        Ok(self.container_usage(c, sample))
    }

    pub fn containers(&self, filter: &ContainerFilter) -> Vec<ContainerUsage> {
        let list = self.containers.list_recorded(filter);
        let mut pods: HashMap<String, Option<PodRecord>> = HashMap::new();
        let mut records = Vec::with_capacity(list.len());
        let mut targets = Vec::with_capacity(list.len());
        for c in list {
            let pod = pods
                .entry(c.pod_id.clone())
                .or_insert_with(|| self.pods.get(&c.pod_id).ok());
            // A container whose pod is gone is left out.
            let Some(pod) = pod else { continue };
            targets.push(self.container_target(pod, &c));
            records.push(c);
        }
        let out = records
            .into_iter()
            .zip(self.sample(&targets))
            .map(|(c, s)| self.container_usage(c, s))
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
            .filter_map(|c| self.containers.get(c).ok())
            .collect();
        self.pod_usages(vec![(pod, containers)])
            .pop()
            .ok_or_else(|| RuntimeError::PodNotFound { id: id.into() })
    }

    pub fn pods(&self, filter: &PodFilter) -> Vec<PodUsage> {
        // Every container once, then grouped by pod (listing per pod scans them all per pod).
        let mut by_pod: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
        for c in self.containers.list_recorded(&ContainerFilter::default()) {
            by_pod.entry(c.pod_id.clone()).or_default().push(c);
        }
        let pods = self
            .pods
            .list(filter)
            .into_iter()
            .map(|p| {
                let containers = by_pod.remove(&p.id).unwrap_or_default();
                (p, containers)
            })
            .collect();
        let out = self.pod_usages(pods);
        self.forget_gone();
        out
    }

    /// Samples of the pods and their containers, read together.
    fn pod_usages(&self, pods: Vec<(PodRecord, Vec<ContainerRecord>)>) -> Vec<PodUsage> {
        let mut targets = Vec::new();
        for (pod, containers) in &pods {
            targets.push(Target {
                key: pod_key(&pod.id),
                cgroup: crate::containers::pod_dir(&self.pods, pod),
                netns: pod.namespaces.net.clone(),
            });
            targets.extend(containers.iter().map(|c| self.container_target(pod, c)));
        }
        let mut samples = self.sample(&targets).into_iter();
        pods.into_iter()
            .map(|(pod, containers)| {
                let s = samples.next().unwrap_or_else(empty_sample);
                let containers = containers
                    .into_iter()
                    .map(|c| {
                        let cs = samples.next().unwrap_or_else(empty_sample);
                        self.container_usage(c, cs)
                    })
                    .collect();
                PodUsage {
                    pod,
                    timestamp: s.timestamp,
                    cgroup: s.cgroup,
                    nano_cores: s.nano_cores,
                    network: s.network,
                    containers,
                }
            })
            .collect()
    }

    fn container_target(&self, pod: &PodRecord, c: &ContainerRecord) -> Target {
        Target {
            key: c.id.clone(),
            cgroup: crate::containers::container_dir(&self.pods, pod, &c.id),
            netns: None,
        }
    }

    fn container_usage(&self, record: ContainerRecord, s: Sample) -> ContainerUsage {
        let dir = self.containers.writable_layer(&record.id);
        let writable_layer = self.disk.usage(&record.id, &dir);
        ContainerUsage {
            record,
            timestamp: s.timestamp,
            cgroup: s.cgroup,
            nano_cores: s.nano_cores,
            writable_layer,
            writable_layer_dir: dir,
        }
    }

    /// The sample of each target, in order: the cached one if it is fresh, else a new read
    /// (cgroups on this and helper threads, networks on the network thread meanwhile).
    fn sample(&self, targets: &[Target]) -> Vec<Sample> {
        let _one_reader = lock(&self.refresh);
        let started = Instant::now();
        let mut out: Vec<Option<Sample>> = {
            let cache = lock(&self.samples);
            targets
                .iter()
                .map(|t| {
                    cache
                        .get(&t.key)
                        .filter(|s| started.duration_since(s.read_at) < SAMPLE_TTL)
                        .cloned()
                })
                .collect()
        };
        let stale: Vec<usize> = (0..targets.len()).filter(|i| out[*i].is_none()).collect();
        if stale.is_empty() {
            return out.into_iter().flatten().collect();
        }
        let with_net: Vec<usize> = stale
            .iter()
            .copied()
            .filter(|i| targets[*i].netns.is_some())
            .collect();
        let pending = self.net.submit(
            with_net
                .iter()
                .filter_map(|i| targets[*i].netns.clone())
                .collect(),
        );
        let dirs: Vec<Option<&str>> = stale
            .iter()
            .map(|i| targets[*i].cgroup.as_deref())
            .collect();
        let read = read_cgroups(&self.hierarchy, &dirs);
        let cgroups_done = started.elapsed();
        let mut networks: HashMap<usize, Vec<InterfaceStats>> = with_net
            .into_iter()
            .zip(pending.wait())
            .filter_map(|(i, n)| Some((i, n?)))
            .collect();
        // Where a fresh sample's time goes (hack/bench-stats.sh reports these).
        tracing::debug!(
            cached = targets.len() - stale.len(),
            read = stale.len(),
            cgroups_us = cgroups_done.as_micros() as u64,
            network_wait_us = (started.elapsed() - cgroups_done).as_micros() as u64,
            "stats sampled"
        );
        let mut cache = lock(&self.samples);
        for (i, (timestamp, cgroup)) in stale.into_iter().zip(read) {
            let t = &targets[i];
            let nano_cores = cache.get(&t.key).and_then(|prev| {
                rate(
                    (prev.timestamp, prev.cgroup.cpu_usage_ns?),
                    (timestamp, cgroup.cpu_usage_ns?),
                )
            });
            let s = Sample {
                read_at: started,
                timestamp,
                cgroup,
                nano_cores,
                network: networks.remove(&i).unwrap_or_default(),
            };
            cache.insert(t.key.clone(), s.clone());
            out[i] = Some(s);
        }
        out.into_iter()
            .map(|s| s.unwrap_or_else(empty_sample))
            .collect()
    }

    /// Every container's writable layer together (ImageFsInfo's container filesystem).
    pub fn writable_layers(&self) -> DiskUsage {
        let mut total = DiskUsage::default();
        for id in self.containers.ids() {
            if let Some(u) = self.disk.usage(&id, &self.containers.writable_layer(&id)) {
                total.bytes += u.bytes;
                total.inodes += u.inodes;
            }
        }
        total
    }

    /// Drops samples of containers and pods that no longer exist (from the in-memory
    /// records: no status refresh).
    fn forget_gone(&self) {
        let mut known: HashSet<String> = self.containers.ids().into_iter().collect();
        known.extend(
            self.pods
                .list(&PodFilter::default())
                .iter()
                .map(|p| pod_key(&p.id)),
        );
        lock(&self.samples).retain(|k, _| known.contains(k));
        lock(&self.disk.sizes).retain(|k, _| known.contains(k));
    }
}

fn pod_key(id: &str) -> String {
    format!("pod:{id}")
}

fn empty_sample() -> Sample {
    Sample {
        read_at: Instant::now(),
        timestamp: now(),
        cgroup: CgroupStats::default(),
        nano_cores: None,
        network: Vec::new(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CPU nano-cores between two `(timestamp ns, cumulative CPU ns)` samples.
fn rate(before: (i64, u64), after: (i64, u64)) -> Option<u64> {
    let dt = u64::try_from(after.0 - before.0)
        .ok()
        .filter(|dt| *dt > 0)?;
    Some((u128::from(after.1.saturating_sub(before.1)) * 1_000_000_000 / u128::from(dt)) as u64)
}

/// `(timestamp, stats)` of each cgroup directory (`None`: nothing to read), in order; a long
/// list is split between a few threads.
fn read_cgroups(h: &Hierarchy, dirs: &[Option<&str>]) -> Vec<(i64, CgroupStats)> {
    let read = |d: &Option<&str>| (now(), d.map(|d| read_stats(h, d)).unwrap_or_default());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (dirs.len() / READS_PER_THREAD).clamp(1, cores.min(MAX_READ_THREADS));
    if threads == 1 {
        return dirs.iter().map(read).collect();
    }
    let chunk = dirs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = dirs.chunks(chunk);
        let mine = chunks.next().unwrap_or_default();
        let helpers: Vec<_> = chunks
            .map(|c| {
                let h = std::thread::Builder::new()
                    .name("crius-stats".into())
                    .spawn_scoped(s, move || c.iter().map(read).collect::<Vec<_>>());
                (c, h)
            })
            .collect();
        let mut out: Vec<_> = mine.iter().map(read).collect();
        for (c, h) in helpers {
            // A helper that could not start (or died): its share is read here.
            match h.ok().and_then(|h| h.join().ok()) {
                Some(v) => out.extend(v),
                None => out.extend(c.iter().map(read)),
            }
        }
        out
    })
}

/// Writable layer sizes: measured once when first asked, then renewed in the background when
/// stale, so a call never waits for a walk of a layer it has seen before.
struct DiskCache {
    ttl: Duration,
    sizes: Mutex<HashMap<String, (Instant, DiskUsage)>>,
    /// Layers waiting for the background walk, and whether the walker runs.
    queue: Mutex<Vec<(String, PathBuf)>>,
    walking: AtomicBool,
}

impl DiskCache {
    fn new(ttl: Duration) -> DiskCache {
        DiskCache {
            ttl,
            sizes: Mutex::default(),
            queue: Mutex::default(),
            walking: AtomicBool::new(false),
        }
    }

    fn usage(self: &Arc<Self>, id: &str, dir: &Path) -> Option<DiskUsage> {
        let cached = lock(&self.sizes).get(id).copied();
        match cached {
            Some((at, usage)) if at.elapsed() < self.ttl => Some(usage),
            Some((_, usage)) => {
                self.renew(id, dir);
                Some(usage)
            }
            None => {
                let usage = walk(dir)?;
                lock(&self.sizes).insert(id.to_string(), (Instant::now(), usage));
                Some(usage)
            }
        }
    }

    /// Queues `id` for the background walker, starting it if it is not running.
    fn renew(self: &Arc<Self>, id: &str, dir: &Path) {
        {
            let mut queue = lock(&self.queue);
            if queue.iter().any(|(q, _)| q == id) {
                return;
            }
            queue.push((id.to_string(), dir.to_path_buf()));
        }
        if self.walking.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let started = std::thread::Builder::new()
            .name("crius-du".into())
            .spawn(move || me.walk_queue());
        if let Err(err) = started {
            tracing::warn!(%err, "cannot start the writable layer walker");
            lock(&self.queue).clear();
            self.walking.store(false, Ordering::Release);
        }
    }

    fn walk_queue(&self) {
        loop {
            let next = {
                let mut queue = lock(&self.queue);
                let next = queue.pop();
                if next.is_none() {
                    // Cleared under the queue's lock: a `renew` that queues after this starts
                    // a new walker.
                    self.walking.store(false, Ordering::Release);
                }
                next
            };
            let Some((id, dir)) = next else { return };
            let at = Instant::now();
            let usage = walk(&dir);
            let mut sizes = lock(&self.sizes);
            match usage {
                // Only renewed if it is still known (not forgotten with its container).
                Some(u) => {
                    if let Some(e) = sizes.get_mut(&id) {
                        *e = (at, u);
                    }
                }
                None => {
                    sizes.remove(&id);
                }
            }
        }
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

    #[test]
    fn a_stale_layer_size_is_served_while_it_is_measured_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 10_000]).unwrap();
        let cache = Arc::new(DiskCache::new(Duration::from_millis(100)));
        // First sight: measured now.
        let first = cache.usage("c", d.path()).unwrap();
        assert_eq!(first.inodes, 2);
        std::fs::write(d.path().join("b"), vec![1u8; 100_000]).unwrap();
        // Fresh: not measured again.
        assert_eq!(cache.usage("c", d.path()), Some(first));
        std::thread::sleep(Duration::from_millis(150));
        // Stale: served as it was, measured again in the background.
        assert_eq!(cache.usage("c", d.path()), Some(first));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = cache.usage("c", d.path()).unwrap();
            if now.inodes == 3 {
                assert!(now.bytes >= first.bytes + 100_000, "{now:?}");
                break;
            }
            assert!(Instant::now() < deadline, "never renewed: {now:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A layer forgotten (its container removed) meanwhile is not brought back.
        std::thread::sleep(Duration::from_millis(150));
        assert!(cache.usage("c", d.path()).is_some());
        lock(&cache.sizes).clear();
        std::thread::sleep(Duration::from_millis(300));
        assert!(lock(&cache.sizes).is_empty());
    }

    #[test]
    fn nano_cores_from_two_samples() {
        assert_eq!(
            rate((0, 0), (2_000_000_000, 1_000_000_000)),
            Some(500_000_000)
        );
        assert_eq!(rate((5, 10), (5, 20)), None, "no time passed");
        assert_eq!(
            rate((0, 10), (1_000, 5)),
            Some(0),
            "a counter that went back"
        );
    }
}
