//! RemovePodSandbox: stops the pod if needed and deletes everything of it, its containers
//! first. Idempotent.

use k8s_cri::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let runtime = ctx.runtime.clone();
    blocking(move || runtime.remove_pod(&req.pod_sandbox_id)).await?;
    Ok(RemovePodSandboxResponse {})
}
