//! StopPodSandbox: releases the pod's namespaces and /dev/shm. Idempotent: a stopped or
//! unknown pod is not an error.

use k8s_cri::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

/// Containers still running when their pod is stopped are killed at once, as containerd does:
/// the kubelet has already stopped them with the pod's grace period.
const STOP_GRACE: std::time::Duration = std::time::Duration::ZERO;

pub async fn handle(
    ctx: &Context,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let (pods, containers) = (ctx.pods.clone(), ctx.containers.clone());
    blocking(move || {
        let Some(pod) = pods.find(&req.pod_sandbox_id)? else {
            return Ok(());
        };
        // Containers first, then what the pod holds.
        for id in containers.in_pod(&pod.id) {
            containers.stop(&id, STOP_GRACE)?;
        }
        pods.stop(&pod.id)
    })
    .await?;
    Ok(StopPodSandboxResponse {})
}
