//! Leak checks: mounts, processes and network namespaces left behind by a test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use crius_cgroups::unescape_mountinfo as unescape;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// The mount table of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(f.get(4)?)),
                fs_type: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// Mount points at or below `root`, deepest first.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Lazily unmounts everything at or below `root`, deepest first, repeating for stacked mounts.
/// Returns what could not be unmounted.
pub fn unmount_all_under(root: &Path) -> Vec<PathBuf> {
    for _ in 0..8 {
        let list = mounts_under(root);
        if list.is_empty() {
            return list;
        }
        for m in &list {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(root)
}

/// A process on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessInfo {
    pub pid: i32,
    pub cmdline: String,
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
}

/// All processes (except this one), with what `/proc` tells about them.
pub fn processes() -> Vec<ProcessInfo> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let dir = e.path();
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        Some(ProcessInfo {
            pid,
            cmdline: String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim_end()
                .to_string(),
            exe: std::fs::read_link(dir.join("exe")).ok(),
            cwd: std::fs::read_link(dir.join("cwd")).ok(),
        })
    })
    .collect()
}

/// Processes whose cwd or exe is under `root` or whose command line mentions it.
pub fn processes_referring_to(root: &Path) -> Vec<ProcessInfo> {
    let needle = root.to_string_lossy().to_string();
    processes()
        .into_iter()
        .filter(|p| {
            p.cwd.as_deref().is_some_and(|c| c.starts_with(root))
                || p.exe.as_deref().is_some_and(|c| c.starts_with(root))
                || p.cmdline.contains(&needle)
        })
        .collect()
}

/// Fails when anything is mounted under `root` or a process still refers to it.
pub fn check_no_leaks(root: &Path) -> Result<()> {
    let m = mounts_under(root);
    let p = processes_referring_to(root);
    if !m.is_empty() || !p.is_empty() {
        bail!(
            "leaks under {}: mounts {m:?}, processes {p:?}",
            root.display()
        );
    }
    Ok(())
}

/// Panics with details when anything is mounted under `root` or a process refers to it.
pub fn assert_no_leaks(root: &Path) {
    if let Err(e) = check_no_leaks(root) {
        panic!("{e:#}");
    }
}

/// Identifies a network namespace: the inode of `/proc/<pid>/ns/net`.
fn netns_of(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Host state before a test, to compare with after.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    pub mounts: BTreeSet<MountEntry>,
    /// `net:[inode]` of every process, plus files bind-mounted from nsfs (pinned namespaces).
    pub netns: BTreeSet<String>,
    pub pids: BTreeSet<i32>,
}

/// What appeared since a [`HostSnapshot`].
#[derive(Debug, Clone, Default)]
pub struct HostDiff {
    pub new_mounts: Vec<MountEntry>,
    pub new_netns: Vec<String>,
    pub new_processes: Vec<ProcessInfo>,
}

impl HostDiff {
    pub fn is_empty(&self) -> bool {
        self.new_mounts.is_empty() && self.new_netns.is_empty() && self.new_processes.is_empty()
    }
}

impl HostSnapshot {
    pub fn capture() -> HostSnapshot {
        let procs = processes();
        let mounts: BTreeSet<MountEntry> = mounts().into_iter().collect();
        let mut netns: BTreeSet<String> = procs.iter().filter_map(|p| netns_of(p.pid)).collect();
        netns.extend(
            mounts
                .iter()
                .filter(|m| m.fs_type == "nsfs")
                .map(|m| m.source.clone()),
        );
        HostSnapshot {
            mounts,
            netns,
            pids: procs.iter().map(|p| p.pid).collect(),
        }
    }

    /// What exists now and did not at capture time. Processes that are children of nothing
    /// new (e.g. a shell spawned by the test) are reported too; filter as needed.
    pub fn diff(&self) -> HostDiff {
        let now = HostSnapshot::capture();
        HostDiff {
            new_mounts: now.mounts.difference(&self.mounts).cloned().collect(),
            new_netns: now.netns.difference(&self.netns).cloned().collect(),
            new_processes: processes()
                .into_iter()
                .filter(|p| !self.pids.contains(&p.pid))
                .collect(),
        }
    }

    /// Panics when new mounts or network namespaces exist. `ignore_process` filters
    /// processes that are expected (e.g. registries started by the test after the snapshot).
    pub fn assert_unchanged(&self, ignore_process: impl Fn(&ProcessInfo) -> bool) {
        let mut d = self.diff();
        d.new_processes.retain(|p| !ignore_process(p));
        if !d.is_empty() {
            panic!("host changed during the test: {d:#?}");
        }
    }
}

/// Kills every process that lives in a namespace pinned (an nsfs mount) under `root`: the
/// pod init and container processes a daemon under test left when a test failed early.
pub fn kill_processes_in_pinned_namespaces(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let pinned: Vec<u64> = mounts()
        .into_iter()
        .filter(|m| m.fs_type == "nsfs" && m.mount_point.starts_with(root))
        .filter_map(|m| std::fs::metadata(&m.mount_point).ok().map(|md| md.ino()))
        .collect();
    if pinned.is_empty() {
        return;
    }
    let me = std::process::id() as i32;
    for p in processes() {
        if p.pid == me {
            continue;
        }
        let inside = ["pid", "net", "ipc", "uts"].iter().any(|t| {
            std::fs::metadata(format!("/proc/{}/ns/{t}", p.pid))
                .is_ok_and(|m| pinned.contains(&m.ino()))
        });
        if inside {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
