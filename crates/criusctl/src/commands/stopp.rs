//! `criusctl stopp`: StopPodSandbox for each id.

use anyhow::Result;

use super::each_id;
use super::kind::{Kind, Pods};
use crate::cli::StoppArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &StoppArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    each_id(
        &args.pods,
        "stopping pod sandbox",
        "stopping pod sandboxes",
        async |id| {
            Pods::stop(ctx, &mut client, id).await?;
            println!("Stopped sandbox {id}");
            Ok(())
        },
    )
    .await
}
