//! Accepting an upgrade: protocol negotiation, the `101 Switching Protocols` answer, and the
//! session run on the upgraded connection.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::StreamRequest;
use crate::backend::Backend;
use crate::portforward;
use crate::remotecommand::{self, Target, Version};
use crate::server::{UpgradeHandler, text};
use crate::spdy::session::Session;
use crate::websocket;

/// Sessions at once (each upgraded connection is one).
pub const MAX_SESSIONS: usize = 1024;

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// The [`UpgradeHandler`] that runs exec, attach and port-forward sessions on a runtime.
pub struct Sessions {
    backend: Arc<dyn Backend>,
    slots: Arc<Semaphore>,
}

impl Sessions {
    pub fn new(backend: Arc<dyn Backend>) -> Sessions {
        Sessions {
            backend,
            slots: Arc::new(Semaphore::new(MAX_SESSIONS)),
        }
    }
}

impl Sessions {
    /// The WebSocket upgrade (RFC 6455 handshake answered here, framing by tungstenite).
    fn websocket(&self, grant: StreamRequest, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(key) = req.headers().get("sec-websocket-key") else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let supported: &[&'static str] = match grant {
            StreamRequest::PortForward(_) => &websocket::PORTFORWARD_PROTOCOLS,
            _ => &websocket::REMOTECOMMAND_PROTOCOLS,
        };
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let protocol = match remotecommand::negotiate(offered, supported) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::FORBIDDEN, &e),
        };
        let tunnel = protocol == Some(websocket::SPDY_TUNNEL_PROTOCOL);
        let ports = match grant {
            StreamRequest::PortForward(_) if !tunnel => {
                match websocket::ports_of_query(req.uri().query()) {
                    Ok(p) => p,
                    Err(e) => return text(StatusCode::BAD_REQUEST, &e),
                }
            }
            _ => Vec::new(),
        };
        let framing = websocket::Framing::of(protocol.unwrap_or(""))
            .or_else(|| websocket::Framing::of(""))
            .expect("the legacy framing");
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many streaming sessions; try again later",
            );
        };
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let ws = websocket::accept(TokioIo::new(upgraded)).await;
            match grant {
                StreamRequest::Exec(p) => {
                    websocket::run_remotecommand(ws, framing, Target::Exec(p), backend).await
                }
                StreamRequest::Attach(p) => {
                    websocket::run_remotecommand(ws, framing, Target::Attach(p), backend).await
                }
                StreamRequest::PortForward(p) if tunnel => {
                    match Session::start(websocket::spdy_tunnel(ws)) {
                        Ok(session) => portforward::run(session, p, backend).await,
                        Err(e) => tracing::warn!(error = %e, "cannot start a SPDY session"),
                    }
                }
                StreamRequest::PortForward(p) => {
                    websocket::run_portforward(ws, framing, ports, p, backend).await
                }
            }
            drop(permit);
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        if let Some(p) = protocol {
            h.insert("sec-websocket-protocol", HeaderValue::from_static(p));
        }
        r
    }
}

impl UpgradeHandler for Sessions {
    fn upgrade(&self, grant: StreamRequest, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let upgrade = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if upgrade.eq_ignore_ascii_case("websocket") {
            return self.websocket(grant, req);
        }
        if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("unsupported upgrade {upgrade:?}: crius speaks SPDY/3.1 and websocket"),
            );
        }
        let supported: &[&'static str] = match grant {
            StreamRequest::PortForward(_) => &[portforward::PROTOCOL],
            _ => &remotecommand::PROTOCOLS,
        };
        let offered = req
            .headers()
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let protocol = match remotecommand::negotiate(offered, supported) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::FORBIDDEN, &e),
        };
        let version = Version::from_protocol(protocol.unwrap_or("")).unwrap_or(Version::V1);
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many streaming sessions; try again later",
            );
        };
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming upgrade failed");
                    return;
                }
            };
            let session = match Session::start(TokioIo::new(upgraded)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a SPDY session");
                    return;
                }
            };
            match grant {
                StreamRequest::Exec(p) => {
                    remotecommand::run(session, version, Target::Exec(p), backend).await
                }
                StreamRequest::Attach(p) => {
                    remotecommand::run(session, version, Target::Attach(p), backend).await
                }
                StreamRequest::PortForward(p) => portforward::run(session, p, backend).await,
            }
            drop(permit);
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        if let Some(p) = protocol {
            h.insert(PROTOCOL_HEADER, HeaderValue::from_static(p));
        }
        r
    }
}
