//! The usage of one cgroup, as the kubelet's summary API reads it (cadvisor's definitions):
//! working set = usage − inactive file pages.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

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
///
/// Each controller's directory is opened once and its files relative to it: walking the long
/// cgroupfs path once per file was most of the cost of a read (every component is revalidated).
pub fn read_stats(h: &Hierarchy, rel: &str) -> CgroupStats {
    let mut opened: Vec<(PathBuf, Dir)> = Vec::with_capacity(3);
    let mut dir = |controller: &str| -> Option<(Dir, bool)> {
        let (path, v2) = h.dir(controller, rel)?;
        if let Some((_, d)) = opened.iter().find(|(p, _)| *p == path) {
            return Some((d.clone(), v2));
        }
        let d = Dir::open(&path)?;
        opened.push((path, d.clone()));
        Some((d, v2))
    };
    let cpu = dir("cpuacct").and_then(|(d, v2)| cpu(&d, v2));
    let memory = dir("memory").and_then(|(d, v2)| memory(&d, v2).ok());
    let pids = dir("pids");
    let (usage, user, system) = cpu.unwrap_or_default();
    CgroupStats {
        cpu_usage_ns: usage,
        cpu_user_ns: user,
        cpu_system_ns: system,
        memory,
        pids: pids
            .as_ref()
            .and_then(|(d, _)| read_u64(d, "pids.current").ok()),
        processes: pids.and_then(|(d, _)| {
            let procs = d.read("cgroup.procs").ok()?;
            Some(procs.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        }),
    }
}

/// An open cgroup directory (`O_PATH`), shared by the controllers mounted together.
#[derive(Clone)]
struct Dir {
    fd: Rc<OwnedFd>,
    path: Rc<PathBuf>,
}

impl Dir {
    fn open(path: &Path) -> Option<Dir> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: a valid C string; the fd returned is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh fd that nothing else owns.
        (fd >= 0).then(|| Dir {
            fd: Rc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            path: Rc::new(path.to_path_buf()),
        })
    }

    /// The text of file `name` in this directory (read without a stat: cgroupfs sizes are 0
    /// or 4096 anyway).
    fn read(&self, name: &str) -> io::Result<String> {
        let c = CString::new(name)?;
        // SAFETY: a valid directory fd and C string; the fd returned is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut out = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
            if out.len() > MAX_FILE {
                return Err(self.invalid(name, "too large"));
            }
        }
        String::from_utf8(out).map_err(|_| self.invalid(name, "not UTF-8"))
    }

    fn invalid(&self, name: &str, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", self.path.join(name).display()),
        )
    }
}

/// The most bytes read from one cgroup file (`cgroup.procs` of a huge cgroup is the largest).
const MAX_FILE: usize = 16 << 20;

/// v1 `cpuacct.stat` counts in USER_HZ ticks, which Linux fixes at 100 per second.
const USER_HZ_NS: u64 = 10_000_000;

/// Total, user and system CPU time, nanoseconds: v2 `cpu.stat`; v1 `cpuacct.usage` with
/// `cpuacct.usage_user`/`_sys` (nanoseconds, kernels since 4.7), else `cpuacct.stat` (ticks).
#[allow(clippy::type_complexity)]
fn cpu(dir: &Dir, v2: bool) -> Option<(Option<u64>, Option<u64>, Option<u64>)> {
    if v2 {
        let stat = dir.read("cpu.stat").ok()?;
        let us = |k| key(&stat, k).map(|us| us * 1000);
        return Some((us("usage_usec"), us("user_usec"), us("system_usec")));
    }
    let usage = read_u64(dir, "cpuacct.usage").ok();
    if let (Ok(u), Ok(s)) = (
        read_u64(dir, "cpuacct.usage_user"),
        read_u64(dir, "cpuacct.usage_sys"),
    ) {
        return Some((usage, Some(u), Some(s)));
    }
    let Ok(stat) = dir.read("cpuacct.stat") else {
        return Some((usage, None, None));
    };
    let ns = |k| key(&stat, k).map(|t| t * USER_HZ_NS);
    Some((usage, ns("user"), ns("system")))
}

/// v1 memory.limit_in_bytes reports "unlimited" as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 1 << 62;

fn memory(dir: &Dir, v2: bool) -> io::Result<MemoryStats> {
    let stat = dir.read("memory.stat")?;
    let get = |k: &str| key(&stat, k).unwrap_or(0);
    let m = if v2 {
        let usage = read_u64(dir, "memory.current")?;
        MemoryStats {
            usage,
            working_set: usage.saturating_sub(get("inactive_file")),
            rss: get("anon"),
            page_faults: get("pgfault"),
            major_page_faults: get("pgmajfault"),
            limit: read_limit(dir, "memory.max"),
            swap_usage: read_u64(dir, "memory.swap.current").ok(),
            cache: get("file"),
            // v2 has no failcnt; the times usage hit memory.max is the same count.
            failcnt: dir
                .read("memory.events")
                .ok()
                .and_then(|e| key(&e, "max"))
                .unwrap_or(0),
        }
    } else {
        let usage = read_u64(dir, "memory.usage_in_bytes")?;
        // `total_*` counts the whole subtree (a pod cgroup's containers), hierarchy on.
        MemoryStats {
            usage,
            working_set: usage.saturating_sub(get("total_inactive_file")),
            rss: get("total_rss"),
            page_faults: get("total_pgfault"),
            major_page_faults: get("total_pgmajfault"),
            limit: read_u64(dir, "memory.limit_in_bytes")
                .ok()
                .filter(|l| *l < V1_UNLIMITED),
            swap_usage: read_u64(dir, "memory.memsw.usage_in_bytes")
                .ok()
                .map(|memsw| memsw.saturating_sub(usage)),
            cache: get("total_cache"),
            failcnt: read_u64(dir, "memory.failcnt").unwrap_or(0),
        }
    };
    Ok(m)
}

fn read_u64(dir: &Dir, name: &str) -> io::Result<u64> {
    let text = dir.read(name)?;
    text.trim()
        .parse()
        .map_err(|_| dir.invalid(name, &format!("not a number: {:?}", text.trim())))
}

/// A v2 limit file: a number, or "max".
fn read_limit(dir: &Dir, name: &str) -> Option<u64> {
    dir.read(name).ok()?.trim().parse().ok()
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
