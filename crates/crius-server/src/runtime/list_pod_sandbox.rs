//! ListPodSandbox: filtered by id (or unique prefix), state and labels.

use crius_runtime::{PodFilter, PodState};
use k8s_cri::v1::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxState};
use tonic::Status;

use crate::context::Context;
use crate::status::invalid;

pub fn handle(ctx: &Context, req: ListPodSandboxRequest) -> Result<ListPodSandboxResponse, Status> {
    let mut filter = PodFilter::default();
    if let Some(f) = req.filter {
        filter.id = Some(f.id).filter(|id| !id.is_empty());
        if let Some(s) = f.state {
            filter.state = Some(match PodSandboxState::try_from(s.state) {
                Ok(PodSandboxState::SandboxReady) => PodState::Ready,
                Ok(PodSandboxState::SandboxNotready) => PodState::NotReady,
                Err(_) => {
                    return Err(invalid(
                        "filter.state.state",
                        format!("unknown state {}", s.state),
                    ));
                }
            });
        }
        filter.labels = f.label_selector.into_iter().collect();
    }
    let items = ctx
        .pods
        .list(&filter)
        .iter()
        .map(|p| PodSandbox {
            id: p.id.clone(),
            metadata: p.config.metadata.clone(),
            state: super::pod_sandbox_status::state_of(p) as i32,
            created_at: p.created_at,
            labels: p.config.labels.clone(),
            annotations: p.config.annotations.clone(),
            runtime_handler: p.runtime_handler.clone(),
        })
        .collect();
    Ok(ListPodSandboxResponse { items })
}
