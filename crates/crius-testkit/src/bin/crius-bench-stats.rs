//! Stats and events benchmark (hack/bench-stats.sh): ListPodSandboxStats p50/p99 over N pods
//! (each with one sleeping container) back to back and spaced beyond the daemon's sample
//! lifetime, ListContainerStats back to back, and RunPodSandbox p50 without and with a
//! GetContainerEvents consumer that never reads. Prints numbers; asserts nothing.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use crius_testkit::{Daemon, DaemonOptions, Registry, image, mirror_config, push_image};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, GetEventsRequest, ImageSpec,
    ListContainerStatsRequest, ListPodSandboxStatsRequest, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

fn usage() -> ! {
    eprintln!(
        "usage: crius-bench-stats --criusd <path> [--pods N] [--lists N] [--spaced N] [--runs N] \
         [--runtime runc|crun]"
    );
    std::process::exit(2)
}

fn pod_config(prefix: &str, i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("{prefix}-{i}"),
            namespace: "bench".into(),
            uid: format!("{prefix}-uid-{i}"),
            attempt: 0,
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `line` without terminal colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// RunPodSandbox latencies of `n` pods, each stopped and removed (untimed) after.
async fn run_pods(d: &Daemon, runtime: &str, prefix: &str, n: usize) -> Result<Vec<Duration>> {
    let mut rt = d.runtime().await?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let id = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(prefix, i)),
                runtime_handler: runtime.into(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        times.push(start.elapsed());
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut criusd = std::env::var_os("CRIUSD").map(PathBuf::from);
    let (mut pods, mut lists, mut runs, mut spaced) = (100usize, 200usize, 30usize, 20usize);
    let mut runtime = "runc".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--criusd" => criusd = Some(value().into()),
            "--pods" => pods = value().parse().unwrap_or_else(|_| usage()),
            "--lists" => lists = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => runs = value().parse().unwrap_or_else(|_| usage()),
            "--spaced" => spaced = value().parse().unwrap_or_else(|_| usage()),
            "--runtime" => runtime = value(),
            _ => usage(),
        }
    }
    let criusd = criusd.unwrap_or_else(|| usage());
    if !criusd.is_file() {
        bail!("criusd binary {} not found", criusd.display());
    }
    let registry = Registry::start_plain()?;
    push_image(
        &registry,
        "library/busybox",
        "latest",
        &image::busybox_image(),
    )
    .await?;
    let config = format!(
        "{}fallback_to_upstream = false\n",
        mirror_config(&registry.url(), "30s")
    );
    let d = Daemon::start(DaemonOptions::new(criusd.clone()).config(config)).await?;
    let mut images = d.images().await?;
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;

    println!(
        "criusd {} ({runtime}), {pods} pods with one container each",
        criusd.display()
    );
    let mut rt = d.runtime().await?;
    let setup = Instant::now();
    let mut ids = Vec::new();
    for i in 0..pods {
        let config = pod_config("stats", i);
        let pod_id = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: runtime.clone(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let c = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "sleeper".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    command: vec!["sleep".into(), "100000".into()],
                    ..Default::default()
                }),
                sandbox_config: Some(config),
            })
            .await?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest { container_id: c })
            .await?;
        ids.push(pod_id);
    }
    println!("set up in {:.1} s", setup.elapsed().as_secs_f64());

    let mut times = Vec::with_capacity(lists);
    for _ in 0..lists {
        let start = Instant::now();
        let n = rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats
            .len();
        times.push(start.elapsed());
        if n != pods {
            bail!("ListPodSandboxStats returned {n} pods, not {pods}");
        }
    }
    times.sort();
    println!(
        "ListPodSandboxStats over {pods} pods ({lists} calls back to back): p50 {}  p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    let mut times = Vec::with_capacity(lists);
    for _ in 0..lists {
        let start = Instant::now();
        rt.list_container_stats(ListContainerStatsRequest { filter: None })
            .await?;
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "ListContainerStats over {pods} containers ({lists} calls back to back): p50 {}  p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    // The kubelet asks every 10 s or so: calls further apart than the daemon keeps a sample
    // (1 s) each read every cgroup and network namespace afresh.
    let mut times = Vec::with_capacity(spaced);
    for _ in 0..spaced {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let start = Instant::now();
        rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await?;
        times.push(start.elapsed());
    }
    if !times.is_empty() {
        times.sort();
        println!(
            "ListPodSandboxStats over {pods} pods ({spaced} calls 1.1 s apart, fresh reads): \
             p50 {}  p99 {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }

    // The daemon's own account of its fresh samples (debug log): reading the cgroups, then
    // waiting for the network thread's remainder.
    let (mut cgroups, mut network) = (Vec::new(), Vec::new());
    for line in d.log().lines().filter(|l| l.contains("stats sampled")) {
        let line = strip_ansi(line);
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
        };
        if field("read").is_some_and(|r| r as usize >= 2 * pods)
            && let (Some(c), Some(n)) = (field("cgroups_us"), field("network_wait_us"))
        {
            cgroups.push(Duration::from_micros(c));
            network.push(Duration::from_micros(n));
        }
    }
    if !cgroups.is_empty() {
        cgroups.sort();
        network.sort();
        println!(
            "  inside criusd, {} fresh samples of every pod and container: cgroups p50 {}, \
             then network p50 {} more",
            cgroups.len(),
            ms(percentile(&cgroups, 0.5)),
            ms(percentile(&network, 0.5))
        );
    }

    // RunPodSandbox without a consumer, with one that never reads, and without again (the
    // two baselines bracket the run with it, so drift on a shared machine shows).
    let before = run_pods(&d, &runtime, "base1", runs).await?;
    let stuck_channel = d.channel().await?;
    let stuck = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(stuck_channel)
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner();
    let with_stuck = run_pods(&d, &runtime, "stuck", runs).await?;
    drop(stuck);
    let after = run_pods(&d, &runtime, "base2", runs).await?;
    let mut base: Vec<Duration> = before.iter().chain(&after).copied().collect();
    base.sort();
    let (b, s) = (percentile(&base, 0.5), percentile(&with_stuck, 0.5));
    println!(
        "RunPodSandbox p50 ({runs} runs each): no consumer {} (before {}, after {}), \
         stuck GetContainerEvents consumer {} ({:+.1}%)",
        ms(b),
        ms(percentile(&before, 0.5)),
        ms(percentile(&after, 0.5)),
        ms(s),
        (s.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0
    );

    for id in ids {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
    }
    Ok(())
}
