//! `criusctl create`: CreateContainer in a pod, with the pod's config; prints the id.

use anyhow::{Context as _, Result};
use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, PodSandboxConfig};

use super::ensure_image;
use crate::cli::CreateArgs;
use crate::client::Context;
use crate::config;

pub async fn run(ctx: &Context, args: &CreateArgs) -> Result<()> {
    let container: ContainerConfig = config::load(&args.container_config)?;
    let pod: PodSandboxConfig = config::load(&args.pod_config)?;
    if args.with_pull {
        let image = image_of(&container)?;
        ensure_image(ctx, &image).await?;
    }
    let id = create(ctx, &args.pod, container, pod).await?;
    println!("{id}");
    Ok(())
}

/// The image a container config names; it must name one.
pub fn image_of(config: &ContainerConfig) -> Result<String> {
    config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .context("the container config names no image (image.image)")
}

/// Creates a container; its id.
pub async fn create(
    ctx: &Context,
    pod_id: &str,
    config: ContainerConfig,
    sandbox_config: PodSandboxConfig,
) -> Result<String> {
    let request = CreateContainerRequest {
        pod_sandbox_id: pod_id.to_owned(),
        config: Some(config),
        sandbox_config: Some(sandbox_config),
    };
    ctx.trace("CreateContainerRequest", &request);
    let response = ctx
        .runtime()
        .await?
        .create_container(request)
        .await?
        .into_inner();
    ctx.trace("CreateContainerResponse", &response);
    Ok(response.container_id)
}
