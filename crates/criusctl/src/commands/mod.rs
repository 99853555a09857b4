//! One module per subcommand: the image ones (pull, images, …) and the runtime ones
//! (runp, pods, create, ps, logs, exec, …), each with its own file; `kind` holds the RPCs
//! that containers and pod sandboxes have in parallel, for the commands alike over both.

mod attach;
mod create;
mod events;
mod exec;
mod exec_stream;
mod imagefsinfo;
mod images;
mod info;
mod inspect;
mod inspecti;
mod inspectp;
mod kind;
mod logs;
mod pods;
mod port_forward;
mod ps;
mod pull;
mod rm;
mod rmi;
mod rmp;
mod run;
mod runp;
mod start;
mod stats;
mod stop;
mod stopp;
mod update;
mod version;

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use k8s_cri::v1::{ImageSpec, ImageStatusRequest};
use serde_json::json;

use crate::cli::{Cli, Command, ListOutput};
use crate::client::Context;
use crate::format;

/// The exit status a command wants without an error message (exec passes on the
/// command's own status this way).
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Deadline for commands other than pull when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(&cli.global);
    let timeout = deadline(cli.global.timeout, &cli.command);
    let work = dispatch(&ctx, &cli.command, cli.global.timeout);
    if timeout.is_zero() {
        return work.await;
    }
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("DeadlineExceeded: no answer within {timeout:?}"))?
}

/// The deadline of the whole command; zero means none. Pulls (also inside `run`) and
/// followed logs can legitimately take long; exec and stop add their own time to the
/// default; everything else should answer quickly.
fn deadline(global: Option<Duration>, command: &Command) -> Duration {
    match command {
        Command::Pull(_) | Command::Run(_) => global.unwrap_or(Duration::ZERO),
        Command::Logs(args) if args.follow => global.unwrap_or(Duration::ZERO),
        Command::Stats(args) if args.watch => global.unwrap_or(Duration::ZERO),
        Command::Events(_) => global.unwrap_or(Duration::ZERO),
        // An attach lasts as long as the container or the user wants.
        Command::Attach(_) | Command::PortForward(_) => global.unwrap_or(Duration::ZERO),
        // exec's --timeout is the command's own timeout: give the RPC room beyond it.
        Command::Exec(_) => match global {
            Some(t) if !t.is_zero() => t + DEFAULT_TIMEOUT,
            _ => Duration::ZERO,
        },
        Command::Stop(args) => match (args.grace, global) {
            (Some(_), Some(t)) => t,
            _ => {
                let grace = stop::grace_period(args, global);
                let count = u32::try_from(args.containers.len()).unwrap_or(u32::MAX);
                Duration::from_secs(grace.unsigned_abs()).saturating_mul(count) + DEFAULT_TIMEOUT
            }
        },
        _ => global.unwrap_or(DEFAULT_TIMEOUT),
    }
}

async fn dispatch(ctx: &Context, command: &Command, global: Option<Duration>) -> Result<()> {
    match command {
        Command::Version => version::run(ctx).await,
        Command::Info(args) => info::run(ctx, args).await,
        Command::Pull(args) => pull::run(ctx, args).await,
        Command::Images(args) => images::run(ctx, args).await,
        Command::Inspecti(args) => inspecti::run(ctx, args).await,
        Command::Rmi(args) => rmi::run(ctx, args).await,
        Command::Imagefsinfo(args) => imagefsinfo::run(ctx, args).await,
        Command::Runp(args) => runp::run(ctx, args).await,
        Command::Pods(args) => pods::run(ctx, args).await,
        Command::Inspectp(args) => inspectp::run(ctx, args).await,
        Command::Stopp(args) => stopp::run(ctx, args).await,
        Command::Rmp(args) => rmp::run(ctx, args).await,
        Command::Create(args) => create::run(ctx, args).await,
        Command::Start(args) => start::run(ctx, args).await,
        Command::Stop(args) => stop::run(ctx, args, global).await,
        Command::Rm(args) => rm::run(ctx, args).await,
        Command::Ps(args) => ps::run(ctx, args).await,
        Command::Inspect(args) => inspect::run(ctx, args).await,
        Command::Logs(args) => logs::run(ctx, args).await,
        Command::Exec(args) => exec::run(ctx, args, global).await,
        Command::Attach(args) => attach::run(ctx, args).await,
        Command::PortForward(args) => port_forward::run(ctx, args).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Update(args) => update::run(ctx, args).await,
        Command::Stats(args) => stats::run(ctx, args).await,
        Command::Events(args) => events::run(ctx, args).await,
    }
}

/// For commands over several ids: tells about one failure and lets the rest go on.
fn report(what: &str, id: &str, err: &anyhow::Error) {
    eprintln!("criusctl: {what} {id:?}: {}", format::error_message(err));
}

/// Runs `op` on each id in turn. As crictl, a failure is [`report`]ed as `doing` (e.g.
/// "stopping container") and the rest still run; then the command fails, naming
/// `doing_all` ("stopping containers"). `op` prints its own line on success.
async fn each_id<'a>(
    ids: impl IntoIterator<Item = &'a String>,
    doing: &str,
    doing_all: &str,
    mut op: impl AsyncFnMut(&'a str) -> Result<()>,
) -> Result<()> {
    let mut failed = 0;
    for id in ids {
        if let Err(err) = op(id).await {
            report(doing, id, &err);
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{doing_all} failed for {failed} of the given ids");
    }
    Ok(())
}

/// Prints a listing as crictl does: only the ids with `-q`, else the table, or the items
/// under `key` as JSON or YAML.
fn print_listing<T: serde::Serialize>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    quiet: bool,
    output: ListOutput,
    key: &str,
    table: impl FnOnce(&[T]) -> String,
) -> Result<()> {
    if quiet {
        for item in items {
            println!("{}", id(item));
        }
        return Ok(());
    }
    match format::structured(output) {
        None => print!("{}", table(items)),
        Some(output) => {
            let doc = json!({ key: format::message_json(&items)? });
            print!("{}", format::render(&doc, output)?);
        }
    }
    Ok(())
}

/// Pulls `image` (quietly) unless the image service already has it.
async fn ensure_image(ctx: &Context, image: &str) -> Result<()> {
    let request = ImageStatusRequest {
        image: Some(image_spec(image)),
        verbose: false,
    };
    ctx.trace("ImageStatusRequest", &request);
    let response = ctx.image().await?.image_status(request).await?.into_inner();
    ctx.trace("ImageStatusResponse", &response);
    if response.image.is_none() {
        pull::pull_quietly(ctx, image).await?;
    }
    Ok(())
}

/// The ImageSpec for a user-given reference.
fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_id_goes_on_after_a_failure() {
        let ids = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut seen = Vec::new();
        let err = each_id(&ids, "doing thing", "doing things", async |id| {
            seen.push(id.to_owned());
            if id == "b" {
                bail!("no");
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(
            err.to_string(),
            "doing things failed for 1 of the given ids"
        );
    }
}
