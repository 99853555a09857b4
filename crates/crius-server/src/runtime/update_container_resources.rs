//! UpdateContainerResources: new cgroup limits for a running container.

use k8s_cri::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    let linux = req.linux.ok_or_else(|| invalid("linux", "is required"))?;
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let containers = ctx.containers.clone();
    blocking(move || containers.update_resources(&req.container_id, linux)).await?;
    Ok(UpdateContainerResourcesResponse {})
}
