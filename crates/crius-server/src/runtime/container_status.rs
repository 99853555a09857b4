//! ContainerStatus: state, times, exit code and reason, image, mounts, log path; `verbose`
//! adds the pid and the OCI spec.

use std::collections::HashMap;

use crius_runtime::ContainerView;
use k8s_cri::v1::{
    ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ContainerUser,
    LinuxContainerUser,
};
use tonic::Status;

use super::container_common::{image_spec, record_ids, state_of};
use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    let runtime = ctx.runtime.clone();
    let (id, verbose) = (req.container_id.clone(), req.verbose);
    let view = blocking(move || runtime.container_status(&id, verbose)).await?;
    let c = &view.record;
    record_ids(c);
    let mut info = HashMap::new();
    if let Some(spec) = &view.spec {
        let verbose = serde_json::json!({
            "pid": c.pid,
            "sandboxID": c.pod_id,
            "runtimeHandler": c.runtime_handler,
            "bundle": c.bundle,
            "rootfs": c.rootfs,
            "runtimeSpec": spec,
            "config": c.config,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(status_of(&view)),
        info,
    })
}

/// A container's CRI status, with its effective user: the image's user or run_as_*, with
/// resolved groups.
pub(crate) fn status_of(view: &ContainerView) -> ContainerStatus {
    let c = &view.record;
    let user = view.user.as_ref().map(|u| ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: u.uid.into(),
            gid: u.gid.into(),
            supplemental_groups: u.additional_gids.iter().map(|&g| g.into()).collect(),
        }),
    });
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: state_of(c) as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: image_spec(c),
        image_ref: c.image_ref.clone(),
        image_id: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.display().to_string(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| k8s_cri::v1::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        user,
    }
}
