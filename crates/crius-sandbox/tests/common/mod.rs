//! Shared fixtures for the root-only integration tests.
//!
//! Run with `cargo test -p crius-sandbox -p crius-init` so that the helper binaries are built
//! next to the test executables.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use crius_sandbox::Helpers;

/// Tests in one binary run one at a time: the process-wide leak checks (helpers running,
/// children of this process) would otherwise see each other's work.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that needs root when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

pub struct Fixture {
    _serial: MutexGuard<'static, ()>,
    tmp: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub helpers: Helpers,
}

impl Fixture {
    pub fn new() -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // Like criusd: orphaned crius-init processes come to us, not to the host init (which
        // in some VMs never reaps), so stop_pod_init can reap them.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let helpers = Helpers::locate()
            .expect("helpers not built: run `cargo test -p crius-sandbox -p crius-init`");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        Fixture {
            _serial: serial,
            tmp: Some(tmp),
            root,
            helpers,
        }
    }

    pub fn net_dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    pub fn ns_dir(&self, pod: &str) -> PathBuf {
        self.root.join("pods").join(pod).join("ns")
    }

    /// The end-of-test checks: nothing mounted under the temp dir (after releasing the shared
    /// net dir), no helper process alive, no unreaped child, and the temp dir removable.
    pub fn finish(self) {
        crius_sandbox::release_pin_dir(&self.net_dir(), &crius_sandbox::HostMounter).unwrap();
        assert_eq!(
            mounts_under(&self.root),
            Vec::<(PathBuf, String)>::new(),
            "mounts left"
        );
        assert_eq!(
            helper_pids(&self.helpers),
            Vec::<i32>::new(),
            "helper processes left"
        );
        assert_eq!(
            children_of(std::process::id() as i32),
            Vec::<(i32, char)>::new(),
            "children left"
        );
        let mut this = self;
        this.tmp.take().unwrap().close().unwrap();
        assert!(!this.root.exists());
    }
}

impl Drop for Fixture {
    /// A failed test never reaches `finish`: still detach whatever it mounted (deepest first)
    /// so the temp dir can be deleted and the host is left clean.
    fn drop(&mut self) {
        if self.tmp.is_some() {
            let mut mounts: Vec<PathBuf> = mounts_under(&self.root)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for m in mounts {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// (mount point, fs type) of every mount at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = PathBuf::from(fields[4].replace("\\040", " "));
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields[sep + 1].to_string();
            point.starts_with(dir).then_some((point, fstype))
        })
        .collect()
}

pub fn fs_type(path: &Path) -> Option<String> {
    mounts_under(path)
        .into_iter()
        .filter(|(p, _)| p == path)
        .map(|(_, t)| t)
        .next_back()
}

/// Processes whose executable is one of the helpers.
pub fn helper_pids(helpers: &Helpers) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|exe| exe == helpers.pinns || exe == helpers.init)
                .unwrap_or(false)
        })
        .collect()
}

pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// (pid, state) of every process whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &text[text.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?.chars().next()?;
            let parent: i32 = fields.next()?.parse().ok()?;
            (parent == ppid).then_some((pid, state))
        })
        .collect()
}

/// Runs a command and returns its stdout; panics with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
