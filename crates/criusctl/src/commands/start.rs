//! `criusctl start`: StartContainer for each id.

use anyhow::Result;
use k8s_cri::v1::StartContainerRequest;

use super::{finish, report};
use crate::cli::StartArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &StartArgs) -> Result<()> {
    let mut failed = 0;
    for id in &args.containers {
        match start(ctx, id).await {
            Ok(()) => println!("{id}"),
            Err(err) => {
                report("starting container", id, &err);
                failed += 1;
            }
        }
    }
    finish(failed, "starting containers")
}

pub async fn start(ctx: &Context, id: &str) -> Result<()> {
    let request = StartContainerRequest {
        container_id: id.to_owned(),
    };
    ctx.trace("StartContainerRequest", &request);
    ctx.runtime().await?.start_container(request).await?;
    Ok(())
}
