//! Start, Stop, Remove, status refresh, resource updates and log reopening.

use crius_error::HasKind;

use super::*;

impl ContainerManager {
    /// Runs the OCI runtime's `create` (when CreateContainer left it to Start) and `start`.
    /// A container that fails to start is reported exited with `StartError` and code 128,
    /// as containerd does, so the kubelet restarts it per policy rather than retrying Start.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.get(id)?;
        let _guard = self.locks.lock(&c.id);
        let mut c = self.get(&c.id)?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::WrongState {
                id: c.id.clone(),
                state: format!("{:?}", c.state),
                wanted: "Created",
            });
        }
        let pod = self.pods.get(&c.pod_id)?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::NotReady { id: pod.id.clone() });
        }
        let started = self.monitor(&pod).and_then(|mut monitor| {
            if c.pid == 0 {
                c.pid = self.runtime_create(&pod, monitor.as_mut(), &c)?;
                crate::recovery::crash_point("container.runtime_created");
            }
            monitor
                .start(&c.id)
                .map_err(|e| monitor_failed(&c.id, "start", e))
        });
        match started {
            Ok(started_at) => {
                c.state = ContainerState::Running;
                c.started_at = started_at;
                self.save(&c)?;
                info!(container_id = %c.id, "container started");
                Ok(())
            }
            Err(e) => {
                warn!(container_id = %c.id, error = %e, "container failed to start");
                self.runtime_delete(&pod, &c);
                c.state = ContainerState::Exited;
                c.exit_code = 128;
                c.finished_at = now();
                c.reason = "StartError".into();
                c.message = e.to_string();
                self.save(&c)?;
                Err(e)
            }
        }
    }

    /// The runtime's `create` in the pod's monitor; returns the container's pid. A container
    /// of this id the runtime still has (a crash between this and the record's save) is
    /// deleted first.
    fn runtime_create(
        &self,
        pod: &PodRecord,
        monitor: &mut dyn MonitorConn,
        c: &ContainerRecord,
    ) -> Result<u32, RuntimeError> {
        let exit_dir = Self::exit_dir(pod);
        create_dir_all(&exit_dir, 0o700)?;
        self.exit_watch.add(&exit_dir);
        let runtime_root = self.opts.runtime_root.join(&c.runtime_handler);
        create_dir_all(&runtime_root, 0o700)?;
        let req = CreateRequest {
            id: c.id.clone(),
            bundle: c.bundle.clone(),
            runtime: self.runtime_path(&c.runtime_handler)?,
            runtime_root,
            log_path: c.log_path.clone(),
            stdin: c.config.stdin,
            stdin_once: c.config.stdin_once,
            tty: c.config.tty,
            exit_dir,
            systemd_cgroup: self.systemd_cgroup(),
        };
        let created = monitor
            .create(&req)
            .map_err(|e| monitor_failed(&c.id, "create", e));
        match created {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                self.runtime_delete(pod, c);
                monitor
                    .create(&req)
                    .map_err(|e| monitor_failed(&c.id, "create", e))
            }
            r => r,
        }
    }

    /// Deletes the container from the runtime (killing what is left of it), through the
    /// pod's monitor; a container left by a monitor that died is unknown to its successor,
    /// which deletes it through the runtime named in the request (its state and cgroup would
    /// leak otherwise). Failures are logged: the caller goes on removing.
    fn runtime_delete(&self, pod: &PodRecord, c: &ContainerRecord) {
        let via_monitor = self.monitor(pod).and_then(|mut m| {
            m.delete(&c.id, true)
                .map_err(|e| monitor_failed(&c.id, "delete", e))
        });
        if let Err(e) = via_monitor.or_else(|_| {
            self.monitor(pod)?
                .delete_foreign(&c.id, self.foreign(c)?)
                .map_err(|e| monitor_failed(&c.id, "delete", e))
        }) {
            warn!(container_id = %c.id, error = %e, "runtime delete failed");
        }
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
        if c.state == ContainerState::Created && c.pid == 0 {
            // Not in the runtime yet: nothing to signal. It ends as a created container
            // stopped in the runtime would (killed before it ran), so Stop means the same
            // whenever the runtime's create happens.
            let mut c = c;
            c.state = ContainerState::Exited;
            c.exit_code = 128 + libc::SIGKILL;
            c.finished_at = now();
            c.started_at = c.finished_at;
            c.reason = "Error".into();
            self.save(&c)?;
            info!(container_id = %c.id, "created container stopped");
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
            self.runtime_delete(&pod, &c);
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
        if c.state == ContainerState::Created && c.pid == 0 {
            // Not in the runtime yet: the spec it will be created from carries the limits.
            self.update_spec_resources(&c, &oci, resources.oom_score_adj)?;
        } else {
            // The runtime reads the new limits from a file in the bundle (root's only).
            let file = c.bundle.join("resources.json");
            let json = serde_json::to_vec(&oci).map_err(|e| invalid("resources", e.to_string()))?;
            crius_state::atomic_write_volatile(&file, &json)?;
            let pod = self.pods.get(&c.pod_id)?;
            let updated = self
                .monitor(&pod)?
                .update(&c.id, &file)
                .map_err(|e| monitor_failed(&c.id, "update resources", e));
            let _ = fs::remove_file(&file);
            updated?;
        }
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

    /// Writes new limits into the bundle's config.json of a container not yet in the runtime.
    fn update_spec_resources(
        &self,
        c: &ContainerRecord,
        oci: &impl Serialize,
        oom_score_adj: i64,
    ) -> Result<(), RuntimeError> {
        let path = c.bundle.join("config.json");
        let mut spec: serde_json::Value = read_json(&path)?.ok_or_else(|| RuntimeError::Io {
            op: "reading the spec",
            path: path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let json = |e: serde_json::Error| invalid("resources", e.to_string());
        spec["linux"]["resources"] = serde_json::to_value(oci).map_err(json)?;
        // Raised to the floor as at create: the runtime fails below the daemon's own.
        let adj = self
            .oom_floor
            .map_or(oom_score_adj, |f| oom_score_adj.max(f));
        spec["process"]["oomScoreAdj"] = adj.into();
        let bytes = serde_json::to_vec_pretty(&spec).map_err(json)?;
        crius_state::atomic_write_volatile(&path, &bytes)?;
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
