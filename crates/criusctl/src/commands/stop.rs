//! `criusctl stop`: StopContainer for each id, with a grace period.

use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::StopContainerRequest;

use super::{finish, report};
use crate::cli::StopArgs;
use crate::client::Context;

/// Seconds to wait before the kill: `-t`, else the global `--timeout` (crictl's
/// `stop --timeout`), else 0.
pub fn grace_period(args: &StopArgs, global: Option<Duration>) -> i64 {
    args.grace
        .or(global.map(|t| t.as_secs()))
        .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX))
}

pub async fn run(ctx: &Context, args: &StopArgs, global: Option<Duration>) -> Result<()> {
    let timeout = grace_period(args, global);
    let mut client = ctx.runtime().await?;
    let mut failed = 0;
    for id in &args.containers {
        let request = StopContainerRequest {
            container_id: id.clone(),
            timeout,
        };
        ctx.trace("StopContainerRequest", &request);
        match client.stop_container(request).await {
            Ok(_) => println!("{id}"),
            Err(status) => {
                report("stopping container", id, &status.into());
                failed += 1;
            }
        }
    }
    finish(failed, "stopping containers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_from_flag_or_global_timeout() {
        let args = |grace| StopArgs {
            containers: vec!["c".into()],
            grace,
        };
        assert_eq!(grace_period(&args(None), None), 0);
        assert_eq!(
            grace_period(&args(Some(7)), Some(Duration::from_secs(3))),
            7
        );
        assert_eq!(grace_period(&args(None), Some(Duration::from_secs(3))), 3);
    }
}
