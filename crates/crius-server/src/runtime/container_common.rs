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

/// The container `id` (or unique prefix), refreshed, if it is running: what Exec and Attach
/// need before they hand out a URL.
pub async fn running_container(
    ctx: &crate::context::Context,
    id: &str,
) -> Result<ContainerRecord, tonic::Status> {
    let containers = ctx.containers.clone();
    let id = id.to_string();
    let c = crate::status::blocking(move || containers.running(&id)).await?;
    record_ids(&c);
    Ok(c)
}

/// The streaming checks the kubelet makes: some stream must be asked for, and a TTY merges
/// stderr into stdout so it cannot be asked for separately.
pub fn check_streams(
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), tonic::Status> {
    if !(stdin || stdout || stderr) {
        return Err(crate::status::invalid(
            "stdin/stdout/stderr",
            "one of stdin, stdout or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(crate::status::invalid(
            "stderr",
            "tty and stderr cannot both be set (a TTY merges stderr into stdout)",
        ));
    }
    Ok(())
}
