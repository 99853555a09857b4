//! ListPodSandboxStats: usage of every pod matching the filter (id prefix, labels).

use crius_runtime::PodFilter;
use k8s_cri::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse};
use tonic::Status;

use super::stats_common::pod_stats;
use crate::context::Context;
use crate::status::blocking;

pub async fn handle(
    ctx: &Context,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let mut filter = PodFilter::default();
    if let Some(f) = req.filter {
        filter.id = Some(f.id).filter(|s| !s.is_empty());
        filter.labels = f.label_selector.into_iter().collect();
    }
    let stats = ctx.stats.clone();
    let list = blocking(move || Ok::<_, crius_runtime::RuntimeError>(stats.pods(&filter))).await?;
    Ok(ListPodSandboxStatsResponse {
        stats: list.iter().map(pod_stats).collect(),
    })
}
