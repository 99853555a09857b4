//! Error kinds shared by every crius crate.
//!
//! Each crate keeps its own `thiserror` enum (carrying the path, id or reference involved) and
//! implements [`HasKind`] for it. The gRPC layer turns a kind into a `tonic::Status` code in
//! exactly one place, so a crate never needs to know about gRPC.

use std::fmt;

/// What went wrong, from the caller's point of view. Maps 1:1 onto gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong (bad reference, bad field value).
    InvalidArgument,
    /// The thing named does not exist.
    NotFound,
    /// Something with that name or id exists already.
    AlreadyExists,
    /// The request is valid but the current state forbids it.
    FailedPrecondition,
    /// Credentials were missing or rejected.
    Unauthenticated,
    /// Credentials were accepted but do not allow the operation.
    PermissionDenied,
    /// A dependency (registry, runtime) could not be reached; retrying may help.
    Unavailable,
    /// An operation stopped making progress or ran out of time.
    DeadlineExceeded,
    /// A limit was hit (disk full, too many of something).
    ResourceExhausted,
    /// The operation was abandoned (e.g. the daemon is shutting down).
    Aborted,
    /// Not implemented yet.
    Unimplemented,
    /// Data is corrupt: a digest or size does not match.
    DataLoss,
    /// A bug or an unexpected failure of the host.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::DataLoss => "data loss",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind for an I/O error on a path of crius's own (state, records, layers): running
    /// out of space or time, and a name already taken (an id pinned twice), mean something to
    /// the caller; anything else is Internal (a missing state file is not the client's
    /// NotFound).
    pub fn from_internal_io(err: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match err.kind() {
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::TimedOut => ErrorKind::DeadlineExceeded,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Internal,
        }
    }

    /// The kind for an I/O error: a few errno values mean something to the caller.
    pub fn from_io(err: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as Io;
        match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied => ErrorKind::PermissionDenied,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidArgument,
            Io::TimedOut => ErrorKind::DeadlineExceeded,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every crate's error type.
pub trait HasKind {
    fn kind(&self) -> ErrorKind;
}
