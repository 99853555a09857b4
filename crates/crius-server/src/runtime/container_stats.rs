//! ContainerStats: one container's CPU, memory and writable layer usage.

use k8s_cri::v1::{ContainerStatsRequest, ContainerStatsResponse};
use tonic::Status;

use super::stats_common::container_stats;
use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    tracing::Span::current().record("container_id", req.container_id.as_str());
    let stats = ctx.stats.clone();
    let usage = blocking(move || stats.container(&req.container_id)).await?;
    Ok(ContainerStatsResponse {
        stats: Some(container_stats(&usage)),
    })
}
