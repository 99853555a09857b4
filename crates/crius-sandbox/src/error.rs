use std::path::PathBuf;

use crius_error::{ErrorKind, HasKind};
use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Bad request input; `field` names it (`sysctls`, `hostname`, `pod_id`, ...).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: Errno,
    },
    /// The helper binary ran but failed; `message` is its stderr.
    #[error("pod {pod_id}: {helper} failed: {message}")]
    Helper {
        pod_id: String,
        helper: PathBuf,
        message: String,
    },
    #[error("helper binary {name} not found (searched {searched})")]
    HelperNotFound { name: String, searched: String },
    #[error("pod {pod_id}: init process {pid} did not exit")]
    InitStuck { pod_id: String, pid: i32 },
}

impl HasKind for SandboxError {
    fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            SandboxError::Io { source, .. } => ErrorKind::from_internal_io(source),
            SandboxError::Sys { source, .. } => match source {
                Errno::ENOENT => ErrorKind::NotFound,
                Errno::EEXIST => ErrorKind::AlreadyExists,
                Errno::EPERM | Errno::EACCES => ErrorKind::PermissionDenied,
                Errno::ENOSPC | Errno::ENOMEM => ErrorKind::ResourceExhausted,
                _ => ErrorKind::Internal,
            },
            SandboxError::Helper { .. } => ErrorKind::Internal,
            SandboxError::HelperNotFound { .. } => ErrorKind::FailedPrecondition,
            SandboxError::InitStuck { .. } => ErrorKind::DeadlineExceeded,
        }
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io { op, path, source }
}

pub(crate) fn sys_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(Errno) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Sys { op, path, source }
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}
