//! The one place where domain errors become gRPC statuses.

use std::fmt::Display;

use crius_error::{ErrorKind, HasKind};
use tonic::{Code, Status};

pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

pub fn to_status<E: HasKind + Display>(err: E) -> Status {
    Status::new(code(err.kind()), err.to_string())
}

/// A request field is missing or wrong; the message names the field.
pub fn invalid(field: &str, message: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

pub fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by crius yet"))
}

/// `tokio::task::spawn_blocking` that carries the caller's tracing span (request id, pod and
/// container ids) into the blocking thread, so every log line of a request names them.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// Blocking work (fsync, directory walks) off the async threads.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Status>
where
    T: Send + 'static,
    E: HasKind + Display + Send + 'static,
{
    match spawn_blocking(f).await {
        Ok(r) => r.map_err(to_status),
        Err(e) => Err(Status::internal(format!("worker task failed: {e}"))),
    }
}

/// A URL of the streaming server for `req`.
pub fn streaming_url(
    ctx: &crate::context::Context,
    req: crius_streaming::StreamRequest,
) -> Result<String, Status> {
    let Some(streaming) = &ctx.streaming else {
        return Err(Status::unavailable(
            "the streaming server of crius is not running",
        ));
    };
    streaming.url(req).map_err(to_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(ErrorKind);
    impl HasKind for E {
        fn kind(&self) -> ErrorKind {
            self.0
        }
    }
    impl Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "thing {:?}", self.0)
        }
    }

    #[test]
    fn kinds_map_to_codes_and_keep_the_message() {
        let s = to_status(E(ErrorKind::NotFound));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "thing NotFound");
        assert_eq!(to_status(E(ErrorKind::DataLoss)).code(), Code::DataLoss);
        assert_eq!(
            invalid("image.image", "must not be empty").message(),
            "image.image: must not be empty"
        );
    }
}
