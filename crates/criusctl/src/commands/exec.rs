//! `criusctl exec`: ExecSync by default, the command's output passed through and its exit
//! status returned; with `-i`/`-t` the streaming Exec over SPDY, as crictl does it.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::ExecSyncRequest;

use super::Exit;
use crate::cli::ExecArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &ExecArgs, timeout: Option<Duration>) -> Result<()> {
    if (args.interactive || args.tty) && !args.sync {
        return super::exec_stream::run(ctx, args).await;
    }
    let request = ExecSyncRequest {
        container_id: args.container.clone(),
        cmd: args.command.clone(),
        timeout: timeout.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    };
    ctx.trace("ExecSyncRequest", &request);
    let response = ctx.runtime().await?.exec_sync(request).await?.into_inner();
    ctx.trace("ExecSyncResponse", &response.exit_code);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response.stdout)?;
    stdout.flush()?;
    let mut stderr = std::io::stderr().lock();
    stderr.write_all(&response.stderr)?;
    stderr.flush()?;
    if response.exit_code != 0 {
        return Err(Exit(response.exit_code).into());
    }
    Ok(())
}
