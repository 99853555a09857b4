//! What the streaming server needs from the runtime, independent of the wire protocol.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::{AttachParams, ExecParams};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A terminal size, as the resize stream carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of one exec or attach. Each is present only if the client asked for it.
/// Channels are small and bounded: a slow client slows the process down, it does not make
/// criusd buffer its output.
pub struct ExecIo {
    /// Ends (`None`) at the client's EOF.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Becomes true when the client is gone: the runtime then ends the session (an exec's
    /// process is killed) instead of leaving it running with nobody attached.
    pub client_gone: watch::Receiver<bool>,
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The process exited with this code (128 + n when killed by signal n).
    Exited(i32),
    /// It could not run or the runtime failed; the message is shown to the user.
    Error(String),
}

/// A connection to a port inside a pod.
pub trait Connection:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Connection for T {}

pub trait Backend: Send + Sync + 'static {
    fn exec(&self, params: ExecParams, io: ExecIo) -> BoxFuture<ExitStatus>;
    fn attach(&self, params: AttachParams, io: ExecIo) -> BoxFuture<ExitStatus>;
    /// Connects to `localhost:port` in the pod's network namespace.
    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
    ) -> BoxFuture<Result<Box<dyn Connection>, String>>;
}
