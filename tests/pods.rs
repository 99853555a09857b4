//! Pod sandboxes through the real criusd: namespaces pinned without a pause image, pod files,
//! idempotence, filters, rollback, restarts, and nothing left behind.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use common::CRIUSD;
use crius_testkit::{Daemon, DaemonOptions};
use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::Code;

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: String::new(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

fn with_namespaces(
    mut c: PodSandboxConfig,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
) -> PodSandboxConfig {
    c.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: network as i32,
                pid: pid as i32,
                ipc: ipc as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn run(d: &Daemon, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    let mut rt = d
        .runtime()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn verbose(
    d: &Daemon,
    id: &str,
) -> Result<(k8s_cri::v1::PodSandboxStatus, serde_json::Value)> {
    let r = d
        .runtime()
        .await?
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    Ok((r.status.unwrap(), serde_json::from_str(&r.info["info"])?))
}

async fn stop(d: &Daemon, id: &str) -> Result<()> {
    d.runtime()
        .await?
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
    Ok(())
}

async fn remove(d: &Daemon, id: &str) -> Result<()> {
    d.runtime()
        .await?
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
    Ok(())
}

fn nsenter(flag: &str, file: &Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("{flag}={}", file.display()))
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nsenter {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mounts below `dir`, except the network namespace directory itself: like /run/netns for
/// `ip netns`, it is a shared bind mount of itself that stays for the daemon's lifetime.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir) && !m.ends_with("/state/netns"))
        .collect()
}

fn path(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v.as_str().expect("a path"))
}

#[tokio::test]
async fn pod_lifecycle_with_pinned_namespaces_and_pod_files() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let logs = d.base_dir().join("pod-logs/a");
    let mut config = pod_config("web");
    config.log_directory = logs.display().to_string();
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let id = run(&d, config.clone()).await?;
    assert_eq!(id.len(), 64);
    assert!(logs.is_dir(), "log directory created");

    let (st, info) = verbose(&d, &id).await?;
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata.unwrap().name, "web");
    assert_eq!(st.labels["app"], "web");
    assert!(st.created_at > 0);
    assert!(!st.runtime_handler.is_empty());

    let netns = path(&info["netns"]);
    assert!(
        netns.starts_with(d.state().join("netns")),
        "{}",
        netns.display()
    );
    let links = nsenter("--net", &netns, &["ip", "-o", "link", "show", "lo"]);
    assert!(links.contains("UP"), "lo is up in the pod: {links}");
    let uts = path(&info["namespaces"]["uts"]);
    assert_eq!(nsenter("--uts", &uts, &["hostname"]).trim(), "web-host");
    assert_ne!(
        nsenter("--uts", &uts, &["hostname"]),
        std::fs::read_to_string("/proc/sys/kernel/hostname")?
    );

    let resolv = std::fs::read_to_string(path(&info["resolvConf"]))?;
    assert!(
        resolv.contains("nameserver 10.96.0.10")
            && resolv.contains("search default.svc.cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    assert_eq!(
        std::fs::read_to_string(path(&info["hostname"]))?.trim(),
        "web-host"
    );
    assert!(std::fs::read_to_string(path(&info["hosts"]))?.contains("localhost"));
    let shm = path(&info["shm"]);
    assert!(
        mounts_under(&shm).contains(&shm.display().to_string()),
        "pod /dev/shm is a mount"
    );

    // A retry with the same metadata (the kubelet timed out) gets the same pod.
    assert_eq!(run(&d, config.clone()).await?, id);
    let all = d
        .runtime()
        .await?
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    assert_eq!(all.len(), 1);

    stop(&d, &id).await?;
    let (st, _) = verbose(&d, &id).await?;
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert!(!netns.exists(), "network namespace released on stop");
    assert!(
        mounts_under(&d.state()).is_empty(),
        "nothing mounted after stop: {:?}",
        mounts_under(&d.state())
    );
    stop(&d, &id).await?; // idempotent

    remove(&d, &id).await?;
    remove(&d, &id).await?; // idempotent
    remove(&d, "0123456789abcdef").await?; // unknown: fine
    let err = d
        .runtime()
        .await?
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    assert!(!d.state().join("pods").join(&id).exists());
    assert!(
        mounts_under(d.base_dir()).is_empty(),
        "{:?}",
        mounts_under(d.base_dir())
    );
    Ok(())
}

#[tokio::test]
async fn list_filters_by_id_prefix_state_and_labels() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let a = run(&d, pod_config("a")).await?;
    let b = run(&d, pod_config("b")).await?;
    stop(&d, &b).await?;
    let list = |filter: PodSandboxFilter| {
        let d = &d;
        async move {
            let items = d
                .runtime()
                .await?
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await?
                .into_inner()
                .items;
            anyhow::Ok(items.into_iter().map(|p| p.id).collect::<Vec<_>>())
        }
    };
    assert_eq!(
        list(PodSandboxFilter {
            id: a[..8].into(),
            ..Default::default()
        })
        .await?,
        vec![a.clone()]
    );
    let ready = PodSandboxStateValue {
        state: PodSandboxState::SandboxReady as i32,
    };
    assert_eq!(
        list(PodSandboxFilter {
            state: Some(ready),
            ..Default::default()
        })
        .await?,
        vec![a.clone()]
    );
    let labels = HashMap::from([("app".to_string(), "b".to_string())]);
    assert_eq!(
        list(PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        })
        .await?,
        vec![b.clone()]
    );
    let nothing = HashMap::from([("app".to_string(), "zzz".to_string())]);
    assert!(
        list(PodSandboxFilter {
            label_selector: nothing,
            ..Default::default()
        })
        .await?
        .is_empty()
    );
    for id in [a, b] {
        remove(&d, &id).await?;
    }
    assert!(
        mounts_under(d.base_dir()).is_empty(),
        "{:?}",
        mounts_under(d.base_dir())
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_rejected_naming_the_field_and_leave_nothing() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let mut c = pod_config("sys");
    c.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([("vm.swappiness".to_string(), "10".to_string())]),
        ..Default::default()
    });
    let err = run(&d, c).await.expect_err("host sysctl");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("vm.swappiness"), "{}", err.message());

    let mut rt = d.runtime().await?;
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("h")),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"), "{}", err.message());

    let mut c = pod_config("nometa");
    c.metadata.as_mut().unwrap().uid.clear();
    let err = run(&d, c).await.expect_err("no uid");
    assert!(
        err.message().contains("config.metadata.uid"),
        "{}",
        err.message()
    );

    let err = run(&d, {
        let mut c = pod_config("x");
        c.hostname = "bad host".into();
        c
    })
    .await
    .expect_err("hostname");
    assert!(err.message().contains("hostname"), "{}", err.message());

    let list = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    assert!(list.is_empty());
    assert!(
        common::dir_names(&d.state().join("pods")).is_empty(),
        "no half-built pod dirs"
    );
    assert!(
        mounts_under(d.base_dir()).is_empty(),
        "{:?}",
        mounts_under(d.base_dir())
    );

    // Namespaced sysctls are applied inside the pod, not on the host.
    let mut c = pod_config("goodsys");
    c.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]),
        ..Default::default()
    });
    let id = run(&d, c).await?;
    let (_, info) = verbose(&d, &id).await?;
    let inside = nsenter(
        "--net",
        &path(&info["netns"]),
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(inside.trim(), "0");
    remove(&d, &id).await?;
    Ok(())
}

#[tokio::test]
async fn host_namespaces_and_a_shared_pid_namespace() -> Result<()> {
    let d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let host = with_namespaces(
        pod_config("hostnet"),
        NamespaceMode::Node,
        NamespaceMode::Container,
        NamespaceMode::Node,
    );
    let id = run(&d, host).await?;
    let (_, info) = verbose(&d, &id).await?;
    assert!(info["netns"].is_null(), "host network: no netns");
    assert!(info["namespaces"]["ipc"].is_null() && info["namespaces"]["uts"].is_null());
    assert_eq!(info["shm"], "/dev/shm");
    remove(&d, &id).await?;

    let shared = with_namespaces(
        pod_config("sharedpid"),
        NamespaceMode::Pod,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    let id = run(&d, shared).await?;
    let (_, info) = verbose(&d, &id).await?;
    let pid = info["pid"].as_i64().expect("pod init pid") as i32;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    assert_eq!(comm.trim(), "crius-init");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "crius-init is PID 1 of the pod: {nspid}"
    );
    stop(&d, &id).await?;
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
    assert!(gone, "pod init stopped with the pod");
    remove(&d, &id).await?;
    assert!(
        mounts_under(d.base_dir()).is_empty(),
        "{:?}",
        mounts_under(d.base_dir())
    );
    Ok(())
}

#[tokio::test]
async fn twenty_pods_in_parallel_then_restart_keeps_them() -> Result<()> {
    let mut d = Daemon::start(DaemonOptions::new(CRIUSD)).await?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut rt = d.runtime().await?;
        tasks.push(tokio::spawn(async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(&format!("p{i}"))),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await??);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    let netns = common::dir_names(&d.state().join("netns"));
    assert_eq!(netns.len(), 20, "one network namespace each");

    // kill -9 and restart: every pod is still there and still Ready.
    stop(&d, &ids[0]).await?;
    d.kill9();
    d.restart().await?;
    let items = d
        .runtime()
        .await?
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    assert_eq!(items.len(), 20);
    let ready = items
        .iter()
        .filter(|p| p.state == PodSandboxState::SandboxReady as i32)
        .count();
    assert_eq!(ready, 19);

    for id in &ids {
        remove(&d, id).await?;
    }
    assert!(common::dir_names(&d.state().join("netns")).is_empty());
    assert!(
        mounts_under(d.base_dir()).is_empty(),
        "{:?}",
        mounts_under(d.base_dir())
    );
    Ok(())
}
