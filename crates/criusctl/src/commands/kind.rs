//! Containers and pod sandboxes behind one trait. The CRI has a parallel set of RPCs for
//! each (list, status, stop, remove); `rm`/`rmp` and `inspect`/`inspectp` differ only in
//! which set they call and in their words, so each pair is one flow over a [`Kind`].

use std::collections::HashMap;

use anyhow::Result;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerState, ContainerStatus, ContainerStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxState, PodSandboxStatus, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, StopContainerRequest, StopPodSandboxRequest,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::client::Context;

/// The runtime service client every RPC here goes through.
pub type Client = RuntimeServiceClient<Channel>;

/// What a status RPC answers, for either kind.
pub struct StatusReply<S> {
    pub status: Option<S>,
    /// Runtime-specific details (for verbose requests).
    pub info: HashMap<String, String>,
}

/// One kind of runtime object; each RPC traces its messages as the commands always have.
pub trait Kind {
    /// In messages: "container" or "pod sandbox".
    const NOUN: &'static str;
    /// In messages: "containers" or "pod sandboxes".
    const NOUNS: &'static str;
    /// The state `rm` needs `--force` for: "running" or "ready".
    const ACTIVE: &'static str;
    /// ContainerStatus or PodSandboxStatus.
    type Status: Serialize;

    /// The ids of all of this kind, unfiltered.
    async fn list_ids(ctx: &Context, client: &mut Client) -> Result<Vec<String>>;
    async fn status(
        ctx: &Context,
        client: &mut Client,
        id: &str,
        verbose: bool,
    ) -> Result<StatusReply<Self::Status>>;
    /// Whether it is in the [`ACTIVE`](Kind::ACTIVE) state.
    fn is_active(status: &Self::Status) -> bool;
    /// Stops it at once (a container gets no grace period).
    async fn stop(ctx: &Context, client: &mut Client, id: &str) -> Result<()>;
    async fn remove(ctx: &Context, client: &mut Client, id: &str) -> Result<()>;
}

pub struct Containers;

impl Kind for Containers {
    const NOUN: &'static str = "container";
    const NOUNS: &'static str = "containers";
    const ACTIVE: &'static str = "running";
    type Status = ContainerStatus;

    async fn list_ids(ctx: &Context, client: &mut Client) -> Result<Vec<String>> {
        let request = ListContainersRequest::default();
        ctx.trace("ListContainersRequest", &request);
        let response = client.list_containers(request).await?.into_inner();
        ctx.trace("ListContainersResponse", &response);
        Ok(response.containers.into_iter().map(|c| c.id).collect())
    }

    async fn status(
        ctx: &Context,
        client: &mut Client,
        id: &str,
        verbose: bool,
    ) -> Result<StatusReply<ContainerStatus>> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose,
        };
        ctx.trace("ContainerStatusRequest", &request);
        let response = client.container_status(request).await?.into_inner();
        ctx.trace("ContainerStatusResponse", &response);
        Ok(StatusReply {
            status: response.status,
            info: response.info,
        })
    }

    fn is_active(status: &ContainerStatus) -> bool {
        status.state == ContainerState::ContainerRunning as i32
    }

    async fn stop(ctx: &Context, client: &mut Client, id: &str) -> Result<()> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: 0,
        };
        ctx.trace("StopContainerRequest", &request);
        client.stop_container(request).await?;
        Ok(())
    }

    async fn remove(ctx: &Context, client: &mut Client, id: &str) -> Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        ctx.trace("RemoveContainerRequest", &request);
        client.remove_container(request).await?;
        Ok(())
    }
}

pub struct Pods;

impl Kind for Pods {
    const NOUN: &'static str = "pod sandbox";
    const NOUNS: &'static str = "pod sandboxes";
    const ACTIVE: &'static str = "ready";
    type Status = PodSandboxStatus;

    async fn list_ids(ctx: &Context, client: &mut Client) -> Result<Vec<String>> {
        let request = ListPodSandboxRequest::default();
        ctx.trace("ListPodSandboxRequest", &request);
        let response = client.list_pod_sandbox(request).await?.into_inner();
        ctx.trace("ListPodSandboxResponse", &response);
        Ok(response.items.into_iter().map(|p| p.id).collect())
    }

    async fn status(
        ctx: &Context,
        client: &mut Client,
        id: &str,
        verbose: bool,
    ) -> Result<StatusReply<PodSandboxStatus>> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose,
        };
        ctx.trace("PodSandboxStatusRequest", &request);
        let response = client.pod_sandbox_status(request).await?.into_inner();
        ctx.trace("PodSandboxStatusResponse", &response);
        Ok(StatusReply {
            status: response.status,
            info: response.info,
        })
    }

    fn is_active(status: &PodSandboxStatus) -> bool {
        status.state == PodSandboxState::SandboxReady as i32
    }

    async fn stop(ctx: &Context, client: &mut Client, id: &str) -> Result<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        ctx.trace("StopPodSandboxRequest", &request);
        client.stop_pod_sandbox(request).await?;
        Ok(())
    }

    async fn remove(ctx: &Context, client: &mut Client, id: &str) -> Result<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        ctx.trace("RemovePodSandboxRequest", &request);
        client.remove_pod_sandbox(request).await?;
        Ok(())
    }
}
