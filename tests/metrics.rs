//! ListMetricDescriptors and ListPodSandboxMetrics through the real criusd: known loads (a
//! container burning a core, one that wrote 10 MB, datagrams sent out of the pod) show in the
//! cadvisor metrics, and every metric returned is described with matching labels.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::pods::*;
use k8s_cri::v1::{
    ListMetricDescriptorsRequest, ListPodSandboxMetricsRequest, Metric, MetricDescriptor,
    MetricType, PodSandboxMetrics, PodSandboxStatusRequest,
};

const MB: u64 = 1_000_000;

async fn descriptors(pod: &Pod) -> Result<HashMap<String, MetricDescriptor>> {
    let d = pod
        .env
        .daemon
        .runtime()
        .await?
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await?
        .into_inner()
        .descriptors;
    Ok(d.into_iter().map(|d| (d.name.clone(), d)).collect())
}

async fn pod_metrics(pod: &Pod) -> Result<Vec<PodSandboxMetrics>> {
    Ok(pod
        .env
        .daemon
        .runtime()
        .await?
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await?
        .into_inner()
        .pod_metrics)
}

/// The value of metric `name` whose labels include every `key=value` in `labels`.
fn value(
    metrics: &[Metric],
    d: &HashMap<String, MetricDescriptor>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<u64> {
    let keys = &d.get(name)?.label_keys;
    metrics
        .iter()
        .find(|m| {
            m.name == name
                && labels.iter().all(|(k, v)| {
                    keys.iter()
                        .position(|key| key == k)
                        .is_some_and(|i| m.label_values[i] == *v)
                })
        })
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value)
}

async fn netns_of(pod: &Pod) -> Result<PathBuf> {
    let r = pod
        .env
        .daemon
        .runtime()
        .await?
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.pod_id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"])?;
    Ok(PathBuf::from(info["netns"].as_str().context("netns")?))
}

fn in_netns(netns: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .output()?;
    ensure!(out.status.success(), "{args:?}: {out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_metrics_show_known_loads_and_are_all_described() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let burn = pod
        .run("burn", &["sh", "-c", "while :; do :; done"])
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

    // Traffic out of the pod: a veth pair inside its network namespace (gone with it), the
    // peer's address resolved statically, no IPv6 (its neighbour discovery would add packets).
    let netns = netns_of(&pod).await?;
    in_netns(
        &netns,
        &[
            "ip", "link", "add", "crm0", "type", "veth", "peer", "name", "crm1",
        ],
    )?;
    for dev in ["crm0", "crm1"] {
        in_netns(
            &netns,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ],
        )?;
        in_netns(&netns, &["ip", "link", "set", dev, "up"])?;
    }
    in_netns(
        &netns,
        &["ip", "addr", "add", "10.254.77.1/24", "dev", "crm0"],
    )?;
    in_netns(
        &netns,
        &[
            "ip",
            "neigh",
            "add",
            "10.254.77.2",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "crm0",
        ],
    )?;
    in_netns(
        &netns,
        &[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range(100): s.sendto(b'x' * 1000, ('10.254.77.2', 9))",
        ],
    )?;

    let d = descriptors(&pod).await?;
    // The CPU counter is in whole seconds: wait until the burner has used two.
    let deadline = Instant::now() + Duration::from_secs(40);
    let metrics = loop {
        let all = pod_metrics(&pod).await?;
        let written = pod
            .exec(&disk, &["test", "-e", "/written"], 5)
            .await?
            .exit_code
            == 0;
        let p = all
            .into_iter()
            .find(|p| p.pod_sandbox_id == pod.pod_id)
            .context("our pod is listed")?;
        let c = p
            .container_metrics
            .iter()
            .find(|c| c.container_id == burn)
            .context("burn listed")?;
        let cpu = value(
            &c.metrics,
            &d,
            "container_cpu_usage_seconds_total",
            &[("cpu", "total")],
        );
        // The writable layer's size is cached for a few seconds: one measured while the file
        // was being written is renewed later.
        let fs = p
            .container_metrics
            .iter()
            .find(|c| c.container_id == disk)
            .and_then(|c| {
                value(
                    &c.metrics,
                    &d,
                    "container_fs_usage_bytes",
                    &[("container", "disk")],
                )
            });
        if written && cpu.unwrap_or(0) >= 2 && fs.unwrap_or(0) >= 10 * MB {
            break p;
        }
        ensure!(
            Instant::now() < deadline,
            "burn used {cpu:?} s of CPU, the writable layer holds {fs:?} bytes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Every metric is described, with one label value per key, and its type is the family's.
    let all = metrics
        .metrics
        .iter()
        .chain(metrics.container_metrics.iter().flat_map(|c| &c.metrics));
    let mut names = std::collections::BTreeSet::new();
    for m in all {
        let desc = d
            .get(&m.name)
            .with_context(|| format!("{} described", m.name))?;
        assert_eq!(m.label_values.len(), desc.label_keys.len(), "{m:?}");
        // cadvisor's names: `_total` means a counter, except the filesystem's inode count.
        let counter = (m.name.ends_with("_total") && m.name != "container_fs_inodes_total")
            || m.name == "container_memory_failcnt";
        let expected = if counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        assert_eq!(m.metric_type, expected as i32, "{}", m.name);
        assert!(m.timestamp > 0, "{m:?}");
        names.insert(m.name.as_str());
    }
    for expected in [
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_processes",
        "container_threads",
        "container_fs_usage_bytes",
        "container_fs_inodes_total",
        "container_network_transmit_bytes_total",
        "container_start_time_seconds",
        "container_last_seen",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }

    // The burner: its CPU, mostly user time, one process.
    let c = |id: &str| {
        metrics
            .container_metrics
            .iter()
            .find(|c| c.container_id == id)
            .map(|c| c.metrics.clone())
            .unwrap_or_default()
    };
    let burn_m = c(&burn);
    let base = [("container", "burn"), ("id", burn.as_str()), ("pod", "pod")];
    assert!(value(&burn_m, &d, "container_cpu_user_seconds_total", &base).unwrap() >= 1);
    assert_eq!(value(&burn_m, &d, "container_processes", &base), Some(1));
    assert!(value(&burn_m, &d, "container_memory_working_set_bytes", &base).unwrap() > 0);
    assert_eq!(
        value(
            &burn_m,
            &d,
            "container_spec_memory_limit_bytes",
            &[("namespace", "default")]
        ),
        Some(0),
        "no limit"
    );

    // The writer: its 10 MB in the writable layer.
    let fs = value(
        &c(&disk),
        &d,
        "container_fs_usage_bytes",
        &[("container", "disk")],
    )
    .context("fs usage")?;
    assert!(
        (10 * MB..13 * MB).contains(&fs),
        "writable layer {fs} bytes"
    );

    // The pod: 100 datagrams of 1000 bytes (plus headers) left through crm0.
    let tx = value(
        &metrics.metrics,
        &d,
        "container_network_transmit_bytes_total",
        &[("interface", "crm0"), ("id", pod.pod_id.as_str())],
    )
    .context("crm0 transmit bytes")?;
    assert!((100_000..120_000).contains(&tx), "{tx} bytes sent");
    let packets = value(
        &metrics.metrics,
        &d,
        "container_network_transmit_packets_total",
        &[("interface", "crm0")],
    );
    assert!(
        packets.is_some_and(|p| (100..105).contains(&p)),
        "{packets:?} packets"
    );
    // The pod cgroup holds both containers' CPU.
    let pod_cpu = value(
        &metrics.metrics,
        &d,
        "container_cpu_usage_seconds_total",
        &[("container", "")],
    )
    .context("pod cpu")?;
    assert!(pod_cpu >= 2, "{pod_cpu}");

    // A stopped pod is no longer listed.
    pod.env
        .daemon
        .runtime()
        .await?
        .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.pod_id.clone(),
        })
        .await?;
    let after = pod_metrics(&pod).await?;
    assert!(after.iter().all(|p| p.pod_sandbox_id != pod.pod_id));
    pod.teardown().await
}

/// `/metrics` fetched with curl and parsed by python3's prometheus_client (an independent
/// OpenMetrics parser): `(name, labels, value)` of every sample.
/// One parsed sample: name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

fn scrape(addr: &str) -> Result<Vec<Sample>> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!("http://{addr}/metrics"))
        .output()?;
    ensure!(out.status.success(), "curl: {out:?}");
    let parser = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, &out.stdout)?;
    let parsed = child.wait_with_output()?;
    ensure!(
        parsed.status.success(),
        "the text does not parse: {}\n{}",
        String::from_utf8_lossy(&parsed.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(serde_json::from_slice(&parsed.stdout)?)
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The pod monitor's pid, from its command line.
fn monitor_pid(pod_id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("crius-monitor") && cmd.contains(pod_id)).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_counts_rpcs_pulls_cni_and_states() -> Result<()> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let pod = pod_with_config(
        "runc",
        &format!("[metrics]\naddress = \"{addr}\"\n"),
        |_| {},
    )
    .await?;
    let mut rt = pod.env.daemon.runtime().await?;
    let before = scrape(&addr)?;
    let version = |s: &[_]| {
        sample(
            s,
            "crius_grpc_requests_total",
            &[("method", "Version"), ("code", "Ok")],
        )
    };
    for _ in 0..3 {
        rt.version(k8s_cri::v1::VersionRequest::default()).await?;
    }
    let err = rt
        .container_status(k8s_cri::v1::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let sleeper = pod.run("sleeper", &["sleep", "1000"]).await?;

    // The monitor dies; the next container starts another.
    let pid = monitor_pid(&pod.pod_id).context("monitor running")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(Instant::now() < deadline, "monitor {pid} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pod.run("after", &["sleep", "1000"]).await?;

    let after = scrape(&addr)?;
    assert_eq!(version(&after) - version(&before), 3.0);
    assert!(
        sample(
            &after,
            "crius_grpc_requests_total",
            &[("method", "ContainerStatus"), ("code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        sample(
            &after,
            "crius_grpc_request_duration_seconds_count",
            &[("method", "Version")]
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &after,
            "crius_grpc_requests_total",
            &[("method", "RunPodSandbox"), ("code", "Ok")]
        ),
        1.0
    );
    // The busybox pull: its layer's bytes, one successful pull.
    assert!(sample(&after, "crius_image_pull_bytes_total", &[]) > 100_000.0);
    assert_eq!(
        sample(
            &after,
            "crius_image_pull_duration_seconds_count",
            &[("result", "ok")]
        ),
        1.0
    );
    // The pod's network (the test config's loopback plugin) was added once.
    assert_eq!(
        sample(
            &after,
            "crius_cni_duration_seconds_count",
            &[("op", "add"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(sample(&after, "crius_monitor_restarts_total", &[]), 1.0);
    assert_eq!(sample(&after, "crius_pods", &[("state", "ready")]), 1.0);
    // The sleeper was orphaned by the monitor's death and reported exited.
    let running = sample(&after, "crius_containers", &[("state", "running")]);
    let exited = sample(&after, "crius_containers", &[("state", "exited")]);
    assert_eq!(
        running + exited,
        2.0,
        "{sleeper}: {running} running, {exited} exited"
    );
    assert!(running >= 1.0);

    // Only /metrics is served.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/other"))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    drop(rt);
    pod.teardown().await
}

fn criusctl() -> PathBuf {
    std::path::Path::new(common::CRIUSD).with_file_name("criusctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn criusctl_stats_and_events_against_the_daemon() -> Result<()> {
    use std::io::BufRead as _;
    use std::process::Stdio;

    let pod = pod_with_busybox("runc").await?;
    let ctl = criusctl();
    ensure!(ctl.exists(), "{} not built", ctl.display());
    let socket = pod.env.daemon.socket();

    // Events: subscribed first, then a container is created and started.
    let mut events = Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(&socket)
        .args(["events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = events.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let burn = pod
        .run("burn", &["sh", "-c", "while :; do :; done"])
        .await?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(seen.contains(&"CONTAINER_CREATED_EVENT".to_string())
        && seen.contains(&"CONTAINER_STARTED_EVENT".to_string()))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("events so far: {seen:?}"))?;
        let v: serde_json::Value = serde_json::from_str(&line).context(line.clone())?;
        if v["containerId"] == burn.as_str() {
            let kind = match &v["containerEventType"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            seen.push(kind);
        }
    }
    let _ = events.kill();
    let _ = events.wait();

    // Stats as JSON: the burner is there, with CPU.
    let out = pod.env.daemon.criusctl(&ctl, &["stats", "-o", "json"]);
    ensure!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let stats = doc["stats"].as_array().context("stats array")?;
    assert_eq!(stats.len(), 1, "{doc}");
    assert_eq!(stats[0]["attributes"]["id"], burn.as_str());

    // The table: crictl's columns, the burner using a good part of a core.
    let out = pod.env.daemon.criusctl(&ctl, &["stats"]);
    ensure!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], &burn[..13]);
    assert_eq!(row[1], "burn");
    let cpu: f64 = row[2].parse()?;
    assert!(cpu > 20.0, "burn at {cpu}% CPU");

    // --watch redraws in place until interrupted.
    let watch = Command::new(&ctl)
        .arg("--runtime-endpoint")
        .arg(&socket)
        .args(["stats", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let out = watch.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let redraws = text.matches("\x1b[H\x1b[2J").count();
    assert!(redraws >= 2, "{redraws} redraws: {text:?}");
    assert_eq!(text.matches("CONTAINER").count(), redraws);
    pod.teardown().await
}
