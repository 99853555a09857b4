//! The HTTP endpoint: `GET /metrics` answers the text; anything else 404. Bounded like any
//! server facing the network: a header read timeout and a cap on open connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A scrape takes milliseconds; a connection kept longer is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 32;
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running endpoint; dropping it stops serving.
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves [`crate::global`] on it.
pub async fn serve(addr: SocketAddr) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (io, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(io), service_fn(answer));
                match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection"),
                    Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
                    Ok(Ok(())) => {}
                }
                drop(permit);
            });
        }
    });
    Ok(MetricsServer { addr, task })
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let resp = if req.uri().path() != "/metrics" {
        status(
            http::StatusCode::NOT_FOUND,
            "only /metrics is served here\n",
        )
    } else if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        status(http::StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n")
    } else {
        // Counting pods and containers reads the stores: off the async threads.
        let text = tokio::task::spawn_blocking(|| crate::global().render())
            .await
            .unwrap_or_default();
        let mut r = http::Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        r
    };
    Ok(resp)
}

fn status(code: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r
}
