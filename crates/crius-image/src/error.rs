use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crius_archive::ArchiveError;
use crius_error::{ErrorKind, HasKind};
use crius_registry::RegistryError;
use crius_state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("pulling {reference}: layer {digest}: {source}")]
    Unpack {
        reference: String,
        digest: String,
        source: ArchiveError,
    },
    #[error("pulling {reference}: {what} {digest}: {message}")]
    Verify {
        reference: String,
        what: &'static str,
        digest: String,
        message: String,
    },
    #[error("pulling {reference}: no progress for {timeout:?} while {activity}")]
    Stalled {
        reference: String,
        timeout: Duration,
        activity: String,
    },
    #[error("pulling {reference}: {message}")]
    BadImage {
        reference: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {name:?}: {message}")]
    InvalidName { name: String, message: String },
    /// The same failure seen by every caller sharing one pull.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

impl HasKind for ImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Registry(e) => e.kind(),
            ImageError::State(e) => e.kind(),
            ImageError::Unpack { source, .. } => source.kind(),
            ImageError::Verify { .. } => ErrorKind::DataLoss,
            ImageError::Stalled { .. } => ErrorKind::DeadlineExceeded,
            ImageError::BadImage { kind, .. } => *kind,
            ImageError::Io { source, .. } => ErrorKind::from_io(source),
            ImageError::InvalidName { .. } => ErrorKind::InvalidArgument,
            ImageError::Shared(e) => e.kind(),
        }
    }
}

impl ImageError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
