//! The CNI error object and its well-known codes (CNI spec, "Error").

use std::fmt;
use std::io;
use std::path::Path;

use serde::Serialize;

/// Error codes reserved by the CNI specification. Plugin-specific codes start at 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// Netlink, nftables or IPAM delegate failure: the plugin's own code space.
    Internal = 100,
    /// The IP range is exhausted.
    NoAddress = 101,
}

/// A CNI error: printed as `{"cniVersion","code","msg","details"}` on stdout by the skeleton.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// An invalid network configuration; `field` is the JSON path of the offending field.
    pub fn config(field: &str, details: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::InvalidConfig,
            format!("invalid config field `{field}`"),
            details,
        )
    }

    pub fn env(var: &str, details: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::InvalidEnvironment,
            format!("invalid environment variable {var}"),
            details,
        )
    }

    /// An I/O error on `path` during `op`.
    pub fn io(op: &str, path: &Path, err: io::Error) -> Self {
        Self::new(
            ErrorCode::Io,
            format!("{op} {}", path.display()),
            err.to_string(),
        )
    }

    pub fn internal(msg: impl Into<String>, details: impl fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, msg, details.to_string())
    }

    /// The JSON error object printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Obj<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Obj {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;
