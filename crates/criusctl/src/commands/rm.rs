//! `criusctl rm`: RemoveContainer; a running container needs `--force`, which stops it.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ListContainersRequest, RemoveContainerRequest,
    StopContainerRequest,
};
use tonic::transport::Channel;

use super::{finish, report};
use crate::cli::RmArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &RmArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    let mut targets: BTreeSet<String> = args.containers.iter().cloned().collect();
    if args.all {
        let request = ListContainersRequest::default();
        ctx.trace("ListContainersRequest", &request);
        let response = client.list_containers(request).await?.into_inner();
        ctx.trace("ListContainersResponse", &response);
        targets.extend(response.containers.into_iter().map(|c| c.id));
    }
    let mut failed = 0;
    for id in &targets {
        match remove(ctx, &mut client, id, args.force).await {
            Ok(()) => println!("{id}"),
            Err(err) => {
                report("removing container", id, &err);
                failed += 1;
            }
        }
    }
    finish(failed, "removing containers")
}

async fn remove(
    ctx: &Context,
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
    force: bool,
) -> Result<()> {
    let request = ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    };
    ctx.trace("ContainerStatusRequest", &request);
    let status = client.container_status(request).await?.into_inner();
    ctx.trace("ContainerStatusResponse", &status);
    let running = status
        .status
        .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32);
    if running {
        if !force {
            bail!("container is running, stop it first or use --force");
        }
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: 0,
        };
        ctx.trace("StopContainerRequest", &request);
        client.stop_container(request).await?;
    }
    let request = RemoveContainerRequest {
        container_id: id.to_owned(),
    };
    ctx.trace("RemoveContainerRequest", &request);
    client.remove_container(request).await?;
    Ok(())
}
