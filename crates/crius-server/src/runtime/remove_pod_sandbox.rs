//! RemovePodSandbox: stops the pod if needed and deletes everything of it. Idempotent.

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
    let (pods, containers) = (ctx.pods.clone(), ctx.containers.clone());
    blocking(move || {
        let Some(pod) = pods.find(&req.pod_sandbox_id)? else {
            return Ok(());
        };
        for id in containers.in_pod(&pod.id) {
            containers.remove(&id)?;
        }
        containers.release_pod(&pod);
        pods.remove(&pod.id)
    })
    .await?;
    Ok(RemovePodSandboxResponse {})
}
