//! One module per subcommand. Runtime-side commands (pods, ps, runp, create, start,
//! exec, logs, …) slot in here beside the image ones, each with its own file.

mod imagefsinfo;
mod images;
mod info;
mod inspecti;
mod pull;
mod rmi;
mod version;

use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_cri::v1::ImageSpec;

use crate::cli::{Cli, Command};
use crate::client::Context;

/// Deadline for commands other than pull when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(&cli.global);
    // Pulls can legitimately take long; everything else should answer quickly.
    let timeout = match (cli.global.timeout, &cli.command) {
        (Some(t), _) => t,
        (None, Command::Pull(_)) => Duration::ZERO,
        (None, _) => DEFAULT_TIMEOUT,
    };
    let work = dispatch(&ctx, &cli.command);
    if timeout.is_zero() {
        return work.await;
    }
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("DeadlineExceeded: no answer within {timeout:?}"))?
}

async fn dispatch(ctx: &Context, command: &Command) -> Result<()> {
    match command {
        Command::Version => version::run(ctx).await,
        Command::Info(args) => info::run(ctx, args).await,
        Command::Pull(args) => pull::run(ctx, args).await,
        Command::Images(args) => images::run(ctx, args).await,
        Command::Inspecti(args) => inspecti::run(ctx, args).await,
        Command::Rmi(args) => rmi::run(ctx, args).await,
        Command::Imagefsinfo(args) => imagefsinfo::run(ctx, args).await,
    }
}

/// The ImageSpec for a user-given reference.
fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}
