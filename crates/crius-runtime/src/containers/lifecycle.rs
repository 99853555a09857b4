//! Start, Stop, Remove, status refresh, resource updates and log reopening.

use super::*;

impl ContainerManager {
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        let _guard = self.locks.lock(&c.id);
        let c = self.get(&c.id)?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Created",
            });
        }
        let pod = self.pods.get(&c.pod_id)?;
        let started_at = self
            .monitor(&pod)?
            .start(&c.id)
            .map_err(|e| monitor_failed(&c.id, "start", e))?;
        let mut c = c;
        c.state = ContainerState::Running;
        c.started_at = started_at;
        self.save(&c)?;
        info!(container_id = %c.id, "container started");
        Ok(())
    }

    /// Picks up an exit recorded by the monitor.
    pub fn refresh(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let mut c = self.get(id)?;
        if c.state == ContainerState::Exited {
            return Ok(c);
        }
        let Some(pod) = self.pods.find(&c.pod_id)? else {
            return Ok(c);
        };
        let exit_file = Self::exit_dir(&pod).join(&c.id);
        match crius_monitor::read_exit_file(&exit_file) {
            Ok(Some(rec)) => {
                c.state = ContainerState::Exited;
                c.exit_code = rec.exit_code;
                c.finished_at = rec.exited_at_unix_nanos;
                if c.started_at == 0 {
                    c.started_at = c.finished_at;
                }
                c.reason = if rec.oom {
                    "OOMKilled".into()
                } else if rec.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                };
                self.save(&c)?;
            }
            Ok(None) => {
                // Its process is gone, nothing was recorded and no monitor owns it (the one
                // that did died): the exit was lost. Also for a created one: it can never start.
                if c.state != ContainerState::Exited
                    && c.pid > 0
                    && !self.host.alive(c.pid)
                    && !self.monitor_knows(&pod, &c.id)
                    && crius_monitor::read_exit_file(&exit_file)
                        .ok()
                        .flatten()
                        .is_none()
                {
                    mark_lost(&mut c, 255, "Unknown", "its exit status is unknown");
                    self.save(&c)?;
                    return Ok(c);
                }
                // No exit recorded and the runtime state is gone (reboot): it can never exit
                // now, so report it as exited with an unknown code.
                if !pod.dir.is_dir() {
                    c.state = ContainerState::Exited;
                    c.exit_code = 255;
                    c.finished_at = now();
                    c.reason = "Unknown".into();
                    c.message = "the container's runtime state was lost (host reboot?)".into();
                    self.save(&c)?;
                }
            }
            Err(e) => warn!(container_id = %c.id, error = %e, "reading exit file"),
        }
        Ok(c)
    }

    /// Sends the stop signal, then SIGKILL after `timeout`; returns when the container exited.
    /// Stopping an exited or unknown container succeeds.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let Some(c) = self.find(id)? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&c.id);
        let c = self.refresh(&c.id)?;
        if c.state == ContainerState::Exited {
            return Ok(());
        }
        let pod = self.pods.get(&c.pod_id)?;
        let mut monitor = self.monitor(&pod)?;
        // The monitor signals through the runtime; a container it does not own (left by a
        // monitor that died) it signals through the runtime named in the request.
        let mut kill = |sig: i32, all: bool| {
            if monitor.kill(&c.id, sig, all).is_err()
                && let Ok(rt) = self.foreign(&c)
            {
                let _ = monitor.kill_foreign(&c.id, sig, all, rt);
            }
        };
        if c.state == ContainerState::Created {
            // Never started: nothing to signal gracefully.
            kill(libc::SIGKILL, true);
        } else if !timeout.is_zero() {
            kill(
                signal_number(&c.stop_signal).unwrap_or(libc::SIGTERM),
                false,
            );
            if self.wait_exit(&c.id, timeout)? {
                return Ok(());
            }
        }
        kill(libc::SIGKILL, true);
        // What the runtime's `kill --all` can miss (cgroup v1 with systemd, see the function).
        if let Some(dir) = cgroups::container_dir(&self.pods, &pod, &c.id) {
            crate::cgroups::kill_processes(self.pods.cgroups().as_ref(), &dir);
        }
        if !self.wait_exit(&c.id, Duration::from_secs(10))? {
            return Err(RuntimeError::Monitor {
                id: c.id.clone(),
                op: "stop",
                kind: ErrorKind::Internal,
                message: "the container did not exit after SIGKILL".into(),
            });
        }
        info!(container_id = %c.id, "container stopped");
        Ok(())
    }

    pub(super) fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool, RuntimeError> {
        crius_proc::poll_until(timeout, Duration::from_millis(20), || {
            Ok(self.refresh(id)?.state == ContainerState::Exited)
        })
    }

    /// Removes a container: killed first if running; idempotent.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(c) = self.find(id)? else {
            return Ok(());
        };
        self.stop(&c.id, Duration::ZERO)?;
        let _guard = self.locks.lock(&c.id);
        if let Some(pod) = self.pods.find(&c.pod_id)? {
            let via_monitor = self.monitor(&pod).and_then(|mut m| {
                m.delete(&c.id, true)
                    .map_err(|e| monitor_failed(&c.id, "delete", e))
            });
            // A container left by a monitor that died is unknown to its successor, which
            // deletes it through the runtime named in the request (its state and cgroup would
            // leak otherwise).
            if let Err(e) = via_monitor.or_else(|_| {
                self.monitor(&pod)?
                    .delete_foreign(&c.id, self.foreign(&c)?)
                    .map_err(|e| monitor_failed(&c.id, "delete", e))
            }) {
                warn!(container_id = %c.id, error = %e, "runtime delete failed");
            }
            let _ = fs::remove_file(Self::exit_dir(&pod).join(&c.id));
        }
        self.host
            .unmount(&c.rootfs)
            .map_err(io_err("unmounting", &c.rootfs))?;
        for b in &c.shared_binds {
            let in_use = self
                .lock()
                .values()
                .any(|o| o.id != c.id && o.shared_binds.contains(b));
            if !in_use {
                self.host.unmount(b).map_err(io_err("unmounting", b))?;
            }
        }
        for dir in [&c.bundle, &c.layer_dir] {
            removed(fs::remove_dir_all(dir), dir)?;
        }
        self.records
            .remove(&self.containers, &self.record_path(&c.id), &c.id)?;
        self.pods
            .events()
            .publish(&c.id, &c.pod_id, EventKind::Deleted);
        info!(container_id = %c.id, "container removed");
        Ok(())
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.running(id)?;
        let pod = self.pods.get(&c.pod_id)?;
        self.monitor(&pod)?
            .reopen_log(&c.id)
            .map_err(|e| monitor_failed(&c.id, "reopen log", e))
    }

    /// Applies new cgroup limits to a running (or created) container.
    pub fn update_resources(
        &self,
        id: &str,
        resources: k8s_cri::v1::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let mut c = self.refresh(&self.get(id)?.id)?;
        if c.state == ContainerState::Exited {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: "Exited".into(),
                wanted: "Created or Running",
            });
        }
        crate::cgroups::check_resources(self.pods.cgroups().as_ref(), &resources, &c.id)?;
        let oci = crius_oci::linux_resources(&resources, self.features).map_err(|e| {
            RuntimeError::Spec {
                id: c.id.clone(),
                source: e,
            }
        })?;
        // The runtime reads the new limits from a file in the bundle (root's only).
        let file = c.bundle.join("resources.json");
        let json = serde_json::to_vec(&oci).map_err(|e| invalid("resources", e.to_string()))?;
        crius_state::atomic_write(&file, &json)?;
        let pod = self.pods.get(&c.pod_id)?;
        let updated = self
            .monitor(&pod)?
            .update(&c.id, &file)
            .map_err(|e| monitor_failed(&c.id, "update resources", e));
        let _ = fs::remove_file(&file);
        updated?;
        let before = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map_or(0, |r| r.oom_score_adj);
        if c.state == ContainerState::Running && resources.oom_score_adj != before {
            let pod = self.pods.get(&c.pod_id)?;
            self.update_oom_score_adj(&pod, &c.id, resources.oom_score_adj)?;
        }
        c.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
        self.save(&c)?;
        info!(container_id = %c.id, "container resources updated");
        Ok(())
    }

    /// After the last container of a pod is removed: its monitor exits.
    pub fn release_pod(&self, pod: &PodRecord) {
        let socket = self.monitor_socket(pod);
        if let Ok(mut m) = self.host.connect_monitor(&socket) {
            let _ = m.set_timeout(Some(STATE_CALL_TIMEOUT));
            let _ = m.shutdown(true);
        }
        let _ = fs::remove_file(&socket);
        // The pod's cgroups go with the pod (PodManager::remove).
    }
}

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if n.is_empty() {
        return None;
    }
    if let Ok(v) = n.parse::<i32>() {
        return Some(v);
    }
    let n = n.strip_prefix("SIG").unwrap_or(n);
    let sig = match n {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(sig)
}

#[cfg(test)]
mod tests {
    use super::signal_number;

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("INT"), Some(libc::SIGINT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number(""), None);
        assert_eq!(signal_number("SIGBOGUS"), None);
    }
}
