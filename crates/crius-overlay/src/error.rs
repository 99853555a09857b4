//! One error type for the agent; every variant names what it was working on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("config {field}: {msg}")]
    Config { field: String, msg: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no free /{len} subnet left in {cluster}")]
    Exhausted { cluster: String, len: u8 },
    #[error("backend {backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
    #[error("etcd: {what}: {source}")]
    Etcd {
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{0}")]
    State(String),
}

impl OverlayError {
    pub fn config(field: &str, msg: impl Into<String>) -> Self {
        Self::Config {
            field: field.to_owned(),
            msg: msg.into(),
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| Self::Netlink { what, source }
    }

    pub fn etcd(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Self {
        let what = what.into();
        move |source| Self::Etcd { what, source }
    }
}

pub type Result<T, E = OverlayError> = std::result::Result<T, E>;
