//! The OCI runtime abstraction: the operations of the OCI runtime CLI (`runc`, `crun`) behind a
//! trait, so the daemon can be tested with a fake and run with any compliant runtime.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use crius_error::{ErrorKind, HasKind};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::Deserialize;

use crate::cli::CliRuntime;

/// The state of a container as reported by `<runtime> state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeState {
    pub id: String,
    /// Pid of the container's init process on the host; 0 once it has stopped.
    pub pid: i32,
    pub status: RuntimeStatus,
    pub bundle: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeStatus {
    Created,
    Running,
    Stopped,
    Paused,
}

/// What the runtime advertises in `<runtime> features` (OCI runtime features document).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeFeatures {
    /// Mount options the runtime understands, e.g. `rro`. Empty when the runtime has no
    /// `features` command (runc < 1.1, crun < 1.10): nothing optional is assumed.
    pub mount_options: Vec<String>,
}

impl RuntimeFeatures {
    pub fn supports_mount_option(&self, option: &str) -> bool {
        self.mount_options.iter().any(|o| o == option)
    }
}

/// The standard streams of a container started without a terminal. `None` means `/dev/null`.
/// The runtime passes these through to the container's init process.
#[derive(Debug, Default)]
pub struct ContainerIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The operations of an OCI runtime. All methods block; callers on an async runtime should use
/// `spawn_blocking`.
pub trait OciRuntime: Send + Sync {
    /// Short name, e.g. `runc`.
    fn name(&self) -> &str;
    /// The runtime binary.
    fn path(&self) -> &Path;
    /// Optional features; an old runtime without `features` yields the empty set.
    fn features(&self) -> Result<RuntimeFeatures, RuntimeError>;
    /// `create`: sets the container up and leaves its init waiting for `start`.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        io: ContainerIo,
    ) -> Result<(), RuntimeError>;
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// `None` when the runtime does not know the container.
    fn state(&self, id: &str) -> Result<Option<RuntimeState>, RuntimeError>;
    /// Signalling a container whose process already exited succeeds.
    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError>;
    /// Idempotent: deleting an unknown container succeeds.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    fn update_resources(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError>;
    /// The complete argv (runtime binary first) of `create`, for a monitor process that runs it
    /// itself so the container's stdio are the monitor's own pipes.
    fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Vec<String>;
    /// The complete argv (runtime binary first) of `exec` for the process described in
    /// `process_json` (an OCI `Process`, see [`crate::exec_process`]); the monitor runs it.
    fn exec_args(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: Option<&Path>,
        console_socket: Option<&Path>,
        detach: bool,
    ) -> Vec<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime}: cannot run {path}: {source}")]
    Spawn {
        runtime: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{runtime} {args:?} failed ({status}): {stderr}")]
    Command {
        runtime: String,
        args: Vec<String>,
        status: ExitStatus,
        stderr: String,
    },
    #[error("{runtime} {args:?} did not finish within {timeout:?}; killed")]
    Timeout {
        runtime: String,
        args: Vec<String>,
        timeout: Duration,
    },
    #[error("{runtime}: container {id} does not exist")]
    NotFound { runtime: String, id: String },
    #[error("{runtime} {args:?}: unexpected output: {message}")]
    BadOutput {
        runtime: String,
        args: Vec<String>,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime_handler {handler:?}: no such runtime handler is configured")]
    UnknownHandler { handler: String },
    #[error("no OCI runtime found: neither crun nor runc is in PATH")]
    NoDefaultRuntime,
}

impl HasKind for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Spawn { .. } => ErrorKind::Unavailable,
            RuntimeError::Command { .. } | RuntimeError::BadOutput { .. } => ErrorKind::Internal,
            RuntimeError::Timeout { .. } => ErrorKind::DeadlineExceeded,
            RuntimeError::NotFound { .. } => ErrorKind::NotFound,
            RuntimeError::Io { source, .. } => ErrorKind::from_io(source),
            RuntimeError::UnknownHandler { .. } => ErrorKind::InvalidArgument,
            RuntimeError::NoDefaultRuntime => ErrorKind::FailedPrecondition,
        }
    }
}

/// crun first (faster start-up, smaller footprint), else runc, searched in `PATH`.
pub fn find_default_runtime() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["crun", "runc"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One `[runtimes.<name>]` table of the daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandlerConfig {
    /// The runtime binary, e.g. `/usr/bin/runc`.
    pub path: PathBuf,
    /// The runtime's `--root` state directory; default `<state>/runtimes/<handler>`.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// CRI `runtime_handler` name → runtime. The empty handler `""` is the default runtime.
#[derive(Clone)]
pub struct RuntimeHandlers {
    handlers: BTreeMap<String, Arc<dyn OciRuntime>>,
}

impl std::fmt::Debug for RuntimeHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.handlers
                    .iter()
                    .map(|(k, v)| (k, v.path().display().to_string())),
            )
            .finish()
    }
}

impl RuntimeHandlers {
    pub fn new(default: Arc<dyn OciRuntime>) -> Self {
        let mut handlers = BTreeMap::new();
        handlers.insert(String::new(), default);
        RuntimeHandlers { handlers }
    }

    /// Builds the handlers from configuration. Without a `""` entry, the default is
    /// [`find_default_runtime`]. Each runtime keeps its state under `state_dir/runtimes/<name>`
    /// unless configured otherwise, so two handlers never share a `--root`.
    pub fn from_config(
        config: &BTreeMap<String, RuntimeHandlerConfig>,
        state_dir: &Path,
        systemd_cgroup: bool,
    ) -> Result<Self, RuntimeError> {
        let make = |handler: &str, path: &Path, root: Option<&Path>| -> Arc<dyn OciRuntime> {
            let dir_name = if handler.is_empty() {
                "default"
            } else {
                handler
            };
            let root = root
                .map(Path::to_path_buf)
                .unwrap_or_else(|| state_dir.join("runtimes").join(dir_name));
            Arc::new(CliRuntime::new(
                runtime_name(path),
                path,
                root,
                systemd_cgroup,
            ))
        };
        let default = match config.get("") {
            Some(c) => make("", &c.path, c.root.as_deref()),
            None => {
                let path = find_default_runtime().ok_or(RuntimeError::NoDefaultRuntime)?;
                make("", &path, None)
            }
        };
        let mut handlers = RuntimeHandlers::new(default);
        for (name, c) in config.iter().filter(|(name, _)| !name.is_empty()) {
            handlers.insert(name, make(name, &c.path, c.root.as_deref()));
        }
        Ok(handlers)
    }

    pub fn insert(&mut self, handler: &str, runtime: Arc<dyn OciRuntime>) {
        self.handlers.insert(handler.to_string(), runtime);
    }

    pub fn get(&self, handler: &str) -> Result<Arc<dyn OciRuntime>, RuntimeError> {
        self.handlers
            .get(handler)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownHandler {
                handler: handler.to_string(),
            })
    }

    pub fn default_runtime(&self) -> Arc<dyn OciRuntime> {
        self.handlers[""].clone()
    }

    /// Handler names, `""` first.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}

/// The runtime's short name from its binary, e.g. `/usr/bin/crun` → `crun`.
fn runtime_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    #[test]
    fn handlers_default_and_named() {
        let mut h = RuntimeHandlers::new(Arc::new(FakeRuntime::new("default")));
        h.insert("kata", Arc::new(FakeRuntime::new("kata")));
        assert_eq!(h.get("").unwrap().name(), "default");
        assert_eq!(h.get("kata").unwrap().name(), "kata");
        let err = h.get("nope").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("nope"));
        assert_eq!(h.names(), vec!["".to_string(), "kata".to_string()]);
    }

    #[test]
    fn handlers_from_config() {
        let mut config = BTreeMap::new();
        config.insert(
            "".to_string(),
            RuntimeHandlerConfig {
                path: "/usr/bin/runc".into(),
                root: None,
            },
        );
        config.insert(
            "fast".to_string(),
            RuntimeHandlerConfig {
                path: "/usr/bin/crun".into(),
                root: Some("/run/x".into()),
            },
        );
        let h = RuntimeHandlers::from_config(&config, Path::new("/run/crius"), false).unwrap();
        assert_eq!(h.get("").unwrap().name(), "runc");
        assert_eq!(h.get("fast").unwrap().name(), "crun");
        let args = h
            .get("")
            .unwrap()
            .exec_args("c1", Path::new("/p.json"), None, None, false);
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--root" && w[1] == "/run/crius/runtimes/default")
        );
    }

    #[test]
    fn handler_config_parses_from_toml_like_json() {
        let c: RuntimeHandlerConfig =
            serde_json::from_value(serde_json::json!({"path": "/usr/bin/runc"})).unwrap();
        assert_eq!(c.path, PathBuf::from("/usr/bin/runc"));
    }

    #[test]
    fn default_runtime_is_found() {
        // Both are installed on the build hosts; crun must win.
        if let Some(p) = find_default_runtime() {
            assert!(p.ends_with("crun") || p.ends_with("runc"));
        }
    }
}
