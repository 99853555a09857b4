//! ListPodSandboxMetrics: cadvisor-style metrics of every ready pod (its cgroup and network)
//! and of its running containers.

use crius_runtime::{PodFilter, PodState};
use k8s_cri::v1::{ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse};
use tonic::Status;

use super::metrics_common::pod_metrics;
use crate::context::Context;
use crate::status::blocking;

pub async fn handle(
    ctx: &Context,
    _req: ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse, Status> {
    let filter = PodFilter {
        state: Some(PodState::Ready),
        ..Default::default()
    };
    let stats = ctx.stats.clone();
    let list = blocking(move || {
        let pods = stats.pods(&filter);
        // statvfs of each writable layer happens here too: off the async threads.
        Ok::<_, crius_runtime::RuntimeError>(pods.iter().map(pod_metrics).collect())
    })
    .await?;
    Ok(ListPodSandboxMetricsResponse { pod_metrics: list })
}
