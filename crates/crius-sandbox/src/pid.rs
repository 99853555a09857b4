//! The init process of a pod's shared PID namespace.
//!
//! `crius-pinns pid-init` unshares a PID namespace and forks `crius-init` into it as PID 1,
//! in its own session, then exits. crius-init is thereby orphaned: the kernel reparents it to
//! criusd if criusd is a child subreaper (PR_SET_CHILD_SUBREAPER; criusd must then reap it), or
//! to the host's init otherwise. Either way it is not tied to a daemon thread or pipe, so it
//! survives a daemon restart; [`PodInit`] is serializable so the new daemon can stop it later,
//! and its start time guards against pid reuse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, sys_err};
use crate::helper::{self, Helpers};
use crate::mounter::{HostMounter, Mounter};
use crate::ns::{create_pin_file, remove_pin};
use crate::pindir::{ensure_pin_dir, release_pin_dir};
use crate::procfs;

/// How long [`crate::unpin`] waits after SIGTERM before SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInit {
    pub pod_id: String,
    /// Host pid of crius-init.
    pub pid: i32,
    /// From /proc/<pid>/stat, to recognise pid reuse.
    pub start_time: u64,
    /// `<ns_dir>/pid`, a bind mount of its PID namespace.
    pub pid_ns_path: PathBuf,
}

/// Starts crius-init as PID 1 of a new PID namespace and pins the namespace to
/// `<ns_dir>/pid`.
pub fn start_pod_init(
    pod_id: &str,
    helpers: &Helpers,
    ns_dir: &Path,
) -> Result<PodInit, SandboxError> {
    start_pod_init_with(pod_id, helpers, ns_dir, &HostMounter)
}

pub fn start_pod_init_with(
    pod_id: &str,
    helpers: &Helpers,
    ns_dir: &Path,
    m: &dyn Mounter,
) -> Result<PodInit, SandboxError> {
    let dir_mounted = ensure_pin_dir(ns_dir, m)?;
    let pin = ns_dir.join("pid");
    let release_dir = |m: &dyn Mounter| {
        if dir_mounted {
            let _ = release_pin_dir(ns_dir, m);
        }
    };
    if let Err(e) = create_pin_file(&pin) {
        release_dir(m);
        return Err(e);
    }
    let result = spawn_and_pin(pod_id, helpers, &pin, m);
    if result.is_err() {
        let _ = remove_pin(&pin, m);
        release_dir(m);
    }
    result
}

fn spawn_and_pin(
    pod_id: &str,
    helpers: &Helpers,
    pin: &Path,
    m: &dyn Mounter,
) -> Result<PodInit, SandboxError> {
    let args = ["pid-init".to_string(), helpers.init.display().to_string()];
    let running = helper::run(&helpers.pinns, pod_id, &args)?;
    let line = running.line.clone();
    running.finish();
    let helper_err = |message: String| SandboxError::Helper {
        pod_id: pod_id.to_string(),
        helper: helpers.pinns.clone(),
        message,
    };
    let pid: i32 = line
        .parse()
        .map_err(|_| helper_err(format!("unexpected output {line:?}")))?;
    let Some((_, start_time)) = procfs::stat(pid) else {
        return Err(helper_err(format!(
            "crius-init (pid {pid}) exited right away"
        )));
    };
    let init = PodInit {
        pod_id: pod_id.to_string(),
        pid,
        start_time,
        pid_ns_path: pin.to_path_buf(),
    };
    let source = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    if let Err(e) = m.bind(&source, pin) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = wait_gone(&init, KILL_WAIT);
        return Err(sys_err("bind-mounting pid namespace", pin)(e));
    }
    tracing::debug!(pod_id, pid, "pod init started");
    Ok(init)
}

/// SIGTERM, up to `grace` to exit, then SIGKILL (which also kills everything left in the
/// namespace). Succeeds if the process is already gone.
pub fn stop_pod_init(init: &PodInit, grace: Duration) -> Result<(), SandboxError> {
    let pid = Pid::from_raw(init.pid);
    for (signal, wait) in [(Signal::SIGTERM, grace), (Signal::SIGKILL, KILL_WAIT)] {
        if !alive(init) {
            return Ok(());
        }
        if signal == Signal::SIGTERM {
            // crius-init runs unprivileged and can only forward the signal to processes of
            // its own uid: criusd delivers it to the rest of the namespace itself.
            signal_namespace(init, signal);
        }
        match kill(pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(sys_err(
                    "signalling pod init",
                    format!("/proc/{}", init.pid),
                )(e));
            }
        }
        if wait_gone(init, wait) {
            return Ok(());
        }
    }
    Err(SandboxError::InitStuck {
        pod_id: init.pod_id.clone(),
        pid: init.pid,
    })
}

/// Sends `signal` to every process in init's PID namespace but init itself.
fn signal_namespace(init: &PodInit, signal: Signal) {
    use std::os::unix::fs::MetadataExt;
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| m.ino());
    let Ok(own) = ns(&init.pid.to_string()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != init.pid)
    {
        if ns(&pid.to_string()).is_ok_and(|ino| ino == own) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

/// Alive = same process (start time) and not a zombie. A zombie that is our child (we are its
/// subreaper) is reaped on the way.
fn alive(init: &PodInit) -> bool {
    match procfs::stat(init.pid) {
        Some((state, start)) if start == init.start_time => {
            if state == 'Z' {
                let _ = waitpid(Pid::from_raw(init.pid), Some(WaitPidFlag::WNOHANG));
                false
            } else {
                true
            }
        }
        _ => false,
    }
}

fn wait_gone(init: &PodInit, within: Duration) -> bool {
    crius_proc::poll_until(within, POLL, || Ok::<_, ()>(!alive(init))).unwrap_or(false)
}
