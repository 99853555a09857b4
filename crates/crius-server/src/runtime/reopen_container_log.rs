//! ReopenContainerLog: the monitor reopens the log file after the kubelet rotated it; an error
//! for a container that is not running.

use k8s_cri::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let containers = ctx.containers.clone();
    blocking(move || containers.reopen_log(&req.container_id)).await?;
    Ok(ReopenContainerLogResponse {})
}
