//! The HTTP/1.1 server: token lookup, then the upgrade to a streaming protocol.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crius_config::StreamingConfig;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::tokens::TokenCache;
use crate::{StreamRequest, StreamingError};

/// Open connections at once (sessions included); more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Request head size (the upgrade request is small).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// Runs a session on an upgraded connection. The server has already consumed the token,
/// checked the method and the upgrade headers; the handler negotiates the protocol and
/// either returns the `101 Switching Protocols` response (and runs the session on the
/// upgraded connection in a task of its own) or an error response.
pub trait UpgradeHandler: Send + Sync + 'static {
    fn upgrade(&self, grant: StreamRequest, req: Request<Incoming>) -> Response<Full<Bytes>>;
}

/// Handle to the streaming server: mints URLs. Cheap to clone.
#[derive(Clone)]
pub struct Streaming {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Mutex<TokenCache>,
    base_url: String,
    local_addr: SocketAddr,
}

/// The bound listener, until [`Streaming::serve`] runs it.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The server side of TLS from a PEM certificate chain and key.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, StreamingError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| StreamingError::Tls {
            path: p.into(),
            message: e.to_string(),
        })
    };
    let bad = |p: &std::path::Path, m: String| StreamingError::Tls {
        path: p.into(),
        message: m,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

impl Streaming {
    /// Binds the configured address and port (port 0: a free one).
    pub async fn bind(cfg: &StreamingConfig) -> Result<(Streaming, Listener), StreamingError> {
        let ip: IpAddr = cfg.address.parse().map_err(|_| StreamingError::Config {
            field: "streaming.address",
            message: format!("{:?} is not an IP address", cfg.address),
        })?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            (None, None) => None,
            _ => {
                return Err(StreamingError::Config {
                    field: "streaming.tls_cert",
                    message: "tls_cert and tls_key must be set together".into(),
                });
            }
        };
        let addr = SocketAddr::new(ip, cfg.port);
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| StreamingError::Bind { addr, source })?;
        let local_addr = tcp
            .local_addr()
            .map_err(|source| StreamingError::Bind { addr, source })?;
        let streaming = Streaming {
            inner: Arc::new(Inner {
                tokens: Mutex::new(TokenCache::new(cfg.token_ttl.0)),
                base_url: format!(
                    "{}://{local_addr}",
                    if tls.is_some() { "https" } else { "http" }
                ),
                local_addr,
            }),
        };
        Ok((streaming, Listener { tcp, tls }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// A URL granting `req` once; it expires if unused.
    pub fn url(&self, req: StreamRequest) -> Result<String, StreamingError> {
        let verb = req.verb();
        let token = self.tokens().insert(req)?;
        Ok(format!("{}/{verb}/{token}", self.inner.base_url))
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        // A panic while holding the lock cannot leave the cache inconsistent: keep going.
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Accepts connections until `shutdown` resolves. Sessions already running continue.
    pub async fn serve(
        self,
        listener: Listener,
        handler: Arc<dyn UpgradeHandler>,
        shutdown: impl Future<Output = ()>,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                r = listener.tcp.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "streaming server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let handler = handler.clone();
            let tls = listener.tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => this.serve_conn(stream, handler, peer).await,
                    Some(acceptor) => {
                        // The handshake is bounded like the request head.
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => this.serve_conn(s, handler, peer).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "streaming TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "streaming TLS handshake timed out"),
                        }
                    }
                }
                drop(permit);
            });
        }
    }

    async fn serve_conn<IO>(self, io: IO, handler: Arc<dyn UpgradeHandler>, peer: SocketAddr)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let this = self;
        let svc = service_fn(move |req| {
            let this = this.clone();
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(this.route(req, &*handler)) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "streaming connection ended");
        }
    }

    fn route(&self, req: Request<Incoming>, handler: &dyn UpgradeHandler) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and POST are accepted",
            );
        }
        let mut parts = req.uri().path().trim_start_matches('/').split('/');
        let (Some(verb), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return not_found();
        };
        // The token goes first: whatever happens next, it is spent.
        let Some(grant) = self.tokens().consume(token) else {
            return not_found();
        };
        if grant.verb() != verb {
            return not_found();
        }
        if !is_upgrade(&req) {
            return text(
                StatusCode::BAD_REQUEST,
                "expected an HTTP upgrade (Connection: Upgrade) to SPDY/3.1 or websocket",
            );
        }
        handler.upgrade(grant, req)
    }
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "unknown, used or expired streaming URL",
    )
}
