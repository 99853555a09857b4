//! The one error type of this crate. Every variant names what it was about (the reference, the
//! endpoint or url, the digest) so a message read in the kubelet's events is self-explanatory.

use crius_error::{ErrorKind, HasKind};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest { input: String, reason: String },

    /// Bad CRI auth fields (`field` is the CRI field name).
    #[error("invalid credentials: field {field}: {reason}")]
    InvalidCredentials { field: &'static str, reason: String },

    /// Bad registry configuration: a mirror url, an unreadable CA or client certificate.
    #[error("registry config for {host}: {reason}")]
    Config { host: String, reason: String },

    #[error("{}invalid manifest (media type {media_type:?}): {reason}", prefix(.reference))]
    InvalidManifest {
        reference: Option<String>,
        media_type: String,
        reason: String,
    },

    /// A manifest kind we recognise but do not pull (Docker schema1, artifacts).
    #[error("{}unsupported manifest media type {media_type:?}: {reason}", prefix(.reference))]
    UnsupportedManifest {
        reference: Option<String>,
        media_type: String,
        reason: String,
    },

    #[error("pulling {reference}: not found at {url}: {message}")]
    NotFound {
        reference: String,
        url: String,
        message: String,
    },

    /// 401: no credentials, or credentials the registry (or its token service) rejected.
    #[error("pulling {reference}: registry {endpoint} {what}: {status} ({message})")]
    Unauthenticated {
        reference: String,
        endpoint: String,
        what: &'static str,
        status: String,
        message: String,
    },

    /// 403: the credentials are valid but do not allow pulling this repository.
    #[error("pulling {reference}: registry {endpoint} denied access: {status} ({message})")]
    PermissionDenied {
        reference: String,
        endpoint: String,
        status: String,
        message: String,
    },

    /// Connection refused, DNS failure, TLS failure, timeout, or a body cut off mid-way.
    #[error("pulling {reference}: registry endpoint {endpoint} unavailable: {message}")]
    Unavailable {
        reference: String,
        endpoint: String,
        message: String,
    },

    /// Any other unexpected HTTP status.
    #[error("pulling {reference}: {url}: unexpected status {status} ({message})")]
    Status {
        reference: String,
        url: String,
        status: u16,
        message: String,
    },

    #[error("pulling {reference}: digest mismatch from {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        url: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "pulling {reference}: size mismatch for {digest} from {url}: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        reference: String,
        url: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    #[error("pulling {reference}: {what} from {url} is larger than the {limit} byte limit")]
    TooLarge {
        reference: String,
        url: String,
        what: String,
        limit: u64,
    },
}

fn prefix(reference: &Option<String>) -> String {
    match reference {
        Some(r) => format!("pulling {r}: "),
        None => String::new(),
    }
}

impl RegistryError {
    /// Attaches the reference to a manifest parse error raised without one.
    pub(crate) fn for_reference(self, r: &str) -> RegistryError {
        match self {
            RegistryError::InvalidManifest {
                reference: None,
                media_type,
                reason,
            } => RegistryError::InvalidManifest {
                reference: Some(r.to_string()),
                media_type,
                reason,
            },
            RegistryError::UnsupportedManifest {
                reference: None,
                media_type,
                reason,
            } => RegistryError::UnsupportedManifest {
                reference: Some(r.to_string()),
                media_type,
                reason,
            },
            other => other,
        }
    }
}

impl HasKind for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::InvalidReference { .. }
            | RegistryError::InvalidDigest { .. }
            | RegistryError::InvalidCredentials { .. }
            | RegistryError::Config { .. } => ErrorKind::InvalidArgument,
            RegistryError::InvalidManifest { .. } => ErrorKind::DataLoss,
            RegistryError::UnsupportedManifest { .. } => ErrorKind::FailedPrecondition,
            RegistryError::NotFound { .. } => ErrorKind::NotFound,
            RegistryError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            RegistryError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            RegistryError::Unavailable { .. } => ErrorKind::Unavailable,
            RegistryError::Status { status, .. } => match status {
                408 | 429 | 500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::FailedPrecondition,
            },
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                ErrorKind::DataLoss
            }
            RegistryError::TooLarge { .. } => ErrorKind::ResourceExhausted,
        }
    }
}
