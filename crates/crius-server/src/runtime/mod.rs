//! `runtime.v1.RuntimeService`: one file per implemented RPC; the rest answer Unimplemented.

mod attach;
mod container_common;
mod container_stats;
mod container_status;
mod create_container;
mod exec;
mod exec_sync;
mod get_container_events;
mod list_container_stats;
mod list_containers;
mod list_metric_descriptors;
mod list_pod_sandbox;
mod list_pod_sandbox_metrics;
mod list_pod_sandbox_stats;
mod metrics_common;
mod pod_sandbox_stats;
mod pod_sandbox_status;
mod port_forward;
mod remove_container;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod start_container;
mod stats_common;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod update_container_resources;
mod update_runtime_config;
mod version;

use std::sync::Arc;

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::context::Context;
use crate::status::unimplemented;

pub struct Runtime {
    ctx: Arc<Context>,
}

impl Runtime {
    pub fn new(ctx: Arc<Context>) -> Runtime {
        Runtime { ctx }
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, req: Request<VersionRequest>) -> R<VersionResponse> {
        version::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn status(&self, req: Request<StatusRequest>) -> R<StatusResponse> {
        status::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn runtime_config(&self, req: Request<RuntimeConfigRequest>) -> R<RuntimeConfigResponse> {
        runtime_config::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> R<UpdateRuntimeConfigResponse> {
        update_runtime_config::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        req: Request<GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        get_container_events::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> R<RunPodSandboxResponse> {
        run_pod_sandbox::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> R<StopPodSandboxResponse> {
        stop_pod_sandbox::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> R<RemovePodSandboxResponse> {
        remove_pod_sandbox::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> R<PodSandboxStatusResponse> {
        pod_sandbox_status::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> R<ListPodSandboxResponse> {
        list_pod_sandbox::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> R<CreateContainerResponse> {
        create_container::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> R<StartContainerResponse> {
        start_container::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(&self, req: Request<StopContainerRequest>) -> R<StopContainerResponse> {
        stop_container::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> R<RemoveContainerResponse> {
        remove_container::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> R<ListContainersResponse> {
        list_containers::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> R<ContainerStatusResponse> {
        container_status::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> R<UpdateContainerResourcesResponse> {
        update_container_resources::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> R<ReopenContainerLogResponse> {
        reopen_container_log::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> R<ExecSyncResponse> {
        exec_sync::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(&self, req: Request<ExecRequest>) -> R<ExecResponse> {
        exec::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn attach(&self, req: Request<AttachRequest>) -> R<AttachResponse> {
        attach::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn port_forward(&self, req: Request<PortForwardRequest>) -> R<PortForwardResponse> {
        port_forward::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> R<ContainerStatsResponse> {
        container_stats::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> R<ListContainerStatsResponse> {
        list_container_stats::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> R<PodSandboxStatsResponse> {
        pod_sandbox_stats::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> R<ListPodSandboxStatsResponse> {
        list_pod_sandbox_stats::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        _req: Request<CheckpointContainerRequest>,
    ) -> R<CheckpointContainerResponse> {
        Err(unimplemented("CheckpointContainer"))
    }

    async fn list_metric_descriptors(
        &self,
        req: Request<ListMetricDescriptorsRequest>,
    ) -> R<ListMetricDescriptorsResponse> {
        list_metric_descriptors::handle(req.into_inner()).map(Response::new)
    }

    async fn list_pod_sandbox_metrics(
        &self,
        req: Request<ListPodSandboxMetricsRequest>,
    ) -> R<ListPodSandboxMetricsResponse> {
        list_pod_sandbox_metrics::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }
}
