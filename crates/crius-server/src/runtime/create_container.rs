//! CreateContainer: an overlay rootfs on the image's layers, an OCI spec, and `create` by the
//! pod's monitor.

use k8s_cri::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
    if config.image.as_ref().is_none_or(|i| i.image.is_empty()) {
        return Err(invalid("config.image.image", "must not be empty"));
    }
    let runtime = ctx.runtime.clone();
    let pod_id = req.pod_sandbox_id;
    // req.sandbox_config is the caller's copy and is ignored: privileged and sysctl decisions
    // come from the pod as it was created, or a client could claim a privileged pod.
    let id = blocking(move || runtime.create_container(&pod_id, config)).await?;
    tracing::Span::current().record("container_id", id.as_str());
    Ok(CreateContainerResponse { container_id: id })
}
