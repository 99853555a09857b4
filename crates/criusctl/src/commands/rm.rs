//! `criusctl rm`: RemoveContainer; a running container needs `--force`, which stops it.
//! `rmp` is the same flow over pod sandboxes, hence [`remove_all`] is generic.

use std::collections::BTreeSet;

use anyhow::{Result, bail};

use super::each_id;
use super::kind::{Client, Containers, Kind};
use crate::cli::RmArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &RmArgs) -> Result<()> {
    remove_all::<Containers>(ctx, &args.containers, args.all, args.force, |id| {
        id.to_owned()
    })
    .await
}

/// Removes `ids` and, with `all`, every listed one. `done(id)` is the line printed for
/// each removed, as crictl words it (which differs for pods).
pub async fn remove_all<K: Kind>(
    ctx: &Context,
    ids: &[String],
    all: bool,
    force: bool,
    done: impl Fn(&str) -> String,
) -> Result<()> {
    let mut client = ctx.runtime().await?;
    // A set, so an id given twice (or given and listed by --all) is removed once.
    let mut targets: BTreeSet<String> = ids.iter().cloned().collect();
    if all {
        targets.extend(K::list_ids(ctx, &mut client).await?);
    }
    let doing = format!("removing {}", K::NOUN);
    let doing_all = format!("removing {}", K::NOUNS);
    each_id(&targets, &doing, &doing_all, async |id| {
        remove::<K>(ctx, &mut client, id, force).await?;
        println!("{}", done(id));
        Ok(())
    })
    .await
}

async fn remove<K: Kind>(ctx: &Context, client: &mut Client, id: &str, force: bool) -> Result<()> {
    let reply = K::status(ctx, client, id, false).await?;
    if reply.status.as_ref().is_some_and(K::is_active) {
        if !force {
            bail!("{} is {}, stop it first or use --force", K::NOUN, K::ACTIVE);
        }
        K::stop(ctx, client, id).await?;
    }
    K::remove(ctx, client, id).await
}
