//! StartContainer: runs the created container's process.

use k8s_cri::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let containers = ctx.containers.clone();
    blocking(move || containers.start(&req.container_id)).await?;
    Ok(StartContainerResponse {})
}
