//! StopContainer: the image's STOPSIGNAL (or SIGTERM), SIGKILL after `timeout` seconds;
//! timeout 0 kills at once. Idempotent.

use std::time::Duration;

use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    if req.timeout < 0 {
        return Err(invalid("timeout", "must not be negative"));
    }
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let containers = ctx.containers.clone();
    let timeout = Duration::from_secs(req.timeout as u64);
    blocking(move || containers.stop(&req.container_id, timeout)).await?;
    Ok(StopContainerResponse {})
}
