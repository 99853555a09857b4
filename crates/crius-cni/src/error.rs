//! The one error type of the CNI client.

use std::path::PathBuf;
use std::sync::Arc;

use crius_error::{ErrorKind, HasKind};

/// Everything that can go wrong talking to CNI. Cheap to clone (I/O errors are shared), so the
/// manager can keep the last config-loading error and hand it out from `status`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CniError {
    /// The conf dir holds no `.conf`, `.conflist` or `.json` file (or does not exist).
    #[error("no CNI network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },

    /// One config file is unusable. `message` names the field.
    #[error("invalid CNI config {}: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },

    /// Config files exist but none of them is valid; each file's problem is listed.
    #[error("no valid CNI network config in {}: {}", dir.display(), describe_files(errors))]
    NoValidConfig {
        dir: PathBuf,
        errors: Vec<(PathBuf, String)>,
    },

    /// A plugin named by the config is not in any of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {}", describe_dirs(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    /// A plugin ran and reported a CNI error object on stdout.
    #[error(
        "plugin {plugin} failed (code {code}): {msg}{}",
        describe_details(details)
    )]
    Plugin {
        plugin: String,
        code: u32,
        msg: String,
        details: String,
    },

    /// A plugin failed without a CNI error object (crash, garbage output, killed by a signal).
    #[error("plugin {plugin} failed ({status}): {output}")]
    PluginCrashed {
        plugin: String,
        status: String,
        output: String,
    },

    /// A plugin did not finish in time and was killed.
    #[error("plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        plugin: String,
        command: String,
        timeout: std::time::Duration,
    },

    /// A plugin succeeded but printed something that is not a CNI result.
    #[error("plugin {plugin} returned an invalid result: {message}")]
    BadResult { plugin: String, message: String },

    /// CHECK was asked for but there is nothing cached from an ADD.
    #[error("no cached CNI result for {key}")]
    NotAttached { key: String },

    /// The operation is not supported by the config's version (e.g. CHECK on 0.3.x).
    #[error("{operation} is not supported by CNI version {version}")]
    Unsupported { operation: String, version: String },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// ADD failed and the rollback DEL failed too; both are reported.
    #[error("{add}; rollback DEL failed too: {del}")]
    Rollback {
        add: Box<CniError>,
        del: Box<CniError>,
    },
}

impl CniError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CniError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// The kubelet-facing reason when this error makes the network not ready.
    pub fn reason(&self) -> &'static str {
        match self {
            CniError::NoConfig { .. } => "NoCNIConfig",
            CniError::InvalidConfig { .. } | CniError::NoValidConfig { .. } => "InvalidCNIConfig",
            CniError::PluginNotFound { .. } => "CNIPluginNotFound",
            _ => "NetworkPluginNotReady",
        }
    }
}

impl HasKind for CniError {
    fn kind(&self) -> ErrorKind {
        match self {
            CniError::NoConfig { .. }
            | CniError::NoValidConfig { .. }
            | CniError::PluginNotFound { .. } => ErrorKind::FailedPrecondition,
            CniError::InvalidConfig { .. } => ErrorKind::InvalidArgument,
            CniError::Plugin { .. }
            | CniError::PluginCrashed { .. }
            | CniError::BadResult { .. }
            | CniError::Rollback { .. } => ErrorKind::Internal,
            CniError::Timeout { .. } => ErrorKind::DeadlineExceeded,
            CniError::NotAttached { .. } => ErrorKind::NotFound,
            CniError::Unsupported { .. } => ErrorKind::Unimplemented,
            CniError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

fn describe_files(errors: &[(PathBuf, String)]) -> String {
    errors
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("[{}]", dirs.join(", "))
}

fn describe_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}
