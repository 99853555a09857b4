//! Supervision of the pod monitor that owns every container process: connecting to it,
//! timeouts, exit watching and orphans left by a monitor that died.

use super::*;

/// Bounds every call to a pod monitor: above the monitor's own limit for a runtime command
/// (120 s), so the monitor reports a stuck runtime itself; only a hung monitor hits this.
pub(super) const MONITOR_CALL_TIMEOUT: Duration = Duration::from_secs(130);
/// The monitor answers `state` from memory: a refresh waits no longer than this.
pub(super) const STATE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed monitor call; a call that timed out is DeadlineExceeded.
pub(super) fn monitor_failed(id: &str, op: &'static str, e: std::io::Error) -> RuntimeError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return RuntimeError::MonitorTimeout { id: id.into(), op };
    }
    use crius_monitor::ErrorCode as C;
    let kind = match crius_monitor::monitor_error(&e).map(|m| m.code) {
        Some(C::Invalid) => ErrorKind::InvalidArgument,
        Some(C::NotFound) => ErrorKind::NotFound,
        Some(C::AlreadyExists) => ErrorKind::AlreadyExists,
        Some(C::FailedPrecondition) => ErrorKind::FailedPrecondition,
        Some(C::ResourceExhausted) => ErrorKind::ResourceExhausted,
        Some(C::DeadlineExceeded) => ErrorKind::DeadlineExceeded,
        Some(C::Runtime | C::Internal) => ErrorKind::Internal,
        // The socket failed: the monitor is gone or the disk is full.
        None => ErrorKind::from_internal_io(&e),
    };
    RuntimeError::Monitor {
        id: id.into(),
        op,
        kind,
        message: e.to_string(),
    }
}

/// The monitor socket of pod `pod_id` in `dir`: a short name, as a Unix socket path must fit
/// 108 bytes (recovery's sweep matches monitors to pods by this prefix).
pub(super) fn socket_in(dir: &Path, pod_id: &str) -> PathBuf {
    dir.join(format!("{}.sock", &pod_id[..pod_id.len().min(16)]))
}

impl ContainerManager {
    /// Starts noticing exits as they are recorded (see [`crate::exit_watch`]), for the pods
    /// that exist now and every one that gets a container later.
    pub fn watch_exits(self: &Arc<Self>) -> std::io::Result<()> {
        self.exit_watch.start(Arc::downgrade(self))?;
        for pod in self.pods.list(&crate::pods::PodFilter::default()) {
            let dir = Self::exit_dir(&pod);
            if dir.is_dir() {
                self.exit_watch.add(&dir);
            }
        }
        Ok(())
    }

    pub(super) fn monitor_socket(&self, pod: &PodRecord) -> PathBuf {
        socket_in(&self.opts.monitor_socket_dir, &pod.id)
    }

    pub(super) fn exit_dir(pod: &PodRecord) -> PathBuf {
        pod.dir.join("exits")
    }

    /// The pod's monitor, started on first use, and started again if it died.
    pub(super) fn monitor(&self, pod: &PodRecord) -> Result<Box<dyn MonitorConn>, RuntimeError> {
        let client = self.monitor_unbounded(pod)?;
        client
            .set_timeout(Some(MONITOR_CALL_TIMEOUT))
            .map_err(io_err("setting a timeout on", self.monitor_socket(pod)))?;
        Ok(client)
    }

    pub(super) fn monitor_unbounded(
        &self,
        pod: &PodRecord,
    ) -> Result<Box<dyn MonitorConn>, RuntimeError> {
        let socket = self.monitor_socket(pod);
        if let Ok(c) = self.host.connect_monitor(&socket) {
            return Ok(c);
        }
        // One (re)start per pod at a time: two monitors must not race for the socket.
        let _guard = self.locks.lock(&format!("monitor/{}", pod.id));
        if let Ok(c) = self.host.connect_monitor(&socket) {
            return Ok(c);
        }
        let dir = pod.dir.join("monitor");
        create_dir_all(&dir, 0o700)?;
        // A socket nobody answers on: the previous monitor died.
        if socket.exists() {
            crius_metrics::global().monitor_restarted();
        }
        let pid = self
            .host
            .spawn_monitor(&self.opts.monitor_binary, &pod.id, &dir, &socket)
            .map_err(io_err(
                "starting the pod monitor",
                &self.opts.monitor_binary,
            ))?;
        // The monitor is the pod's: it runs in the pod's cgroup, not criusd's.
        crate::cgroups::join(&self.pods, pod, pid as i32);
        let client = self
            .host
            .connect_monitor(&socket)
            .map_err(io_err("connecting to the pod monitor", &socket))?;
        self.stop_orphans(pod)?;
        Ok(client)
    }

    /// Whether the pod's running monitor owns container `id` (and so will record its exit).
    /// Asked only once the container's process is gone without an exit file.
    pub(super) fn monitor_knows(&self, pod: &PodRecord, id: &str) -> bool {
        self.host
            .connect_monitor(&self.monitor_socket(pod))
            .and_then(|mut m| {
                // A status refresh must not hang on a hung monitor.
                m.set_timeout(Some(STATE_CALL_TIMEOUT))?;
                m.state()
            })
            .is_ok_and(|list| list.iter().any(|s| s.id == id))
    }

    /// Containers a dead monitor left behind: nothing reads their output (their next write
    /// fails) and nothing would record their exit, so they are killed and reported exited,
    /// as containerd does when a shim dies. The kubelet then restarts them per policy.
    pub(super) fn stop_orphans(&self, pod: &PodRecord) -> Result<(), RuntimeError> {
        let orphans: Vec<ContainerRecord> = self
            .lock()
            .values()
            .filter(|c| c.pod_id == pod.id && c.state != ContainerState::Exited)
            .cloned()
            .collect();
        for mut c in orphans {
            if Self::exit_dir(pod).join(&c.id).exists() {
                continue; // the old monitor recorded the exit: refresh reads it
            }
            if c.state == ContainerState::Created && c.pid == 0 {
                continue; // not in the runtime yet: Start creates it with this monitor
            }
            let alive = c.pid > 0 && self.host.alive(c.pid);
            if alive || c.state == ContainerState::Created {
                // The new monitor does not own the container: it kills it through the runtime
                // named in the request.
                let _ = self
                    .host
                    .connect_monitor(&self.monitor_socket(pod))
                    .and_then(|mut m| {
                        m.set_timeout(Some(MONITOR_CALL_TIMEOUT))?;
                        m.kill_foreign(
                            &c.id,
                            libc::SIGKILL,
                            true,
                            self.foreign(&c).map_err(std::io::Error::other)?,
                        )
                    });
                // What the runtime's `kill --all` can miss (cgroup v1 with systemd).
                if let Some(dir) = cgroups::container_dir(&self.pods, pod, &c.id) {
                    crate::cgroups::kill_processes(self.pods.cgroups().as_ref(), &dir);
                }
                let gone = crius_proc::poll_until(
                    Duration::from_secs(5),
                    Duration::from_millis(20),
                    || Ok::<_, RuntimeError>(!self.host.alive(c.pid)),
                )?;
                if !gone {
                    // Never report a container exited while its process still runs.
                    return Err(RuntimeError::Monitor {
                        id: c.id.clone(),
                        op: "stop",
                        kind: ErrorKind::Internal,
                        message: "a container left by a dead monitor survived SIGKILL".into(),
                    });
                }
            }
            if alive {
                mark_lost(&mut c, 137, "Error", "crius stopped it");
            } else {
                mark_lost(&mut c, 255, "Unknown", "its exit status is unknown");
            }
            warn!(container_id = %c.id, pod_id = %pod.id, "the pod's monitor died: container marked exited");
            self.save(&c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crius_error::HasKind;
    use crius_monitor::{ErrorCode, MonitorError};

    use super::*;

    fn kind_of(e: std::io::Error) -> ErrorKind {
        monitor_failed("c1", "start", e).kind()
    }

    #[test]
    fn monitor_codes_keep_their_meaning_up_to_the_grpc_code() {
        let reported = |code| {
            std::io::Error::other(MonitorError {
                code,
                message: "m".into(),
            })
        };
        assert_eq!(kind_of(reported(ErrorCode::NotFound)), ErrorKind::NotFound);
        assert_eq!(
            kind_of(reported(ErrorCode::ResourceExhausted)),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            kind_of(reported(ErrorCode::DeadlineExceeded)),
            ErrorKind::DeadlineExceeded
        );
        assert_eq!(
            kind_of(reported(ErrorCode::Invalid)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(kind_of(reported(ErrorCode::Runtime)), ErrorKind::Internal);
        // The socket itself: a hung monitor, a full disk, a vanished socket file.
        let io = std::io::Error::from;
        assert_eq!(
            kind_of(io(std::io::ErrorKind::WouldBlock)),
            ErrorKind::DeadlineExceeded
        );
        assert_eq!(
            kind_of(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            kind_of(io(std::io::ErrorKind::NotFound)),
            ErrorKind::Internal
        );
    }
}
