//! `criusctl stop`: StopContainer for each id, with a grace period.

use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::StopContainerRequest;

use super::each_id;
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
    each_id(
        &args.containers,
        "stopping container",
        "stopping containers",
        async |id| {
            // Its own request, not `Containers::stop` (kind.rs): this one has a grace period.
            let request = StopContainerRequest {
                container_id: id.to_owned(),
                timeout,
            };
            ctx.trace("StopContainerRequest", &request);
            client.stop_container(request).await?;
            println!("{id}");
            Ok(())
        },
    )
    .await
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
