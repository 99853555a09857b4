//! ExecSync: bounded concurrency, cancellation, and the target an exec runs in.

use super::*;

/// How many ExecSync calls may run at once, per container and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    pub per_container: usize,
    pub total: usize,
}

impl Default for ExecLimits {
    /// Generous for probes (a few per container), and below tokio's 512 blocking threads so
    /// waiting execs never starve the other RPCs.
    fn default() -> Self {
        ExecLimits {
            per_container: 64,
            total: 256,
        }
    }
}

#[derive(Default)]
pub(super) struct ExecSlots {
    limits: Mutex<ExecLimits>,
    running: Mutex<(usize, BTreeMap<String, usize>)>,
}

/// One running ExecSync; released on drop.
pub(super) struct ExecSlot<'a> {
    slots: &'a ExecSlots,
    id: String,
}

impl ExecSlots {
    pub(super) fn acquire(&self, id: &str) -> Result<ExecSlot<'_>, RuntimeError> {
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *running;
        let mine = per.get(id).copied().unwrap_or(0);
        let too_many = |limit, scope| RuntimeError::TooManyExecs {
            id: id.into(),
            limit,
            scope,
        };
        if mine >= limits.per_container {
            return Err(too_many(limits.per_container, "in this container"));
        }
        if *total >= limits.total {
            return Err(too_many(limits.total, "on this node"));
        }
        *total += 1;
        per.insert(id.to_owned(), mine + 1);
        Ok(ExecSlot {
            slots: self,
            id: id.to_owned(),
        })
    }
}

impl Drop for ExecSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *running;
        *total -= 1;
        if let Some(n) = per.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.id);
            }
        }
    }
}

/// Lets the caller of [`ContainerManager::exec_sync`] abandon it from another thread.
#[derive(Clone, Default)]
pub struct ExecCancel(Arc<Mutex<(bool, Option<std::os::unix::net::UnixStream>)>>);

impl ExecCancel {
    /// Makes a running exec call return at once; the monitor then kills the process.
    pub fn cancel(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = true;
        if let Some(s) = &g.1 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Registers the exec's connection; false when already cancelled.
    pub(super) fn arm(&self, conn: std::os::unix::net::UnixStream) -> bool {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 {
            return false;
        }
        g.1 = Some(conn);
        true
    }
}

/// What an exec inherits from its container's OCI `process`.
pub(super) struct ContainerProcess {
    pub user: crius_monitor::User,
    pub env: Vec<String>,
    pub cwd: String,
    pub no_new_privileges: bool,
}

pub(super) fn container_process(spec: &serde_json::Value) -> ContainerProcess {
    let p = &spec["process"];
    let user = crius_monitor::User {
        uid: p["user"]["uid"].as_u64().unwrap_or(0) as u32,
        gid: p["user"]["gid"].as_u64().unwrap_or(0) as u32,
        additional_gids: p["user"]["additionalGids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_u64().map(|g| g as u32))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let env = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ContainerProcess {
        user,
        env,
        cwd: p["cwd"]
            .as_str()
            .filter(|c| !c.is_empty())
            .unwrap_or("/")
            .to_string(),
        no_new_privileges: p["noNewPrivileges"].as_bool().unwrap_or(false),
    }
}

/// An exec's call may take this much longer than the exec's own timeout.
pub(super) const EXEC_CALL_SLACK: Duration = Duration::from_secs(5);

impl ContainerManager {
    /// Caps concurrent ExecSync calls (config `exec_max_per_container`, `exec_max_total`).
    pub fn set_exec_limits(&self, limits: ExecLimits) {
        *self
            .exec_slots
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The running container an exec of `cmd` goes into, and its OCI spec (whose process the
    /// exec inherits: user, groups, env, cwd).
    pub(super) fn exec_target(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<(ContainerRecord, serde_json::Value), RuntimeError> {
        let c = self.running(id)?;
        if cmd.is_empty() {
            return Err(invalid("cmd", "must not be empty"));
        }
        let path = c.bundle.join("config.json");
        let spec = serde_json::from_slice(&fs::read(&path).map_err(io_err("reading", &path))?)
            .map_err(|e| invalid("config.json", e.to_string()))?;
        Ok((c, spec))
    }

    /// Runs `cmd` in a running container and returns its output.
    /// `cancel` lets the caller abandon the exec (its client went away): the call returns
    /// at once and the monitor kills the process.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        cancel: &ExecCancel,
    ) -> Result<ExecOutput, RuntimeError> {
        let (c, spec) = self.exec_target(id, &cmd)?;
        let process = container_process(&spec);
        let pod = self.pods.get(&c.pod_id)?;
        let _slot = self.exec_slots.acquire(&c.id)?;
        let mut monitor = self.monitor_unbounded(&pod)?;
        let call_timeout = (!timeout.is_zero()).then(|| timeout + EXEC_CALL_SLACK);
        monitor
            .set_timeout(call_timeout)
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        let handle = monitor
            .cancel_handle()
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        if !cancel.arm(handle) {
            return Err(RuntimeError::Monitor {
                id: c.id.clone(),
                op: "exec",
                kind: ErrorKind::Internal,
                message: "cancelled by the caller".into(),
            });
        }
        let out = monitor
            .exec(&ExecRequest {
                id: c.id.clone(),
                argv: cmd,
                env: process.env,
                cwd: process.cwd,
                user: process.user,
                tty: false,
                timeout_ms: timeout.as_millis() as u64,
                no_new_privileges: process.no_new_privileges,
            })
            .map_err(|e| monitor_failed(&c.id, "exec", e))?;
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
            timed_out: out.timed_out,
        })
    }
}
