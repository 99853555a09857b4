//! ListMetricDescriptors: the cadvisor metric families ListPodSandboxMetrics reports.

use k8s_cri::v1::{ListMetricDescriptorsRequest, ListMetricDescriptorsResponse};
use tonic::Status;

use super::metrics_common::descriptors;

pub fn handle(_req: ListMetricDescriptorsRequest) -> Result<ListMetricDescriptorsResponse, Status> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: descriptors(),
    })
}
