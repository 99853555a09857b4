//! `criusctl rmp`: RemovePodSandbox; a ready pod needs `--force`, which stops it first.
//! The flow is `rm`'s, over pod sandboxes.

use anyhow::Result;

use super::kind::Pods;
use super::rm::remove_all;
use crate::cli::RmpArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &RmpArgs) -> Result<()> {
    remove_all::<Pods>(ctx, &args.pods, args.all, args.force, |id| {
        format!("Removed sandbox {id}")
    })
    .await
}
