use std::path::PathBuf;

use crius_error::{ErrorKind, HasKind};
use crius_sandbox::SandboxError;
use crius_state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("pod sandbox {id:?} not found")]
    PodNotFound { id: String },
    #[error("pod sandbox id prefix {prefix:?} is ambiguous")]
    Ambiguous { prefix: String },
    #[error("pod sandbox {pod_id}: {source}")]
    Sandbox {
        pod_id: String,
        source: SandboxError,
    },
    #[error("config.image.image: image {name:?} is not present (pull it first)")]
    ImageNotFound { name: String },
    #[error("config.image.image: image {name:?}: {message}")]
    Image {
        name: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("container {id:?} not found")]
    ContainerNotFound { id: String },
    #[error("pod sandbox {id} is not ready")]
    NotReady { id: String },
    #[error("a container named {name:?} already exists in the pod: {id}")]
    NameInUse { name: String, id: String },
    #[error("container {id} is {state}, not {wanted}")]
    WrongState {
        id: String,
        state: String,
        wanted: &'static str,
    },
    #[error("container {id}: {source}")]
    Spec {
        id: String,
        source: crius_oci::SpecError,
    },
    #[error("container {id}: {op}: {message}")]
    Monitor {
        id: String,
        op: &'static str,
        /// What the monitor's error code (or the failure to reach it) means to the caller.
        kind: ErrorKind,
        message: String,
    },
    #[error("container {id}: {op}: the pod's monitor did not answer in time")]
    MonitorTimeout { id: String, op: &'static str },
    #[error("container {id}: {limit} ExecSync calls are running {scope}; try again later")]
    TooManyExecs {
        id: String,
        limit: usize,
        scope: &'static str,
    },
    #[error("pod sandbox {pod_id}: network: {source}")]
    Network {
        pod_id: String,
        source: crius_cni::CniError,
    },
    #[error(
        "{field}: host path {path} is on mount {mount_point}, which is not {wanted}; \
         make it so on the host (mount --make-{fix} {mount_point})"
    )]
    Propagation {
        field: String,
        path: PathBuf,
        mount_point: PathBuf,
        wanted: &'static str,
        fix: &'static str,
    },
    #[error("pod sandbox {pod_id}: cgroups: {source}")]
    Cgroup {
        pod_id: String,
        source: crius_cgroups::CgroupError,
    },
    #[error("container {id}: cgroups: {source}")]
    ContainerCgroup {
        id: String,
        source: crius_cgroups::CgroupError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HasKind for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Invalid { .. } | RuntimeError::Ambiguous { .. } => {
                ErrorKind::InvalidArgument
            }
            RuntimeError::PodNotFound { .. }
            | RuntimeError::ContainerNotFound { .. }
            | RuntimeError::ImageNotFound { .. } => ErrorKind::NotFound,
            RuntimeError::NotReady { .. }
            | RuntimeError::WrongState { .. }
            | RuntimeError::Propagation { .. } => ErrorKind::FailedPrecondition,
            RuntimeError::Image { kind, .. } => *kind,
            RuntimeError::NameInUse { .. } => ErrorKind::AlreadyExists,
            RuntimeError::Spec { source, .. } => source.kind(),
            RuntimeError::Monitor { kind, .. } => *kind,
            RuntimeError::MonitorTimeout { .. } => ErrorKind::DeadlineExceeded,
            RuntimeError::TooManyExecs { .. } => ErrorKind::ResourceExhausted,
            RuntimeError::Sandbox { source, .. } => source.kind(),
            RuntimeError::Network { source, .. } => source.kind(),
            RuntimeError::Cgroup { source, .. } | RuntimeError::ContainerCgroup { source, .. } => {
                source.kind()
            }
            RuntimeError::State(e) => e.kind(),
            // Every path here is crius's own: a missing file is a crius bug, not the
            // client's NotFound.
            RuntimeError::Io { source, .. } => ErrorKind::from_internal_io(source),
        }
    }
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.into();
    move |source| RuntimeError::Io { op, path, source }
}

/// Removal where "already gone" is success (idempotent Remove RPCs).
pub(crate) fn removed(
    result: std::io::Result<()>,
    path: &std::path::Path,
) -> Result<(), RuntimeError> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}
