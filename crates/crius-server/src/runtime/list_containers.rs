//! ListContainers: filtered by id prefix, pod id, state and labels.

use crius_runtime::{ContainerFilter, ContainerState as State};
use k8s_cri::v1::{Container, ContainerState, ListContainersRequest, ListContainersResponse};
use tonic::Status;

use super::container_common::{image_spec, state_of};
use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let mut filter = ContainerFilter::default();
    if let Some(f) = req.filter {
        filter.id = Some(f.id).filter(|s| !s.is_empty());
        filter.pod_id = Some(f.pod_sandbox_id).filter(|s| !s.is_empty());
        if let Some(s) = f.state {
            filter.state = Some(match ContainerState::try_from(s.state) {
                Ok(ContainerState::ContainerCreated) => State::Created,
                Ok(ContainerState::ContainerRunning) => State::Running,
                Ok(ContainerState::ContainerExited) => State::Exited,
                // crius never reports Unknown: nothing matches it.
                Ok(ContainerState::ContainerUnknown) => {
                    return Ok(ListContainersResponse {
                        containers: Vec::new(),
                    });
                }
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
    let containers = ctx.containers.clone();
    let list =
        blocking(move || Ok::<_, crius_runtime::RuntimeError>(containers.list(&filter))).await?;
    Ok(ListContainersResponse {
        containers: list
            .iter()
            .map(|c| Container {
                id: c.id.clone(),
                pod_sandbox_id: c.pod_id.clone(),
                metadata: c.config.metadata.clone(),
                image: image_spec(c),
                image_ref: c.image_ref.clone(),
                image_id: c.image_id.clone(),
                state: state_of(c) as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            })
            .collect(),
    })
}
