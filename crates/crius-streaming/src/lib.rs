//! The streaming server of criusd: the URLs that `Exec`, `Attach` and `PortForward` return.
//!
//! The kubelet (or crictl) calls one of those RPCs, gets back a URL with a single-use,
//! unguessable token, and connects to it with an HTTP/1.1 upgrade request; the session then
//! runs over the upgraded connection. [`Streaming`] is the handle the RPCs use to mint URLs;
//! [`Streaming::serve`] runs the HTTP server.
//!
//! Everything an outsider controls is bounded: pending tokens ([`tokens::MAX_PENDING`]),
//! concurrent connections, request header size and the time to send the request head.

pub mod backend;
pub mod client;
mod error;
pub mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
pub mod tokens;
mod upgrade;
pub mod websocket;

pub use backend::{Backend, ExecIo, ExitStatus, TermSize};
pub use error::StreamingError;
pub use server::{Listener, Streaming, UpgradeHandler};
pub use upgrade::Sessions;

/// What a URL grants: one exec, attach or port-forward, checked by the RPC that minted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec(ExecParams),
    Attach(AttachParams),
    PortForward(PortForwardParams),
}

impl StreamRequest {
    /// The first path segment of the URL (as the kubelet's own streaming server names them).
    pub fn verb(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecParams {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachParams {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardParams {
    pub pod_sandbox_id: String,
    /// Ports the client may ask for; empty means any (the client names them per stream).
    pub ports: Vec<i32>,
}
