//! PodSandboxStats: a pod's CPU, memory, processes and network, with its containers' stats.

use k8s_cri::v1::{PodSandboxStatsRequest, PodSandboxStatsResponse};
use tonic::Status;

use super::stats_common::pod_stats;
use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let stats = ctx.stats.clone();
    let usage = blocking(move || stats.pod(&req.pod_sandbox_id)).await?;
    Ok(PodSandboxStatsResponse {
        stats: Some(pod_stats(&usage)),
    })
}
