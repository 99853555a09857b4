//! The runtime side of the streaming server: what runs once a client's upgrade is accepted.

mod attach;
mod exec;
mod port_forward;
mod session;

use std::sync::Arc;

use crius_streaming::backend::{BoxFuture, Connection};
use crius_streaming::{AttachParams, Backend, ExecIo, ExecParams, ExitStatus, Sessions};

use crate::context::Context;

/// Starts the streaming server if the daemon bound one.
pub fn spawn(ctx: &Arc<Context>) -> Option<tokio::task::JoinHandle<()>> {
    let streaming = ctx.streaming.clone()?;
    let listener = ctx
        .streaming_listener
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()?;
    let handler = Arc::new(Sessions::new(Arc::new(RuntimeBackend { ctx: ctx.clone() })));
    Some(tokio::spawn(streaming.serve(
        listener,
        handler,
        std::future::pending(),
    )))
}

struct RuntimeBackend {
    ctx: Arc<Context>,
}

impl Backend for RuntimeBackend {
    fn exec(&self, params: ExecParams, io: ExecIo) -> BoxFuture<ExitStatus> {
        Box::pin(exec::run(self.ctx.containers.clone(), params, io))
    }

    fn attach(&self, params: AttachParams, io: ExecIo) -> BoxFuture<ExitStatus> {
        Box::pin(attach::run(self.ctx.containers.clone(), params, io))
    }

    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
    ) -> BoxFuture<Result<Box<dyn Connection>, String>> {
        let pods = self.ctx.pods.clone();
        Box::pin(async move {
            let c = port_forward::connect(pods, pod_sandbox_id, port).await?;
            Ok(Box::new(c) as Box<dyn Connection>)
        })
    }
}
