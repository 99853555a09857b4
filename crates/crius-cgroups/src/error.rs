//! Errors of the cgroup manager: each names the cgroup path, unit or field involved.

use std::path::PathBuf;

use crius_error::{ErrorKind, HasKind};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A request field (a cgroup_parent, a resource value) is wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The host cannot do what was asked (e.g. `unified` on cgroup v1).
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// systemd refused or failed a D-Bus call, or could not be reached.
    #[error("systemd {op} {unit}: {message}")]
    Systemd {
        op: &'static str,
        unit: String,
        message: String,
    },
}

impl HasKind for CgroupError {
    fn kind(&self) -> ErrorKind {
        match self {
            CgroupError::Invalid { .. } => ErrorKind::InvalidArgument,
            CgroupError::Unsupported { .. } => ErrorKind::FailedPrecondition,
            CgroupError::Io { source, .. } => ErrorKind::from_io(source),
            CgroupError::Systemd { .. } => ErrorKind::Unavailable,
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> CgroupError {
    CgroupError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.into();
    move |source| CgroupError::Io { op, path, source }
}
