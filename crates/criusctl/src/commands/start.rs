//! `criusctl start`: StartContainer for each id.

use anyhow::Result;
use k8s_cri::v1::StartContainerRequest;

use super::each_id;
use crate::cli::StartArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &StartArgs) -> Result<()> {
    each_id(
        &args.containers,
        "starting container",
        "starting containers",
        async |id| {
            start(ctx, id).await?;
            println!("{id}");
            Ok(())
        },
    )
    .await
}

pub async fn start(ctx: &Context, id: &str) -> Result<()> {
    let request = StartContainerRequest {
        container_id: id.to_owned(),
    };
    ctx.trace("StartContainerRequest", &request);
    ctx.runtime().await?.start_container(request).await?;
    Ok(())
}
