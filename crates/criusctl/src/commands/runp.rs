//! `criusctl runp`: RunPodSandbox from a crictl-style config file; prints the pod id.

use anyhow::Result;
use k8s_cri::v1::{PodSandboxConfig, RunPodSandboxRequest};

use crate::cli::RunpArgs;
use crate::client::Context;
use crate::config;

pub async fn run(ctx: &Context, args: &RunpArgs) -> Result<()> {
    let config: PodSandboxConfig = config::load(&args.config)?;
    let id = run_pod(ctx, config, args.runtime.as_deref()).await?;
    println!("{id}");
    Ok(())
}

/// Runs a pod sandbox; its id.
pub async fn run_pod(
    ctx: &Context,
    config: PodSandboxConfig,
    runtime: Option<&str>,
) -> Result<String> {
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: runtime.unwrap_or_default().to_owned(),
    };
    ctx.trace("RunPodSandboxRequest", &request);
    let response = ctx
        .runtime()
        .await?
        .run_pod_sandbox(request)
        .await?
        .into_inner();
    ctx.trace("RunPodSandboxResponse", &response);
    Ok(response.pod_sandbox_id)
}
