//! `criusctl stopp`: StopPodSandbox for each id.

use anyhow::Result;
use k8s_cri::v1::StopPodSandboxRequest;

use super::{finish, report};
use crate::cli::StoppArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &StoppArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    let mut failed = 0;
    for id in &args.pods {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        ctx.trace("StopPodSandboxRequest", &request);
        match client.stop_pod_sandbox(request).await {
            Ok(_) => println!("Stopped sandbox {id}"),
            Err(status) => {
                report("stopping pod sandbox", id, &status.into());
                failed += 1;
            }
        }
    }
    finish(failed, "stopping pod sandboxes")
}
