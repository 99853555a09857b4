//! Telling an OOM kill from other deaths: the kernel counts OOM kills per memory cgroup
//! (`oom_kill` in cgroup v1's `memory.oom_control`, cgroup v2's `memory.events`). The monitor
//! reads the counter of a container's cgroup when the container is created and again when its
//! init exits; the runtime removes the cgroup only later, at `delete`. As with containerd, a
//! kill of any process of the container counts, not only of its init.

use std::fs;
use std::path::{Path, PathBuf};

/// The OOM kill counter of one container's memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomCounter {
    file: PathBuf,
    at_start: u64,
}

impl OomCounter {
    /// The counter of the memory cgroup `pid` is in, with its value now; `None` when the
    /// memory controller is not mounted or the process is gone.
    pub fn of_pid(pid: i32) -> Option<Self> {
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let file = counter_file(&cgroups, &mountinfo)?;
        let at_start = read_count(&file)?;
        Some(OomCounter { file, at_start })
    }

    /// Whether the OOM killer killed a process of the cgroup since [`OomCounter::of_pid`].
    pub fn fired(&self) -> bool {
        read_count(&self.file).is_some_and(|n| n > self.at_start)
    }
}

/// `memory.oom_control` under the v1 memory hierarchy when there is one (hybrid hosts keep
/// the memory controller there), else `memory.events` under the v2 hierarchy.
fn counter_file(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    if let Some(path) = v1 {
        let root = mount_point(mountinfo, |fstype, opts| {
            fstype == "cgroup" && opts.split(',').any(|o| o == "memory")
        })?;
        return Some(join(&root, path).join("memory.oom_control"));
    }
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = mount_point(mountinfo, |fstype, _| fstype == "cgroup2")?;
    Some(join(&root, path).join("memory.events"))
}

fn join(root: &Path, cgroup: &str) -> PathBuf {
    root.join(cgroup.trim().trim_start_matches('/'))
}

/// The mount point of the first mount whose filesystem type and super options match.
fn mount_point(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <src> <super opts>"
        let (left, right) = l.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let (fstype, _src, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
        matches(fstype, opts).then(|| PathBuf::from(mount))
    })
}

/// The `oom_kill` line of a counter file.
fn read_count(file: &Path) -> Option<u64> {
    parse_count(&fs::read_to_string(file).ok()?)
}

fn parse_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
30 24 0:27 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
31 24 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 24 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_hierarchy_wins_on_hybrid_hosts() {
        let cg = "4:memory:/crius/pod/crius-abc\n3:pids:/crius/pod/crius-abc\n0::/\n";
        assert_eq!(
            counter_file(cg, MOUNTINFO),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/crius/pod/crius-abc/memory.oom_control"
            ))
        );
    }

    #[test]
    fn v2_uses_memory_events() {
        let mi = "25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            counter_file("0::/kubepods/pod1/c1\n", mi),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods/pod1/c1/memory.events"
            ))
        );
    }

    #[test]
    fn no_memory_controller_no_counter() {
        let mi = "31 24 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(counter_file("3:pids:/x\n", mi), None);
    }

    #[test]
    fn counts_are_read_from_both_formats() {
        assert_eq!(
            parse_count("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_count("low 0\nhigh 0\nmax 2\noom 2\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_count("oom 1\n"), None);
    }
}
