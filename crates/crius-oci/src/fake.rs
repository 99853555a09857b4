//! An in-memory [`OciRuntime`] for tests: it records every call, keeps a container state
//! machine, and can be told to fail a given method.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use crate::runtime::{
    ContainerIo, OciRuntime, RuntimeError, RuntimeFeatures, RuntimeState, RuntimeStatus,
};

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeCall {
    Features,
    Create {
        id: String,
        bundle: PathBuf,
    },
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        id: String,
        signal: Signal,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    UpdateResources {
        id: String,
        resources: Box<LinuxResources>,
    },
}

#[derive(Default)]
struct Inner {
    calls: Vec<FakeCall>,
    containers: BTreeMap<String, RuntimeState>,
    /// method name → stderr of the injected failure.
    failures: HashMap<String, String>,
    features: RuntimeFeatures,
    next_pid: i32,
}

pub struct FakeRuntime {
    name: String,
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl FakeRuntime {
    pub fn new(name: &str) -> Self {
        FakeRuntime {
            name: name.to_string(),
            path: PathBuf::from(format!("/fake/{name}")),
            inner: Mutex::new(Inner {
                next_pid: 10_000,
                ..Inner::default()
            }),
        }
    }

    /// Every later call of `method` (`"create"`, `"start"`, `"state"`, `"kill"`, `"delete"`,
    /// `"update_resources"`, `"features"`) fails with a `Command` error carrying `stderr`.
    pub fn fail(&self, method: &str, stderr: &str) {
        self.lock()
            .failures
            .insert(method.to_string(), stderr.to_string());
    }

    pub fn clear_failure(&self, method: &str) {
        self.lock().failures.remove(method);
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    pub fn set_features(&self, features: RuntimeFeatures) {
        self.lock().features = features;
    }

    /// Simulates the container's process changing state on its own (e.g. exiting).
    pub fn set_status(&self, id: &str, status: RuntimeStatus) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.status = status;
            if status == RuntimeStatus::Stopped {
                c.pid = 0;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking test thread must not poison every later assertion.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the call, then returns the injected failure for `method`, if any.
    fn enter(
        &self,
        method: &str,
        call: FakeCall,
    ) -> Result<std::sync::MutexGuard<'_, Inner>, RuntimeError> {
        let mut inner = self.lock();
        inner.calls.push(call);
        match inner.failures.get(method) {
            Some(stderr) => Err(self.error(method, stderr)),
            None => Ok(inner),
        }
    }

    fn error(&self, method: &str, stderr: &str) -> RuntimeError {
        RuntimeError::Command {
            runtime: self.name.clone(),
            args: vec![method.to_string()],
            status: ExitStatus::from_raw(1 << 8),
            stderr: stderr.to_string(),
        }
    }

    fn not_found(&self, id: &str) -> RuntimeError {
        RuntimeError::NotFound {
            runtime: self.name.clone(),
            id: id.to_string(),
        }
    }
}

impl OciRuntime for FakeRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn features(&self) -> Result<RuntimeFeatures, RuntimeError> {
        let inner = self.enter("features", FakeCall::Features)?;
        Ok(inner.features.clone())
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        _console_socket: Option<&Path>,
        _io: ContainerIo,
    ) -> Result<(), RuntimeError> {
        let call = FakeCall::Create {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
        };
        let mut inner = self.enter("create", call)?;
        if inner.containers.contains_key(id) {
            return Err(self.error("create", &format!("container {id} already exists")));
        }
        inner.next_pid += 1;
        let pid = inner.next_pid;
        std::fs::write(pid_file, pid.to_string()).map_err(|source| RuntimeError::Io {
            op: "write pid file",
            path: pid_file.to_path_buf(),
            source,
        })?;
        inner.containers.insert(
            id.to_string(),
            RuntimeState {
                id: id.to_string(),
                pid,
                status: RuntimeStatus::Created,
                bundle: bundle.to_path_buf(),
            },
        );
        Ok(())
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut inner = self.enter("start", FakeCall::Start { id: id.to_string() })?;
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| self.not_found(id))?;
        if c.status != RuntimeStatus::Created {
            return Err(self.error("start", "cannot start a container that is not created"));
        }
        c.status = RuntimeStatus::Running;
        Ok(())
    }

    fn state(&self, id: &str) -> Result<Option<RuntimeState>, RuntimeError> {
        let inner = self.enter("state", FakeCall::State { id: id.to_string() })?;
        Ok(inner.containers.get(id).cloned())
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let call = FakeCall::Kill {
            id: id.to_string(),
            signal,
            all,
        };
        let mut inner = self.enter("kill", call)?;
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| self.not_found(id))?;
        // Every signal is taken as fatal: enough to drive stop paths in tests.
        if matches!(c.status, RuntimeStatus::Running | RuntimeStatus::Created) {
            c.status = RuntimeStatus::Stopped;
            c.pid = 0;
        }
        Ok(())
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let call = FakeCall::Delete {
            id: id.to_string(),
            force,
        };
        let mut inner = self.enter("delete", call)?;
        match inner.containers.get(id) {
            None => Ok(()),
            Some(c) if c.status == RuntimeStatus::Running && !force => {
                Err(self.error("delete", "cannot delete a running container"))
            }
            Some(_) => {
                inner.containers.remove(id);
                Ok(())
            }
        }
    }

    fn update_resources(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        let call = FakeCall::UpdateResources {
            id: id.to_string(),
            resources: Box::new(resources.clone()),
        };
        let inner = self.enter("update_resources", call)?;
        if !inner.containers.contains_key(id) {
            return Err(self.not_found(id));
        }
        Ok(())
    }

    fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        _console_socket: Option<&Path>,
    ) -> Vec<String> {
        vec![
            self.path.display().to_string(),
            "create".to_string(),
            bundle.display().to_string(),
            pid_file.display().to_string(),
            id.to_string(),
        ]
    }

    fn exec_args(
        &self,
        id: &str,
        process_json: &Path,
        _pid_file: Option<&Path>,
        _console_socket: Option<&Path>,
        _detach: bool,
    ) -> Vec<String> {
        vec![
            self.path.display().to_string(),
            "exec".to_string(),
            process_json.display().to_string(),
            id.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_error::{ErrorKind, HasKind};

    #[test]
    fn lifecycle_and_injected_failure() {
        let dir = tempfile::tempdir().unwrap();
        let rt = FakeRuntime::new("fake");
        let pid_file = dir.path().join("pid");
        rt.create("c1", dir.path(), &pid_file, None, ContainerIo::default())
            .unwrap();
        assert_eq!(
            rt.state("c1").unwrap().unwrap().status,
            RuntimeStatus::Created
        );
        assert!(
            std::fs::read_to_string(&pid_file)
                .unwrap()
                .parse::<i32>()
                .is_ok()
        );
        rt.start("c1").unwrap();
        assert!(rt.delete("c1", false).is_err());

        rt.fail("kill", "injected");
        let err = rt.kill("c1", Signal::SIGTERM, false).unwrap_err();
        assert!(err.to_string().contains("injected"));
        rt.clear_failure("kill");
        rt.kill("c1", Signal::SIGTERM, false).unwrap();
        assert_eq!(
            rt.state("c1").unwrap().unwrap().status,
            RuntimeStatus::Stopped
        );
        rt.delete("c1", false).unwrap();
        rt.delete("c1", false).unwrap();
        assert_eq!(rt.state("c1").unwrap(), None);
        assert_eq!(rt.start("c1").unwrap_err().kind(), ErrorKind::NotFound);
        assert!(rt.calls().contains(&FakeCall::Start { id: "c1".into() }));
    }
}
