//! Starting a detached monitor from criusd.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// File in the monitor's state dir holding its pid.
pub const PID_FILE: &str = "monitor.pid";

/// How long [`spawn_detached`] waits for the socket to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts `binary --pod-id <pod_id> --dir <dir> --socket <socket> --detach` and waits until the
/// socket accepts connections. The binary double-forks and calls `setsid`, so the monitor is
/// re-parented to init, has its own session and process group, and survives criusd being
/// killed. Blocking: call it from `spawn_blocking`. Returns the monitor's pid.
pub fn spawn_detached(binary: &Path, pod_id: &str, dir: &Path, socket: &Path) -> io::Result<u32> {
    fs::create_dir_all(dir)?;
    let pid_file = dir.join(PID_FILE);
    // A stale pid file would let us report a dead monitor as started.
    match fs::remove_file(&pid_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // The intermediate process exits as soon as it has forked, so this wait is short and
    // leaves no zombie behind in criusd.
    let status = Command::new(binary)
        .arg("--pod-id")
        .arg(pod_id)
        .arg("--dir")
        .arg(dir)
        .arg("--socket")
        .arg(socket)
        .arg("--detach")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "{} exited with {status} before detaching",
            binary.display()
        )));
    }
    // The monitor writes its pid file before binding the socket.
    let mut pid = None;
    let ready = crius_proc::poll_until(READY_TIMEOUT, Duration::from_millis(10), || {
        pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|_| crate::socket::connect(socket).is_ok());
        Ok::<_, io::Error>(pid.is_some())
    })?;
    match pid {
        Some(pid) if ready => Ok(pid),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "monitor for pod {pod_id} did not open {} (see {}/monitor.log)",
                socket.display(),
                dir.display()
            ),
        )),
    }
}
