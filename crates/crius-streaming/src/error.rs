use std::net::SocketAddr;
use std::path::PathBuf;

use crius_error::{ErrorKind, HasKind};

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming server: binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("streaming server: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("streaming server: reading {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("streaming server: {pending} streaming URLs are waiting to be used; try again later")]
    TooManyPending { pending: usize },
    #[error("streaming server: reading random bytes for a token: {0}")]
    Random(std::io::Error),
}

impl HasKind for StreamingError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamingError::Config { .. } | StreamingError::Tls { .. } => {
                ErrorKind::InvalidArgument
            }
            StreamingError::TooManyPending { .. } => ErrorKind::ResourceExhausted,
            StreamingError::Bind { .. } | StreamingError::Random(_) => ErrorKind::Internal,
        }
    }
}
