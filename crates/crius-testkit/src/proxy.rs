//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a plain registry.
//!
//! Point a mirror at [`Proxy::url`]. Every request is recorded (method and path) so tests can
//! count blob downloads; responses to blob GETs (`/v2/<repo>/blobs/sha256:…`) are subject to the
//! current [`FaultMode`]. The proxy runs on its own tokio runtime, so it works from sync tests
//! and from `#[tokio::test]` (current-thread) tests alike.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Sleep;

/// What happens to blob GET responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    PassThrough,
    /// Forward the status, headers and the first `bytes` body bytes of every blob response, then
    /// nothing more while keeping the connection open.
    StallAfter {
        bytes: u64,
    },
    /// Forward blob bodies at about `bytes_per_sec`.
    Throttle {
        bytes_per_sec: u64,
    },
    /// Answer blob GETs with this status and an empty body, without asking the registry.
    ErrorStatus {
        status: u16,
    },
}

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<FaultMode>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running proxy; stopped on drop (stalled connections are closed then).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream` (`"127.0.0.1:PORT"`, e.g. [`crate::Registry::addr`]).
    pub fn start(upstream: &str, mode: FaultMode) -> Result<Proxy> {
        let upstream: SocketAddr = upstream.parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("crius-testkit-proxy")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(serve_connection(stream, s));
            }
        });
        Ok(Proxy {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn set_mode(&self, mode: FaultMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }
    pub fn mode(&self) -> FaultMode {
        *self.shared.mode.lock().unwrap()
    }
    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
    pub fn reset_counts(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
    /// Requests (any method) whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }
    /// Requests with `method` whose path starts with `prefix`.
    pub fn count_method(&self, method: &str, prefix: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }
    /// `GET /v2/<repo>/blobs/<digest>` requests.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        self.count_method("GET", &format!("/v2/{repo}/blobs/{digest}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Allowed inside async contexts, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

fn is_blob_get(method: &str, path: &str) -> bool {
    method == "GET" && path.starts_with("/v2/") && path.contains("/blobs/sha256:")
}

type Upstream = Arc<AsyncMutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>>;

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let upstream: Upstream = Arc::new(AsyncMutex::new(None));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, shared, upstream).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: Upstream,
) -> Response<FaultBody> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    shared.requests.lock().unwrap().push(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
    });
    let mode = if is_blob_get(&method, &path) {
        *shared.mode.lock().unwrap()
    } else {
        FaultMode::PassThrough
    };
    if let FaultMode::ErrorStatus { status } = mode {
        let mut r = Response::new(FaultBody::fixed(Bytes::new()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return r;
    }
    match forward(req, &shared, &upstream).await {
        Ok(resp) => resp.map(|b| FaultBody::new(b, mode)),
        Err(e) => {
            let mut r = Response::new(FaultBody::fixed(Bytes::from(format!(
                "proxy: upstream error: {e}"
            ))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    shared: &Shared,
    upstream: &Upstream,
) -> Result<Response<Incoming>> {
    let mut guard = upstream.lock().await;
    let reusable = match guard.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        let tcp = TcpStream::connect(shared.upstream).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *guard = Some(sender);
    }
    let sender = guard.as_mut().expect("set above");
    let fut = sender.send_request(req);
    drop(guard);
    Ok(fut.await?)
}

/// The response body as forwarded, with the fault applied.
struct FaultBody {
    inner: Option<Incoming>,
    mode: FaultMode,
    sent: u64,
    pending: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl FaultBody {
    fn new(inner: Incoming, mode: FaultMode) -> FaultBody {
        FaultBody {
            inner: Some(inner),
            mode,
            sent: 0,
            pending: None,
            sleep: None,
            stalled: false,
        }
    }
    fn fixed(data: Bytes) -> FaultBody {
        FaultBody {
            inner: None,
            mode: FaultMode::PassThrough,
            sent: 0,
            pending: Some(data).filter(|d| !d.is_empty()),
            sleep: None,
            stalled: false,
        }
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(s) = this.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                this.sleep = None;
            }
            if this.stalled {
                // Never woken: the connection stays open and silent until it is dropped.
                return Poll::Pending;
            }
            if let Some(mut buf) = this.pending.take() {
                match this.mode {
                    FaultMode::PassThrough | FaultMode::ErrorStatus { .. } => {
                        return Poll::Ready(Some(Ok(Frame::data(buf))));
                    }
                    FaultMode::StallAfter { bytes } => {
                        let allowed = bytes.saturating_sub(this.sent);
                        if allowed == 0 {
                            this.stalled = true;
                            this.pending = Some(buf);
                            continue;
                        }
                        if buf.len() as u64 > allowed {
                            let head = buf.split_to(allowed as usize);
                            this.pending = Some(buf);
                            this.sent += head.len() as u64;
                            return Poll::Ready(Some(Ok(Frame::data(head))));
                        }
                        this.sent += buf.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(buf))));
                    }
                    FaultMode::Throttle { bytes_per_sec } => {
                        let bps = bytes_per_sec.max(1);
                        let chunk = (bps / 20).max(1) as usize;
                        let head = if buf.len() > chunk {
                            buf.split_to(chunk)
                        } else {
                            std::mem::take(&mut buf)
                        };
                        if !buf.is_empty() {
                            this.pending = Some(buf);
                        }
                        this.sent += head.len() as u64;
                        this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(
                            head.len() as f64 / bps as f64,
                        ))));
                        return Poll::Ready(Some(Ok(Frame::data(head))));
                    }
                }
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(inner).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => this.pending = Some(d),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.inner, &self.pending) {
            (Some(i), None) if self.sent == 0 => i.size_hint(),
            (None, Some(p)) => hyper::body::SizeHint::with_exact(p.len() as u64),
            (None, None) => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}
