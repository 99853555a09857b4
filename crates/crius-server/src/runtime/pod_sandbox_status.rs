//! PodSandboxStatus: state, metadata, namespace options, labels; `verbose` adds the pid of the
//! pod's init, its paths and its config.

use std::collections::HashMap;

use crius_runtime::{PodRecord, PodState, Runtime, RuntimeError};
use k8s_cri::v1::{
    ContainerStatus, LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use tonic::Status;

use super::container_status::status_of as status_of_container;
use crate::context::Context;
use crate::status::{blocking, invalid};

pub async fn handle(
    ctx: &Context,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    let runtime = ctx.runtime.clone();
    let (pod, containers_statuses) =
        blocking(move || with_containers(&runtime, &req.pod_sandbox_id)).await?;
    tracing::Span::current().record("pod_id", pod.id.as_str());
    let mut info = HashMap::new();
    if req.verbose {
        let verbose = serde_json::json!({
            "pid": pod.namespaces.init.as_ref().map(|i| i.pid),
            "netns": pod.namespaces.net,
            "namespaces": pod.namespaces,
            "dir": pod.dir,
            "shm": pod.shm,
            "resolvConf": pod.resolv_conf,
            "hosts": pod.hosts_file,
            "hostname": pod.hostname_file,
            "runtimeHandler": pod.runtime_handler,
            "config": pod.config,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(status_of(&pod)),
        info,
        containers_statuses,
        timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
    })
}

/// A pod and its containers' statuses, as evented PLEG reads them in one call. Blocking.
pub(crate) fn with_containers(
    runtime: &Runtime,
    pod_id: &str,
) -> Result<(PodRecord, Vec<ContainerStatus>), RuntimeError> {
    let (pod, views) = runtime.pod_status(pod_id)?;
    Ok((pod, views.iter().map(status_of_container).collect()))
}

pub(crate) fn state_of(pod: &PodRecord) -> PodSandboxState {
    match pod.state {
        PodState::Ready => PodSandboxState::SandboxReady,
        PodState::NotReady => PodSandboxState::SandboxNotready,
    }
}

pub(crate) fn status_of(pod: &PodRecord) -> PodSandboxStatus {
    let options = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    PodSandboxStatus {
        id: pod.id.clone(),
        metadata: pod.config.metadata.clone(),
        state: state_of(pod) as i32,
        created_at: pod.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: pod.ips.first().cloned().unwrap_or_default(),
            additional_ips: pod
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace { options }),
        }),
        labels: pod.config.labels.clone(),
        annotations: pod.config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}
