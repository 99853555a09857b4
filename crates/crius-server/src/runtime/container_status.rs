//! ContainerStatus: state, times, exit code and reason, image, mounts, log path; `verbose`
//! adds the pid and the OCI spec.

use std::collections::HashMap;

use crius_runtime::ContainerRecord;
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
    let containers = ctx.containers.clone();
    let id = req.container_id.clone();
    let c = blocking(move || {
        let found = containers.get(&id)?;
        containers.refresh(&found.id)
    })
    .await?;
    record_ids(&c);
    let spec = read_spec(&c);
    let mut info = HashMap::new();
    if req.verbose {
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
        status: Some(status_of(&c, &spec)),
        info,
    })
}

/// The generated OCI spec of a container (empty when it cannot be read).
pub(crate) fn read_spec(c: &ContainerRecord) -> serde_json::Value {
    std::fs::read(c.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// A container's CRI status. The spec holds the effective user: the image's user or
/// run_as_*, with resolved groups.
pub(crate) fn status_of(c: &ContainerRecord, spec: &serde_json::Value) -> ContainerStatus {
    let user = spec["process"]["user"].as_object().map(|u| ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: u.get("uid").and_then(|v| v.as_i64()).unwrap_or(0),
            gid: u.get("gid").and_then(|v| v.as_i64()).unwrap_or(0),
            supplemental_groups: u
                .get("additionalGids")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
                .unwrap_or_default(),
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
