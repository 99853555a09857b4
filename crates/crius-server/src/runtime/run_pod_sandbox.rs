//! RunPodSandbox: the pod's namespaces pinned, its files written; a retry after a client
//! timeout returns the same pod, a failure leaves nothing behind.

use k8s_cri::v1::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
    let pods = ctx.pods.clone();
    let handler = req.runtime_handler;
    let pod_id = blocking(move || pods.run(config, &handler)).await?;
    tracing::Span::current().record("pod_id", pod_id.as_str());
    Ok(RunPodSandboxResponse {
        pod_sandbox_id: pod_id,
    })
}
