//! Conversions shared by the container RPCs.

use crius_runtime::{ContainerRecord, ContainerState as State};
use k8s_cri::v1::{ContainerState, ImageSpec};

pub fn state_of(c: &ContainerRecord) -> ContainerState {
    match c.state {
        State::Created => ContainerState::ContainerCreated,
        State::Running => ContainerState::ContainerRunning,
        State::Exited => ContainerState::ContainerExited,
    }
}

pub fn image_spec(c: &ContainerRecord) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: c.image.clone(),
        user_specified_image: if c.user_image.is_empty() {
            c.image.clone()
        } else {
            c.user_image.clone()
        },
        ..Default::default()
    })
}

pub fn record_ids(c: &ContainerRecord) {
    let span = tracing::Span::current();
    span.record("container_id", c.id.as_str());
    span.record("pod_id", c.pod_id.as_str());
}
