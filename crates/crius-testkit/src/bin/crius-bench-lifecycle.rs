//! Lifecycle benchmark: p50/p90/p99 of every pod and container RPC over N iterations through a
//! real criusd, then the memory (RSS and PSS) of criusd and of the per-pod monitors with 20
//! pods running a container each.
//!
//! With `--network bridge` pods get crius's bridge network (its plugins next to criusd);
//! the default is a loopback-only network, which isolates the runtime's own cost.
//!
//! Usage: crius-bench-lifecycle --criusd <path> [--iterations 100] [--pods 20] [--runtime runc]
//!        [--network loopback|bridge]

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use crius_testkit::{Daemon, DaemonOptions, Registry, image, mirror_config, push_image};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

fn usage() -> ! {
    eprintln!(
        "usage: crius-bench-lifecycle --criusd <path> [--iterations N] [--pods N] [--runtime runc|crun]"
    );
    std::process::exit(2)
}

/// A pod as the kubelet configures one: its own network, IPC and UTS, a PID namespace per
/// container.
fn pod_config(i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{i}"),
            namespace: "bench".into(),
            uid: format!("uid-{i}"),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config() -> ContainerConfig {
    ContainerConfig {
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
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:>8.2} ms", d.as_secs_f64() * 1000.0)
}

/// (VmRSS, Pss) in KiB.
fn memory(pid: i32) -> (u64, u64) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&rollup, "Pss:"))
}

fn pids_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == name)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut criusd = std::env::var_os("CRIUSD").map(PathBuf::from);
    let (mut iterations, mut pods, mut runtime) = (100usize, 20usize, "runc".to_string());
    let mut network = "loopback".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--criusd" => criusd = Some(value().into()),
            "--iterations" => iterations = value().parse().unwrap_or_else(|_| usage()),
            "--pods" => pods = value().parse().unwrap_or_else(|_| usage()),
            "--runtime" => runtime = value(),
            "--network" => network = value(),
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
    let net_dir = tempfile::tempdir()?;
    let mut config = mirror_config(&registry.url(), "30s");
    if network == "bridge" {
        let conf = net_dir.path().join("net.d");
        std::fs::create_dir_all(&conf)?;
        // The shipped default network, on a bridge and subnet of the benchmark's own.
        let mut conflist: serde_json::Value =
            serde_json::from_str(include_str!("../../../../deploy/cni/10-crius.conflist"))?;
        for plugin in conflist["plugins"].as_array_mut().into_iter().flatten() {
            if plugin["type"] == "crius-bridge" {
                plugin["bridge"] = "crbench0".into();
                plugin["ipam"]["ranges"] = serde_json::json!([[{"subnet": "10.211.0.0/16"}]]);
                plugin["ipam"]["dataDir"] =
                    net_dir.path().join("ipam").display().to_string().into();
            }
        }
        std::fs::write(conf.join("10-bench.conflist"), conflist.to_string())?;
        let plugins = criusd
            .canonicalize()?
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        config.push_str(&format!(
            "\n[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{plugins}\"]\nwrite_default_config = false\n",
            conf.display()
        ));
    }
    let daemon =
        Daemon::start(DaemonOptions::new(&criusd).config(config).log_level("warn")).await?;
    let mut rt = daemon.runtime().await?;
    daemon
        .images()
        .await?
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;

    println!(
        "criusd lifecycle benchmark: {iterations} iterations, runtime {runtime}, network {network}"
    );
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    macro_rules! timed {
        ($name:literal, $call:expr) => {{
            let t = Instant::now();
            let r = $call.await?.into_inner();
            times.entry($name).or_default().push(t.elapsed());
            r
        }};
    }
    for i in 0..iterations {
        let pod = timed!(
            "1 RunPodSandbox",
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(i)),
                runtime_handler: runtime.clone()
            })
        )
        .pod_sandbox_id;
        let ctr = timed!(
            "2 CreateContainer",
            rt.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config()),
                sandbox_config: Some(pod_config(i)),
            })
        )
        .container_id;
        timed!(
            "3 StartContainer",
            rt.start_container(StartContainerRequest {
                container_id: ctr.clone()
            })
        );
        timed!(
            "4 StopContainer",
            rt.stop_container(StopContainerRequest {
                container_id: ctr.clone(),
                timeout: 0
            })
        );
        timed!(
            "5 RemoveContainer",
            rt.remove_container(RemoveContainerRequest { container_id: ctr })
        );
        timed!(
            "6 StopPodSandbox",
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone()
            })
        );
        timed!(
            "7 RemovePodSandbox",
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod
            })
        );
    }
    println!("{:<20} {:>11} {:>11} {:>11}", "RPC", "p50", "p90", "p99");
    for (name, mut v) in times {
        v.sort();
        println!(
            "{:<20} {} {} {}",
            &name[2..],
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.9)),
            ms(percentile(&v, 0.99))
        );
    }

    // `pods` pods started in parallel (RunPodSandbox only), then memory with each running a
    // container.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..pods {
        let mut rt = daemon.runtime().await?;
        let handler = runtime.clone();
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(20_000 + i)),
                runtime_handler: handler,
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let mut parallel = Vec::new();
    for t in tasks {
        parallel.push(t.await??);
    }
    println!(
        "\n{pods} pods started in parallel: {:.1} ms wall time",
        started.elapsed().as_secs_f64() * 1000.0
    );
    for pod in parallel {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
    }

    let mut running = Vec::new();
    for i in 0..pods {
        let cfg = pod_config(10_000 + i);
        let pod = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: runtime.clone(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let ctr = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config()),
                sandbox_config: Some(cfg),
            })
            .await?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest { container_id: ctr })
            .await?;
        running.push(pod);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, pss) = memory(daemon.pid().unwrap_or(0) as i32);
    println!("\nmemory with {pods} running pods (one container each):");
    println!("criusd          VmRSS {rss:>7} KiB   Pss {pss:>7} KiB");
    let monitors = pids_named("crius-monitor");
    if !monitors.is_empty() {
        let mem: Vec<(u64, u64)> = monitors.iter().map(|p| memory(*p)).collect();
        let n = mem.len() as u64;
        let (rss_sum, pss_sum) = mem.iter().fold((0, 0), |a, m| (a.0 + m.0, a.1 + m.1));
        println!(
            "crius-monitor   VmRSS {:>7} KiB   Pss {:>7} KiB   (average of {n}; Pss counts shared pages once overall)",
            rss_sum / n,
            pss_sum / n
        );
    }
    for pod in running {
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await?;
    }
    if network == "bridge" {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "crbench0"])
            .status();
    }
    Ok(())
}
