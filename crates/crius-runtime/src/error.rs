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
            RuntimeError::PodNotFound { .. } => ErrorKind::NotFound,
            RuntimeError::Sandbox { source, .. } => source.kind(),
            RuntimeError::State(e) => e.kind(),
            RuntimeError::Io { source, .. } => ErrorKind::from_io(source),
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
