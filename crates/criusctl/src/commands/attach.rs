//! `criusctl attach`: joins a running container's stdio through the streaming Attach (the
//! same session as `exec -i/-t`).

use anyhow::Result;
use k8s_cri::v1::AttachRequest;

use crate::cli::AttachArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &AttachArgs) -> Result<()> {
    let request = AttachRequest {
        container_id: args.container.clone(),
        stdin: args.stdin,
        tty: args.tty,
        stdout: true,
        stderr: !args.tty,
    };
    ctx.trace("AttachRequest", &request);
    let url = ctx.runtime().await?.attach(request).await?.into_inner().url;
    ctx.trace("AttachResponse", &url);
    super::exec_stream::session(&url, args.stdin, args.tty).await
}
