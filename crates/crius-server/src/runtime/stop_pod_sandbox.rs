//! StopPodSandbox: kills the pod's containers, then releases its network, namespaces and
//! /dev/shm. Idempotent: a stopped or unknown pod is not an error.

use k8s_cri::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let runtime = ctx.runtime.clone();
    blocking(move || runtime.stop_pod(&req.pod_sandbox_id)).await?;
    Ok(StopPodSandboxResponse {})
}
