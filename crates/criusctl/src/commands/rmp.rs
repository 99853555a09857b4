//! `criusctl rmp`: RemovePodSandbox; a ready pod needs `--force`, which stops it first.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxState, PodSandboxStatusRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest,
};
use tonic::transport::Channel;

use super::{finish, report};
use crate::cli::RmpArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &RmpArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    let mut targets: BTreeSet<String> = args.pods.iter().cloned().collect();
    if args.all {
        let request = ListPodSandboxRequest::default();
        ctx.trace("ListPodSandboxRequest", &request);
        let response = client.list_pod_sandbox(request).await?.into_inner();
        ctx.trace("ListPodSandboxResponse", &response);
        targets.extend(response.items.into_iter().map(|p| p.id));
    }
    let mut failed = 0;
    for id in &targets {
        match remove(ctx, &mut client, id, args.force).await {
            Ok(()) => println!("Removed sandbox {id}"),
            Err(err) => {
                report("removing pod sandbox", id, &err);
                failed += 1;
            }
        }
    }
    finish(failed, "removing pod sandboxes")
}

async fn remove(
    ctx: &Context,
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    force: bool,
) -> Result<()> {
    let request = PodSandboxStatusRequest {
        pod_sandbox_id: id.to_owned(),
        verbose: false,
    };
    ctx.trace("PodSandboxStatusRequest", &request);
    let status = client.pod_sandbox_status(request).await?.into_inner();
    ctx.trace("PodSandboxStatusResponse", &status);
    let ready = status
        .status
        .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
    if ready {
        if !force {
            bail!("pod sandbox is ready, stop it first or use --force");
        }
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        ctx.trace("StopPodSandboxRequest", &request);
        client.stop_pod_sandbox(request).await?;
    }
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    ctx.trace("RemovePodSandboxRequest", &request);
    client.remove_pod_sandbox(request).await?;
    Ok(())
}
