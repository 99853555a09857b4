//! One tower layer that logs every RPC: method, request id, the ids a handler records, the
//! gRPC code and the duration.
//!
//! Handlers run inside the layer's span, so they add `pod_id`, `container_id` or `image` with
//! `tracing::Span::current().record(..)` and the final log line carries them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::{Instrument, Level, field};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLogLayer;

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;
    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
}

/// Polling RPCs the kubelet sends every few seconds are logged at debug, the rest at info.
fn is_routine(rpc: &str) -> bool {
    [
        "List",
        "Version",
        "Status",
        "ImageStatus",
        "ImageFsInfo",
        "ContainerStats",
        "PodSandboxStats",
        "ContainerStatus",
        "PodSandboxStatus",
        "RuntimeConfig",
    ]
    .iter()
    .any(|p| rpc.starts_with(p))
}

impl<S, B, RB> Service<http::Request<B>> for RpcLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let rpc = path.rsplit('/').next().unwrap_or_default().to_string();
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "rpc",
            rpc = %rpc,
            req_id = id,
            pod_id = field::Empty,
            container_id = field::Empty,
            image = field::Empty,
        );
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let start = Instant::now();
                let res = fut.await;
                let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
                match &res {
                    Ok(resp) => {
                        // Errors of unary RPCs come back "trailers-only": grpc-status is a header.
                        let code = resp
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0);
                        let code_name = format!("{:?}", tonic::Code::from_i32(code));
                        if code != 0 {
                            let message = resp
                                .headers()
                                .get("grpc-message")
                                .and_then(|v| v.to_str().ok())
                                .map(percent_decode)
                                .unwrap_or_default();
                            tracing::warn!(service = %service, code = %code_name, message = %message, elapsed_ms, "rpc failed");
                        } else if is_routine(&rpc) {
                            tracing::event!(Level::DEBUG, service = %service, elapsed_ms, "rpc done");
                        } else {
                            tracing::event!(Level::INFO, service = %service, elapsed_ms, "rpc done");
                        }
                    }
                    Err(e) => tracing::warn!(service = %service, error = %e, elapsed_ms, "rpc transport error"),
                }
                res
            }
            .instrument(span),
        )
    }
}

/// grpc-message is percent-encoded on the wire.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_grpc_message() {
        assert_eq!(percent_decode("image%20%22x%22"), "image \"x\"");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn routine_rpcs() {
        assert!(is_routine("ListPodSandbox"));
        assert!(!is_routine("PullImage"));
    }
}
