//! Pod and container cgroups on a real criusd, under the driver the host calls for.
//!
//! On this host (cgroup v1 hybrid, no systemd as PID 1) the cgroupfs tests run. The systemd
//! tests need systemd as PID 1 and `CRIUS_TEST_SYSTEMD=1` (the VM stage, hack/test-vm.sh);
//! they skip with a printed reason elsewhere. Tests that need cgroup v2 check for it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::Env;
use common::pods::*;
use crius_cgroups::Hierarchy;
use crius_testkit::{Daemon, DaemonOptions, FaultMode, Proxy, Registry};
use k8s_cri::v1::{
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    RunPodSandboxRequest, StartContainerRequest, UpdateContainerResourcesRequest,
};

const CRIUSD: &str = env!("CARGO_BIN_EXE_criusd");

fn systemd_wanted() -> bool {
    std::env::var("CRIUS_TEST_SYSTEMD").as_deref() == Ok("1")
}

fn v2_only() -> bool {
    Hierarchy::host().is_v2_only()
}

fn unique() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
    )
}

/// The directories of cgroup `rel` in every mounted hierarchy.
fn dirs(rel: &str) -> Vec<PathBuf> {
    Hierarchy::host()
        .mounts()
        .into_iter()
        .map(|(m, _)| m.join(rel.trim_start_matches('/')))
        .collect()
}

/// The directory holding `controller`'s files for `rel`.
fn dir(controller: &str, rel: &str) -> PathBuf {
    Hierarchy::host()
        .dir(controller, rel)
        .map(|(d, _)| d)
        .expect("controller mounted")
}

fn comms_in(procs: &Path) -> Vec<String> {
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// A kubelet-style pod cgroup parent made (and later removed) by the test, as the kubelet
/// makes its own before RunPodSandbox.
struct KubeletParent {
    rel: String,
}

impl KubeletParent {
    fn new() -> Result<KubeletParent> {
        let rel = format!("/crius-test-{}/pod", unique());
        for d in dirs(&rel) {
            std::fs::create_dir_all(&d)?;
        }
        Ok(KubeletParent { rel })
    }
}

impl Drop for KubeletParent {
    fn drop(&mut self) {
        for d in dirs(&self.rel) {
            let _ = std::fs::remove_dir(&d);
            if let Some(top) = d.parent() {
                let _ = std::fs::remove_dir(top);
            }
        }
    }
}

fn shared_pid(config: &mut PodSandboxConfig) {
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
}

async fn start(pod: &Pod, id: &str) -> Result<()> {
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await?;
    Ok(())
}

/// The pod's init and monitor run in the leaf `crius-pod` under the kubelet's parent, the
/// sandbox's resources are set on the parent and its overhead on the leaf, containers are
/// beside the leaf, and removing the pod removes all of crius's cgroups.
#[tokio::test]
async fn pod_processes_and_limits_live_in_the_pod_cgroup_and_go_with_it() -> Result<()> {
    if systemd_wanted() {
        eprintln!("skipped: CRIUS_TEST_SYSTEMD=1 runs the systemd variant");
        return Ok(());
    }
    let parent = KubeletParent::new()?;
    let rel = parent.rel.clone();
    let pod = pod_with("runc", |c| {
        shared_pid(c);
        let linux = c.linux.get_or_insert_with(LinuxPodSandboxConfig::default);
        linux.cgroup_parent = rel.clone();
        linux.resources = Some(LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        });
        linux.overhead = Some(LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        });
    })
    .await?;
    let id = pod.create(container("c", &["sleep", "1000"])).await?;
    start(&pod, &id).await?;

    let leaf = format!("{rel}/crius-pod");
    let procs = dir("memory", &leaf).join("cgroup.procs");
    let comms = comms_in(&procs);
    ensure!(
        comms.iter().any(|c| c == "crius-monitor"),
        "the monitor is in {}: {comms:?}",
        procs.display()
    );
    ensure!(
        comms.iter().any(|c| c == "crius-init"),
        "the pod's init is in {}: {comms:?}",
        procs.display()
    );
    let (cpu, cpu_v2) = Hierarchy::host().dir("cpu", &rel).unwrap();
    if cpu_v2 {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.weight"))?.trim(),
            "20"
        );
    } else {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.shares"))?.trim(),
            "512"
        );
    }
    let (mem, mem_v2) = Hierarchy::host().dir("memory", &leaf).unwrap();
    let limit = if mem_v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        std::fs::read_to_string(mem.join(limit))?.trim(),
        (256u64 << 20).to_string()
    );
    ensure!(dir("memory", &format!("{rel}/crius-{id}")).is_dir());

    pod.teardown().await?;
    for d in dirs(&rel) {
        let left: Vec<_> = std::fs::read_dir(&d)?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect();
        ensure!(left.is_empty(), "cgroups left in {}: {left:?}", d.display());
    }
    Ok(())
}

/// Without a cgroup_parent the pod gets /crius/<pod>, removed with it.
#[tokio::test]
async fn a_pod_without_a_parent_gets_its_own_cgroup_removed_with_it() -> Result<()> {
    if systemd_wanted() {
        eprintln!("skipped: CRIUS_TEST_SYSTEMD=1 runs the systemd variant");
        return Ok(());
    }
    let pod = pod_with_busybox("runc").await?;
    let id = pod.create(container("c", &["sleep", "1000"])).await?;
    start(&pod, &id).await?;
    let own = format!("/crius/{}", pod.pod_id);
    let comms = comms_in(&dir("memory", &format!("{own}/crius-pod")).join("cgroup.procs"));
    ensure!(comms.iter().any(|c| c == "crius-monitor"), "{comms:?}");
    let pod_id = pod.pod_id.clone();
    pod.teardown().await?;
    for d in dirs(&format!("/crius/{pod_id}")) {
        ensure!(!d.exists(), "left: {}", d.display());
    }
    Ok(())
}

/// A cgroup_parent in the other driver's form is refused naming both drivers and the fix.
#[tokio::test]
async fn a_parent_in_the_other_drivers_form_is_invalid_argument() -> Result<()> {
    let (extra, parent) = if systemd_wanted() {
        ("cgroup_driver = \"systemd\"\n", "/kubepods/burstable/pod1")
    } else {
        (
            "cgroup_driver = \"cgroupfs\"\n",
            "kubepods-burstable-pod1.slice",
        )
    };
    let d = Daemon::start(DaemonOptions::new(CRIUSD).config(extra)).await?;
    let err = d
        .runtime()
        .await?
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                    name: "p".into(),
                    namespace: "n".into(),
                    uid: "u".into(),
                    attempt: 0,
                }),
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: parent.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    for want in [
        "cgroup_parent",
        "cgroupfs",
        "systemd",
        "cgroupDriver",
        "cgroup_driver",
    ] {
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    Ok(())
}

/// `unified` is a cgroup v2 setting: applied there, refused with a clear error elsewhere.
#[tokio::test]
async fn unified_is_applied_on_v2_and_refused_on_v1() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let mut c = container("u", &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            unified: [("memory.high".to_string(), "104857600".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let created = pod.create(c).await;
    if v2_only() {
        let id = created?;
        start(&pod, &id).await?;
        let pid = pod.pid_of(&id).await?;
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let high = Path::new("/sys/fs/cgroup")
            .join(rel.trim_start_matches('/'))
            .join("memory.high");
        assert_eq!(std::fs::read_to_string(high)?.trim(), "104857600");
    } else {
        let err = created.expect_err("unified on cgroup v1");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("unified"), "{}", err.message());
        assert!(err.message().contains("cgroup v2"), "{}", err.message());
    }
    pod.teardown().await
}

/// UpdateContainerResources also moves the running processes' oom_score_adj (runc's update
/// has no such setting).
#[tokio::test]
async fn oom_score_adj_is_updated_live() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let mut c = container("o", &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            oom_score_adj: 100,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = pod.create(c).await?;
    start(&pod, &id).await?;
    let pid = pod.pid_of(&id).await?;
    let adj = || -> Result<String> {
        Ok(
            std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?
                .trim()
                .to_string(),
        )
    };
    assert_eq!(adj()?, "100");
    pod.env
        .daemon
        .runtime()
        .await?
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                oom_score_adj: 700,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    assert_eq!(adj()?, "700");
    let st = pod.status(&id).await?;
    assert_eq!(st.resources.unwrap().linux.unwrap().oom_score_adj, 700);
    pod.teardown().await
}

/// A daemon with `cgroup_driver = "systemd"` and a registry mirror (the key must come before
/// the tables of the mirror config).
async fn systemd_env() -> Result<Env> {
    let registry = Registry::start_plain()?;
    let proxy = Proxy::start(&registry.addr(), FaultMode::PassThrough)?;
    let config = format!(
        "cgroup_driver = \"systemd\"\n{}fallback_to_upstream = false\n",
        crius_testkit::mirror_config(&proxy.url(), "3s")
    );
    let daemon = Daemon::start(DaemonOptions::new(CRIUSD).config(config)).await?;
    Ok(Env {
        registry,
        proxy,
        daemon,
    })
}

fn wait_gone(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !path.exists()
}

/// Under systemd (the VM stage): the kubelet's slice holds the container's scope (made by
/// runc with --systemd-cgroup) and crius's scope of the pod's own processes; limits are
/// updated live through systemd; everything goes with the pod.
#[tokio::test]
async fn systemd_driver_puts_pods_and_containers_in_slices_and_scopes() -> Result<()> {
    if !systemd_wanted() {
        eprintln!("skipped: needs systemd as PID 1 and CRIUS_TEST_SYSTEMD=1 (hack/test-vm.sh)");
        return Ok(());
    }
    let top = format!("criustest{}", unique());
    let slice = format!("{top}-pod1.slice");
    let slice_dir = format!("/{top}.slice/{slice}");
    let env = systemd_env().await?;
    let pod = pod_on(env, "runc", |c| {
        shared_pid(c);
        c.linux.get_or_insert_with(Default::default).cgroup_parent = slice.clone();
    })
    .await?;
    let mut c = container("c", &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = pod.create(c).await?;
    start(&pod, &id).await?;
    let scope = format!("{slice_dir}/crius-{id}.scope");
    let pid = pod.pid_of(&id).await?;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    ensure!(own.contains(&scope), "container in {scope}: {own}");
    let leaf = format!("{slice_dir}/crius-pod-{}.scope", pod.pod_id);
    let comms = comms_in(&dir("memory", &leaf).join("cgroup.procs"));
    ensure!(comms.iter().any(|c| c == "crius-monitor"), "{comms:?}");
    ensure!(comms.iter().any(|c| c == "crius-init"), "{comms:?}");

    pod.env
        .daemon
        .runtime()
        .await?
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let (mem, v2) = Hierarchy::host().dir("memory", &scope).unwrap();
    let file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        std::fs::read_to_string(mem.join(file))?.trim(),
        (64u64 << 20).to_string()
    );

    pod.teardown().await?;
    ensure!(wait_gone(&dir("memory", &scope)), "container scope left");
    ensure!(wait_gone(&dir("memory", &leaf)), "pod scope left");
    let _ = std::process::Command::new("systemctl")
        .args(["stop", &format!("{top}.slice")])
        .status();
    Ok(())
}

/// Under systemd, a pod without a cgroup_parent gets crius's own slice, stopped with it.
#[tokio::test]
async fn systemd_driver_own_slice_goes_with_the_pod() -> Result<()> {
    if !systemd_wanted() {
        eprintln!("skipped: needs systemd as PID 1 and CRIUS_TEST_SYSTEMD=1 (hack/test-vm.sh)");
        return Ok(());
    }
    let env = systemd_env().await?;
    let pod = pod_on(env, "runc", |_| {}).await?;
    let id = pod.create(container("c", &["sleep", "1000"])).await?;
    start(&pod, &id).await?;
    let own = format!("/crius.slice/crius-pod{}.slice", pod.pod_id);
    ensure!(dir("memory", &own).is_dir(), "{own} made");
    pod.teardown().await?;
    ensure!(wait_gone(&dir("memory", &own)), "{own} left");
    Ok(())
}
