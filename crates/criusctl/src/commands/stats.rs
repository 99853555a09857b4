//! `criusctl stats`: ListContainerStats as crictl's table (CONTAINER, NAME, CPU %, MEM, DISK,
//! INODES), JSON or YAML. CPU % is computed between two samples `--seconds` apart, as crictl
//! does; `--watch` redraws the table in place until interrupted.

use std::collections::HashSet;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ContainerStats, ContainerStatsFilter,
    ListContainerStatsRequest, ListContainersRequest,
};
use serde_json::json;

use crate::cli::StatsArgs;
use crate::client::Context;
use crate::format::{self, Table};

/// Home the cursor and clear the screen: the next table replaces the previous one.
const REDRAW: &str = "\x1b[H\x1b[2J";

pub async fn run(ctx: &Context, args: &StatsArgs) -> Result<()> {
    let interval = Duration::from_secs(args.seconds.max(1));
    let mut previous = sample(ctx, args).await?;
    loop {
        tokio::time::sleep(interval).await;
        let current = sample(ctx, args).await?;
        let text = match format::structured(args.listing.output) {
            None => table(&previous, &current, args.listing.no_trunc),
            Some(output) => {
                let doc = json!({ "stats": format::message_json(&current)? });
                format::render(&doc, output)?
            }
        };
        let mut out = std::io::stdout().lock();
        if args.watch && format::structured(args.listing.output).is_none() {
            write!(out, "{REDRAW}")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !args.watch {
            return Ok(());
        }
        previous = current;
    }
}

/// The stats of the containers asked for; without `--all` only running ones.
async fn sample(ctx: &Context, args: &StatsArgs) -> Result<Vec<ContainerStats>> {
    let request = ListContainerStatsRequest {
        filter: Some(ContainerStatsFilter {
            id: args.id.clone().unwrap_or_default(),
            pod_sandbox_id: args.pod.clone().unwrap_or_default(),
            label_selector: args.labels.iter().cloned().collect(),
        }),
    };
    ctx.trace("ListContainerStatsRequest", &request);
    let mut runtime = ctx.runtime().await?;
    let mut stats = runtime
        .list_container_stats(request)
        .await?
        .into_inner()
        .stats;
    if !args.all {
        let running: HashSet<String> = runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        stats.retain(|s| running.contains(id(s)));
    }
    stats.sort_by(|a, b| name(a).cmp(name(b)).then(id(a).cmp(id(b))));
    Ok(stats)
}

fn id(s: &ContainerStats) -> &str {
    s.attributes.as_ref().map_or("", |a| a.id.as_str())
}

fn name(s: &ContainerStats) -> &str {
    s.attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map_or("", |m| m.name.as_str())
}

/// CPU % of one container between two samples: core-nanoseconds used over nanoseconds passed.
fn cpu_percent(before: Option<&ContainerStats>, now: &ContainerStats) -> f64 {
    let usage = |s: &ContainerStats| {
        s.cpu.as_ref().and_then(|c| {
            c.usage_core_nano_seconds
                .as_ref()
                .map(|u| (c.timestamp, u.value))
        })
    };
    match (before.and_then(usage), usage(now)) {
        (Some((t0, u0)), Some((t1, u1))) if t1 > t0 => {
            u1.saturating_sub(u0) as f64 / (t1 - t0) as f64 * 100.0
        }
        // No earlier sample: the runtime's own rate, if it has one.
        _ => now
            .cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores.as_ref())
            .map_or(0.0, |n| n.value as f64 / 1e7),
    }
}

/// crictl's stats table.
pub fn table(previous: &[ContainerStats], current: &[ContainerStats], no_trunc: bool) -> String {
    let mut t = Table::new();
    t.row(["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    for s in current {
        let before = previous.iter().find(|p| id(p) == id(s));
        let mem = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let layer = s.writable_layer.as_ref();
        let disk = layer
            .and_then(|l| l.used_bytes.as_ref())
            .map_or(0, |v| v.value);
        let inodes = layer
            .and_then(|l| l.inodes_used.as_ref())
            .map_or(0, |v| v.value);
        let shown_id = if no_trunc {
            id(s)
        } else {
            format::truncate_id(id(s))
        };
        t.row([
            shown_id.to_owned(),
            name(s).to_owned(),
            format!("{:.2}", cpu_percent(before, s)),
            format::human_size(mem),
            format::human_size(disk),
            inodes.to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{
        ContainerAttributes, ContainerMetadata, CpuUsage, FilesystemUsage, MemoryUsage, UInt64Value,
    };

    use super::*;

    fn stats(id: &str, t: i64, cpu_ns: u64) -> ContainerStats {
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: id.into(),
                metadata: Some(ContainerMetadata {
                    name: "web".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            cpu: Some(CpuUsage {
                timestamp: t,
                usage_core_nano_seconds: Some(UInt64Value { value: cpu_ns }),
                usage_nano_cores: None,
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: Some(UInt64Value { value: 104_857_600 }),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                used_bytes: Some(UInt64Value { value: 12_288 }),
                inodes_used: Some(UInt64Value { value: 7 }),
                ..Default::default()
            }),
            swap: None,
        }
    }

    #[test]
    fn cpu_percent_between_two_samples() {
        let id = "0123456789abcdef0123";
        // Half a core over one second.
        let before = [stats(id, 1_000_000_000, 5_000_000_000)];
        let now = [stats(id, 2_000_000_000, 5_500_000_000)];
        let text = table(&before, &now, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            ["0123456789abc", "web", "50.00", "105MB", "12.3kB", "7"]
        );
        assert!(lines[0].starts_with("CONTAINER"));
        // Without an earlier sample nothing is made up.
        assert_eq!(cpu_percent(None, &now[0]), 0.0);
    }
}
