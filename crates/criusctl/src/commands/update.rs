//! `criusctl update`: UpdateContainerResources with the given Linux limits.

use anyhow::{Result, bail};
use k8s_cri::v1::{LinuxContainerResources, UpdateContainerResourcesRequest};

use super::each_id;
use crate::cli::UpdateArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &UpdateArgs) -> Result<()> {
    let resources = resources(args)?;
    let mut client = ctx.runtime().await?;
    each_id(
        &args.containers,
        "updating container",
        "updating containers",
        async |id| {
            let request = UpdateContainerResourcesRequest {
                container_id: id.to_owned(),
                linux: Some(resources.clone()),
                windows: None,
                annotations: Default::default(),
            };
            ctx.trace("UpdateContainerResourcesRequest", &request);
            client.update_container_resources(request).await?;
            println!("{id}");
            Ok(())
        },
    )
    .await
}

/// The resources to set; at least one flag must be given.
fn resources(args: &UpdateArgs) -> Result<LinuxContainerResources> {
    let given = args.memory.is_some()
        || args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_shares.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if !given {
        bail!(
            "nothing to update: give --memory, --cpu-quota, --cpu-period, --cpu-shares, --cpuset-cpus or --cpuset-mems"
        );
    }
    Ok(LinuxContainerResources {
        memory_limit_in_bytes: args.memory.unwrap_or_default(),
        cpu_quota: args.cpu_quota.unwrap_or_default(),
        cpu_period: args.cpu_period.unwrap_or_default(),
        cpu_shares: args.cpu_shares.unwrap_or_default(),
        cpuset_cpus: args.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: args.cpuset_mems.clone().unwrap_or_default(),
        ..Default::default()
    })
}
