//! `criusctl inspectp`: verbose PodSandboxStatus, shaped like `crictl inspectp`; the flow
//! is `inspect`'s, over pod sandboxes.

use anyhow::Result;

use super::inspect::inspect_all;
use super::kind::Pods;
use crate::cli::InspectpArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &InspectpArgs) -> Result<()> {
    inspect_all::<Pods>(ctx, &args.pods, args.output).await
}
