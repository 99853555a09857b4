//! Container and pod stats through the real criusd, checked against known loads: a container
//! burning a core, one holding 100 MiB, one that wrote 10 MB to its rootfs.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::pods::*;
use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, ListContainerStatsRequest,
    ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest, PodSandboxStatsFilter,
    PodSandboxStatsRequest,
};
use tonic::Code;

const MIB: u64 = 1 << 20;

async fn container_stats(pod: &Pod, id: &str) -> Result<ContainerStats> {
    let r = pod
        .env
        .daemon
        .runtime()
        .await?
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await?;
    r.into_inner().stats.context("no stats")
}

/// CPU ticks (user + system) of a process, from /proc/<pid>/stat, in nanoseconds.
fn cpu_ns_of(pid: u64) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf takes a plain integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn stats_of_known_loads(handler: &str) -> Result<()> {
    let pod = pod_with_busybox(handler).await?;
    let burn = pod
        .run("burn", &["sh", "-c", "while :; do :; done"])
        .await?;
    let mem = pod
        .run(
            "mem",
            &[
                "awk",
                r#"BEGIN { s = sprintf("%104857600s", "x"); system("touch /tmp/ready; sleep 1000") }"#,
            ],
        )
        .await?;
    let disk = pod
        .run(
            "disk",
            &[
                "sh",
                "-c",
                "head -c 10485760 /dev/urandom > /big && touch /written && exec sleep 1000",
            ],
        )
        .await?;

    // CPU: crius's rate between two samples against the process's own CPU time over a window
    // that encloses them.
    let pid = pod.pid_of(&burn).await?;
    let truth0 = (Instant::now(), cpu_ns_of(pid)?);
    let first = container_stats(&pod, &burn).await?;
    let cpu = first.cpu.as_ref().context("cpu")?;
    assert!(cpu.usage_core_nano_seconds.as_ref().unwrap().value > 0);
    assert!(cpu.timestamp > 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = container_stats(&pod, &burn).await?;
    let truth1 = (Instant::now(), cpu_ns_of(pid)?);
    let cores = second
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores.as_ref())
        .context("usage_nano_cores on the second sample")?
        .value as f64
        / 1e9;
    let truth = (truth1.1 - truth0.1) as f64 / (truth1.0 - truth0.0).as_nanos() as f64;
    assert!(
        (cores - truth).abs() <= 0.1,
        "crius reports {cores:.3} cores, the process used {truth:.3}"
    );
    // On an idle machine that is one core.
    if truth >= 0.9 {
        assert!((0.9..=1.1).contains(&cores), "{cores}");
    }

    // Memory: a working set within 10% of the 100 MiB held.
    wait_for("the 100 MiB string", async || {
        Ok(pod
            .exec(&mem, &["test", "-e", "/tmp/ready"], 5)
            .await?
            .exit_code
            == 0)
    })
    .await?;
    let m = container_stats(&pod, &mem).await?;
    let memory = m.memory.context("memory")?;
    let ws = memory.working_set_bytes.context("working set")?.value;
    assert!(
        (90 * MIB..=110 * MIB).contains(&ws),
        "working set {} MiB",
        ws / MIB
    );
    let usage = memory.usage_bytes.context("usage")?.value;
    assert!(usage >= ws, "usage {usage} < working set {ws}");
    assert!(memory.rss_bytes.context("rss")?.value >= 90 * MIB);
    assert!(memory.page_faults.context("page faults")?.value > 0);

    // Writable layer: the 10 MB file.
    wait_for("the 10 MB write", async || {
        Ok(pod
            .exec(&disk, &["test", "-e", "/written"], 5)
            .await?
            .exit_code
            == 0)
    })
    .await?;
    let d = container_stats(&pod, &disk).await?;
    let layer = d.writable_layer.context("writable layer")?;
    let used = layer.used_bytes.context("used bytes")?.value;
    assert!(
        (10 * MIB..12 * MIB).contains(&used),
        "writable layer {used} bytes"
    );
    assert!(layer.inodes_used.context("inodes")?.value >= 2);

    // Listing with filters.
    let mut rt = pod.env.daemon.runtime().await?;
    let all = rt
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await?
        .into_inner()
        .stats;
    assert_eq!(all.len(), 3);
    let only_mem = rt
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                label_selector: [("name".to_string(), "mem".to_string())].into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .stats;
    assert_eq!(only_mem.len(), 1);
    assert_eq!(only_mem[0].attributes.as_ref().unwrap().id, mem);

    // The pod: its cgroup holds the three containers.
    let ps = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.pod_id.clone(),
        })
        .await?
        .into_inner()
        .stats
        .context("pod stats")?;
    assert_eq!(ps.attributes.as_ref().unwrap().id, pod.pod_id);
    let linux = ps.linux.context("linux pod stats")?;
    assert_eq!(linux.containers.len(), 3);
    let pod_ws = linux
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .context("pod working set")?
        .value;
    assert!(
        pod_ws >= ws,
        "pod working set {pod_ws} < one container's {ws}"
    );
    let procs = linux
        .process
        .as_ref()
        .and_then(|p| p.process_count.as_ref())
        .context("process count")?
        .value;
    assert!(procs >= 3, "{procs} processes");
    let listed = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod.pod_id[..12].to_string(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);

    // PodSandboxStatus carries its containers' statuses and a timestamp (evented PLEG).
    let before = chrono_now();
    let st = rt
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(st.timestamp >= before, "timestamp {}", st.timestamp);
    let mut ids: Vec<&str> = st
        .containers_statuses
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    ids.sort();
    let mut expected = vec![burn.as_str(), mem.as_str(), disk.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        st.containers_statuses
            .iter()
            .all(|c| { c.state == k8s_cri::v1::ContainerState::ContainerRunning as i32 })
    );

    // Unknown ids are NotFound, an empty one InvalidArgument.
    let err = rt
        .container_stats(ContainerStatsRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    drop(rt);
    pod.teardown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_known_loads_runc() -> Result<()> {
    stats_of_known_loads("runc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_known_loads_crun() -> Result<()> {
    stats_of_known_loads("crun").await
}

/// ListPodSandboxMetrics reads the same samples as the stats RPCs: called just before them it
/// must not leave them a window of a few milliseconds, over which CPU accounting (updated at
/// scheduler ticks) reads 0 or several cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nano_cores_hold_when_metrics_and_stats_calls_alternate() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let burn = pod
        .run("burn", &["sh", "-c", "while :; do :; done"])
        .await?;
    let pid = pod.pid_of(&burn).await?;
    let mut rt = pod.env.daemon.runtime().await?;
    let truth0 = (Instant::now(), cpu_ns_of(pid)?);
    let mut seen = Vec::new();
    for _ in 0..10 {
        rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await?;
        let containers = rt
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
        rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await?;
        let pods = rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
        let c = containers
            .iter()
            .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == burn))
            .context("burn listed")?;
        let p = pods
            .iter()
            .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == pod.pod_id))
            .and_then(|p| p.linux.as_ref())
            .context("pod listed")?;
        let cores = |cpu: Option<&k8s_cri::v1::CpuUsage>| {
            cpu.and_then(|c| c.usage_nano_cores.as_ref())
                .map(|n| n.value as f64 / 1e9)
        };
        // A first sample has no rate yet.
        if let (Some(c), Some(p)) = (cores(c.cpu.as_ref()), cores(p.cpu.as_ref())) {
            seen.push((c, p));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let truth1 = (Instant::now(), cpu_ns_of(pid)?);
    let truth = (truth1.1 - truth0.1) as f64 / (truth1.0 - truth0.0).as_nanos() as f64;
    ensure!(seen.len() >= 6, "only {} rates: {seen:?}", seen.len());
    // One core on an idle machine; on a busy one, near what the process got over the run.
    let (low, high) = if truth >= 0.9 {
        (0.9, 1.1)
    } else {
        (truth - 0.25, truth + 0.25)
    };
    for (c, p) in &seen {
        assert!(
            (low..=high).contains(c) && (low..=high).contains(p),
            "container and pod cores {seen:?}, the process used {truth:.3}"
        );
    }
    drop(rt);
    pod.teardown().await
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}
