//! ListContainerStats: usage of every container matching the filter (id prefix, pod, labels).

use crius_runtime::ContainerFilter;
use k8s_cri::v1::{ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use super::stats_common::container_stats;
use crate::context::Context;
use crate::status::blocking;

pub async fn handle(
    ctx: &Context,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let mut filter = ContainerFilter::default();
    if let Some(f) = req.filter {
        filter.id = Some(f.id).filter(|s| !s.is_empty());
        filter.pod_id = Some(f.pod_sandbox_id).filter(|s| !s.is_empty());
        filter.labels = f.label_selector.into_iter().collect();
    }
    let stats = ctx.stats.clone();
    let list =
        blocking(move || Ok::<_, crius_runtime::RuntimeError>(stats.containers(&filter))).await?;
    Ok(ListContainerStatsResponse {
        stats: list.iter().map(container_stats).collect(),
    })
}
