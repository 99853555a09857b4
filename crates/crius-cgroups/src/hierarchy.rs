//! Where the controllers are mounted, from /proc/self/mountinfo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The mounted cgroup hierarchies of this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 controller name → mount point (`cpuacct` → `/sys/fs/cgroup/cpu,cpuacct`).
    v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount, if any (`/sys/fs/cgroup` or, on hybrid hosts, `.../unified`).
    v2: Option<PathBuf>,
    /// v1 hierarchies without a resource controller (`name=systemd`): processes join them too.
    named: Vec<PathBuf>,
}

impl Hierarchy {
    /// This process's view of the hierarchies.
    pub fn host() -> Hierarchy {
        Hierarchy::from_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        )
    }

    pub fn from_mountinfo(text: &str) -> Hierarchy {
        let mut h = Hierarchy::default();
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = pre.split(' ').nth(4) else {
                continue;
            };
            let mut post = post.split(' ');
            let (fs_type, _source, options) = (post.next(), post.next(), post.next());
            match fs_type {
                Some("cgroup2") => h.v2 = Some(unescape(mount_point).into()),
                Some("cgroup") => {
                    let mut known = false;
                    for opt in options.unwrap_or_default().split(',') {
                        if KNOWN_V1.contains(&opt) {
                            known = true;
                            h.v1.entry(opt.to_string())
                                .or_insert_with(|| unescape(mount_point).into());
                        }
                    }
                    let point: PathBuf = unescape(mount_point).into();
                    if !known && !h.named.contains(&point) {
                        h.named.push(point);
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// A hierarchy rooted at `root` laid out like a cgroup v2 mount (tests).
    pub fn v2_at(root: &Path) -> Hierarchy {
        Hierarchy {
            v1: BTreeMap::new(),
            v2: Some(root.to_path_buf()),
            named: Vec::new(),
        }
    }

    /// A v1 hierarchy with each named controller in `root/<controller>` (tests).
    pub fn v1_at(root: &Path, controllers: &[&str]) -> Hierarchy {
        Hierarchy {
            v1: controllers
                .iter()
                .map(|c| (c.to_string(), root.join(c)))
                .collect(),
            v2: None,
            named: Vec::new(),
        }
    }

    /// The directory of cgroup `rel` (e.g. `/crius/<pod>/crius-<id>`) for `controller`, and
    /// whether it is a v2 directory. A controller mounted on v1 wins (hybrid hosts keep the
    /// resource controllers there); else the v2 mount, which holds every controller.
    pub fn dir(&self, controller: &str, rel: &str) -> Option<(PathBuf, bool)> {
        let rel = rel.trim_start_matches('/');
        if let Some(mount) = self.v1.get(controller) {
            return Some((mount.join(rel), false));
        }
        self.v2.as_ref().map(|m| (m.join(rel), true))
    }

    pub fn is_v2_only(&self) -> bool {
        self.v1.is_empty() && self.v2.is_some()
    }

    /// Whether any cgroup hierarchy is mounted at all.
    pub fn is_empty(&self) -> bool {
        self.v1.is_empty() && self.v2.is_none() && self.named.is_empty()
    }

    /// The cgroup v2 mount, if any.
    pub fn v2_mount(&self) -> Option<&Path> {
        self.v2.as_deref()
    }

    /// Every mounted hierarchy once (a v1 mount holding several controllers appears once),
    /// each with whether it is v2: where a process must be moved to be in a cgroup.
    pub fn mounts(&self) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        for m in self.v1.values().chain(self.named.iter()) {
            if !out.iter().any(|(p, _)| p == m) {
                out.push((m.clone(), false));
            }
        }
        if let Some(v2) = &self.v2 {
            out.push((v2.clone(), true));
        }
        out
    }

    /// Removes `rel` (a cgroupfs path) from every hierarchy, best effort: what a crash left
    /// behind, whose processes are gone. Missing or busy cgroups are left as they are.
    pub fn remove_dir(&self, rel: &str) {
        if rel.split('/').any(|c| c == "..") {
            return;
        }
        for (mount, _) in self.mounts() {
            let _ = std::fs::remove_dir(mount.join(rel.trim_start_matches('/')));
        }
    }
}

const KNOWN_V1: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
];

/// A mountinfo field: the kernel escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 31 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/my\\040pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_hosts_read_controllers_from_v1() {
        let h = Hierarchy::from_mountinfo(HYBRID);
        assert_eq!(
            h.dir("cpuacct", "/crius/p/c"),
            Some((PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/crius/p/c"), false))
        );
        assert_eq!(
            h.dir("pids", "/a"),
            Some((PathBuf::from("/sys/fs/cgroup/my pids/a"), false))
        );
        // A controller v1 does not have falls to the v2 mount.
        assert_eq!(
            h.dir("io", "/a"),
            Some((PathBuf::from("/sys/fs/cgroup/unified/a"), true))
        );
        assert!(!h.is_v2_only());
        assert_eq!(h.mounts().len(), 4);
    }

    #[test]
    fn unified_hosts_read_everything_from_v2() {
        let h = Hierarchy::from_mountinfo(
            "26 25 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            h.dir("memory", "kubepods.slice/x"),
            Some((PathBuf::from("/sys/fs/cgroup/kubepods.slice/x"), true))
        );
        assert!(h.is_v2_only());
    }
}
