//! `criusctl run`: runp, pull the image if missing, create, start; prints the container
//! id. A failure after the pod is up removes what was made, so nothing is left behind.

use anyhow::Result;
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

use super::kind::{Kind, Pods};
use super::{create, ensure_image, report, runp, start};
use crate::cli::RunArgs;
use crate::client::Context;
use crate::config;

pub async fn run(ctx: &Context, args: &RunArgs) -> Result<()> {
    let container: ContainerConfig = config::load(&args.container_config)?;
    let pod: PodSandboxConfig = config::load(&args.pod_config)?;
    let image = create::image_of(&container)?;
    if !args.no_pull {
        ensure_image(ctx, &image).await?;
    }
    let pod_id = runp::run_pod(ctx, pod.clone(), args.runtime.as_deref()).await?;
    match create_and_start(ctx, &pod_id, container, pod).await {
        Ok(id) => {
            println!("{id}");
            Ok(())
        }
        Err(err) => {
            if let Err(cleanup) = remove_pod(ctx, &pod_id).await {
                report("cleaning up pod sandbox", &pod_id, &cleanup);
            }
            Err(err)
        }
    }
}

async fn create_and_start(
    ctx: &Context,
    pod_id: &str,
    container: ContainerConfig,
    pod: PodSandboxConfig,
) -> Result<String> {
    let id = create::create(ctx, pod_id, container, pod).await?;
    start::start(ctx, &id).await?;
    Ok(id)
}

/// Stopping and removing the pod takes its containers with it.
async fn remove_pod(ctx: &Context, pod_id: &str) -> Result<()> {
    let mut client = ctx.runtime().await?;
    Pods::stop(ctx, &mut client, pod_id).await?;
    Pods::remove(ctx, &mut client, pod_id).await
}
