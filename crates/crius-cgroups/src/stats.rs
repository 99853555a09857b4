//! The usage of one cgroup, as the kubelet's summary API reads it (cadvisor's definitions):
//! working set = usage − inactive file pages.

use std::io;
use std::path::Path;

use crate::Hierarchy;

/// What a cgroup uses now. A controller that is not mounted (or a cgroup that is gone from
/// it) leaves its part `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time of all its tasks, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// The user and system parts of it, nanoseconds.
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub memory: Option<MemoryStats>,
    /// Tasks (threads) in it.
    pub pids: Option<u64>,
    /// Processes (thread groups) directly in it: what `cgroup.procs` lists.
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The limit; `None` when unlimited.
    pub limit: Option<u64>,
    /// Swap in use, when the kernel accounts it.
    pub swap_usage: Option<u64>,
    /// Page cache bytes.
    pub cache: u64,
    /// How many times usage hit the limit.
    pub failcnt: u64,
}

impl MemoryStats {
    /// Bytes left before the limit (the kubelet's `available`).
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// Reads the stats of cgroup `rel` (relative to the hierarchy roots, e.g. `/crius/<pod>`).
pub fn read_stats(h: &Hierarchy, rel: &str) -> CgroupStats {
    let (user, system) = cpu_split(h, rel).unwrap_or_default();
    let pids_dir = h.dir("pids", rel);
    CgroupStats {
        cpu_usage_ns: cpu(h, rel).ok().flatten(),
        cpu_user_ns: user,
        cpu_system_ns: system,
        memory: memory(h, rel).ok().flatten(),
        pids: pids_dir
            .as_ref()
            .and_then(|(d, _)| read_u64(&d.join("pids.current")).ok()),
        processes: pids_dir.and_then(|(d, _)| {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).ok()?;
            Some(procs.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        }),
    }
}

/// v1 `cpuacct.stat` counts in USER_HZ ticks, which Linux fixes at 100 per second.
const USER_HZ_NS: u64 = 10_000_000;

/// User and system CPU time, nanoseconds: v2 `cpu.stat`; v1 `cpuacct.usage_user`/`_sys`
/// (nanoseconds, kernels since 4.7), else `cpuacct.stat` (ticks).
fn cpu_split(h: &Hierarchy, rel: &str) -> Option<(Option<u64>, Option<u64>)> {
    let (dir, v2) = h.dir("cpuacct", rel)?;
    if v2 {
        let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let us = |k| key(&stat, k).map(|us| us * 1000);
        return Some((us("user_usec"), us("system_usec")));
    }
    if let (Ok(u), Ok(s)) = (
        read_u64(&dir.join("cpuacct.usage_user")),
        read_u64(&dir.join("cpuacct.usage_sys")),
    ) {
        return Some((Some(u), Some(s)));
    }
    let stat = std::fs::read_to_string(dir.join("cpuacct.stat")).ok()?;
    let ns = |k| key(&stat, k).map(|t| t * USER_HZ_NS);
    Some((ns("user"), ns("system")))
}

fn cpu(h: &Hierarchy, rel: &str) -> io::Result<Option<u64>> {
    let Some((dir, v2)) = h.dir("cpuacct", rel) else {
        return Ok(None);
    };
    if v2 {
        let stat = std::fs::read_to_string(dir.join("cpu.stat"))?;
        Ok(key(&stat, "usage_usec").map(|us| us * 1000))
    } else {
        read_u64(&dir.join("cpuacct.usage")).map(Some)
    }
}

/// v1 memory.limit_in_bytes reports "unlimited" as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 1 << 62;

fn memory(h: &Hierarchy, rel: &str) -> io::Result<Option<MemoryStats>> {
    let Some((dir, v2)) = h.dir("memory", rel) else {
        return Ok(None);
    };
    let stat = std::fs::read_to_string(dir.join("memory.stat"))?;
    let get = |k: &str| key(&stat, k).unwrap_or(0);
    let m = if v2 {
        let usage = read_u64(&dir.join("memory.current"))?;
        MemoryStats {
            usage,
            working_set: usage.saturating_sub(get("inactive_file")),
            rss: get("anon"),
            page_faults: get("pgfault"),
            major_page_faults: get("pgmajfault"),
            limit: read_limit(&dir.join("memory.max")),
            swap_usage: read_u64(&dir.join("memory.swap.current")).ok(),
            cache: get("file"),
            // v2 has no failcnt; the times usage hit memory.max is the same count.
            failcnt: std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|e| key(&e, "max"))
                .unwrap_or(0),
        }
    } else {
        let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
        // `total_*` counts the whole subtree (a pod cgroup's containers), hierarchy on.
        MemoryStats {
            usage,
            working_set: usage.saturating_sub(get("total_inactive_file")),
            rss: get("total_rss"),
            page_faults: get("total_pgfault"),
            major_page_faults: get("total_pgmajfault"),
            limit: read_u64(&dir.join("memory.limit_in_bytes"))
                .ok()
                .filter(|l| *l < V1_UNLIMITED),
            swap_usage: read_u64(&dir.join("memory.memsw.usage_in_bytes"))
                .ok()
                .map(|memsw| memsw.saturating_sub(usage)),
            cache: get("total_cache"),
            failcnt: read_u64(&dir.join("memory.failcnt")).unwrap_or(0),
        }
    };
    Ok(Some(m))
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a number: {:?}", path.display(), text.trim()),
        )
    })
}

/// A v2 limit file: a number, or "max".
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn key(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    #[test]
    fn v1_stats_from_cpuacct_memory_and_pids() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchy::v1_at(root.path(), &["cpuacct", "memory", "pids"]);
        write(
            &root.path().join("cpuacct/crius/p/c"),
            &[
                ("cpuacct.usage", "123456789\n"),
                ("cpuacct.stat", "user 10\nsystem 2\n"),
            ],
        );
        write(
            &root.path().join("memory/crius/p/c"),
            &[
                ("memory.usage_in_bytes", "10485760\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.stat",
                    "cache 100\nrss 5\ntotal_rss 4194304\ntotal_inactive_file 2097152\n\
                     total_pgfault 77\ntotal_pgmajfault 3\ntotal_cache 3000\n",
                ),
                ("memory.failcnt", "7\n"),
            ],
        );
        write(
            &root.path().join("pids/crius/p/c"),
            &[("pids.current", "4\n"), ("cgroup.procs", "10\n12\n")],
        );
        let s = read_stats(&h, "/crius/p/c");
        assert_eq!(s.cpu_usage_ns, Some(123_456_789));
        // Ticks of 10 ms when the nanosecond files are missing (kernels before 4.7).
        assert_eq!(s.cpu_user_ns, Some(100_000_000));
        assert_eq!(s.cpu_system_ns, Some(20_000_000));
        assert_eq!(s.pids, Some(4));
        assert_eq!(s.processes, Some(2));
        let m = s.memory.unwrap();
        assert_eq!(m.usage, 10 << 20);
        assert_eq!(m.working_set, 8 << 20);
        assert_eq!(m.rss, 4 << 20);
        assert_eq!((m.page_faults, m.major_page_faults), (77, 3));
        assert_eq!(m.limit, None, "unlimited");
        assert_eq!(m.available(), None);
        assert_eq!((m.cache, m.failcnt), (3000, 7));
    }

    #[test]
    fn v1_user_and_system_cpu_in_nanoseconds_when_the_kernel_has_them() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchy::v1_at(root.path(), &["cpuacct"]);
        write(
            &root.path().join("cpuacct/c"),
            &[
                ("cpuacct.usage", "30\n"),
                ("cpuacct.usage_user", "21\n"),
                ("cpuacct.usage_sys", "9\n"),
                ("cpuacct.stat", "user 1\nsystem 1\n"),
            ],
        );
        let s = read_stats(&h, "/c");
        assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (Some(21), Some(9)));
    }

    #[test]
    fn v2_stats_from_one_directory() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchy::v2_at(root.path());
        write(
            &root.path().join("kubepods.slice/c"),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
                ),
                ("memory.current", "3000\n"),
                ("memory.max", "5000\n"),
                (
                    "memory.stat",
                    "anon 1000\nfile 2000\ninactive_file 500\npgfault 9\npgmajfault 1\n",
                ),
                ("memory.swap.current", "0\n"),
                ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
                ("pids.current", "2\n"),
                ("cgroup.procs", "5\n"),
            ],
        );
        let s = read_stats(&h, "kubepods.slice/c");
        assert_eq!(s.cpu_usage_ns, Some(2_500_000));
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (Some(2_000_000), Some(500_000))
        );
        assert_eq!(s.processes, Some(1));
        assert_eq!(s.pids, Some(2));
        let m = s.memory.unwrap();
        assert_eq!((m.usage, m.working_set, m.rss), (3000, 2500, 1000));
        assert_eq!(m.limit, Some(5000));
        assert_eq!(m.available(), Some(2500));
        assert_eq!(m.swap_usage, Some(0));
        assert_eq!((m.cache, m.failcnt), (2000, 4));
    }

    #[test]
    fn a_missing_cgroup_has_no_stats() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchy::v1_at(root.path(), &["cpuacct", "memory"]);
        assert_eq!(read_stats(&h, "/gone"), CgroupStats::default());
    }
}
