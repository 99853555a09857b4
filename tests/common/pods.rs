//! A pod with busybox pulled, on a real criusd, and helpers to run containers in it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use crius_testkit::image;
use crius_testkit::push_image;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ListContainersRequest, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

use super::Env;

/// crun 1.8.1 refuses a hybrid cgroup layout unless hugetlb is mounted as a v1 hierarchy.
pub fn prepare_runtime(handler: &str) {
    let hugetlb = Path::new("/sys/fs/cgroup/hugetlb");
    if handler == "crun" && !hugetlb.exists() && Path::new("/sys/fs/cgroup/memory").exists() {
        let _ = std::fs::create_dir_all(hugetlb);
        let _ = std::process::Command::new("mount")
            .args(["-t", "cgroup", "-o", "hugetlb", "cgroup"])
            .arg(hugetlb)
            .status();
    }
}

pub struct Pod {
    pub env: Env,
    pub pod_id: String,
    pub log_dir: tempfile::TempDir,
}

pub async fn pod_with_busybox(handler: &str) -> Result<Pod> {
    pod_with(handler, |_| {}).await
}

/// Like [`pod_with_busybox`], with the pod config adjusted by `adjust` first.
pub async fn pod_with(handler: &str, adjust: impl FnOnce(&mut PodSandboxConfig)) -> Result<Pod> {
    pod_with_config(handler, "", adjust).await
}

/// Like [`pod_with`], on a daemon whose config has `extra` appended.
pub async fn pod_with_config(
    handler: &str,
    extra: &str,
    adjust: impl FnOnce(&mut PodSandboxConfig),
) -> Result<Pod> {
    prepare_runtime(handler);
    let env = Env::start_with(extra).await?;
    pod_on(env, handler, adjust).await
}

/// A pod on a daemon the caller started (e.g. with top-level config keys of its own).
pub async fn pod_on(
    env: Env,
    handler: &str,
    adjust: impl FnOnce(&mut PodSandboxConfig),
) -> Result<Pod> {
    prepare_runtime(handler);
    push_image(
        &env.registry,
        "library/busybox",
        "latest",
        &image::busybox_image(),
    )
    .await?;
    env.pull("busybox").await?;
    let log_dir = tempfile::tempdir()?;
    let mut config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "pod".into(),
            namespace: "default".into(),
            uid: "pod-uid".into(),
            attempt: 0,
        }),
        log_directory: log_dir.path().display().to_string(),
        ..Default::default()
    };
    adjust(&mut config);
    let pod_id = env
        .daemon
        .runtime()
        .await?
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    Ok(Pod {
        env,
        pod_id,
        log_dir,
    })
}

pub fn container(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// `c` with pid mode CONTAINER: its command is PID 1 of its own namespace (as the kubelet asks
/// for pods without shareProcessNamespace).
pub fn own_pid_ns(mut c: ContainerConfig) -> ContainerConfig {
    let linux = c.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.namespace_options = Some(k8s_cri::v1::NamespaceOption {
        pid: k8s_cri::v1::NamespaceMode::Container as i32,
        ..Default::default()
    });
    c
}

impl Pod {
    /// Creates and starts a container from a whole config.
    pub async fn run_config(&self, config: ContainerConfig) -> Result<String> {
        let id = self.create(config).await?;
        self.env
            .daemon
            .runtime()
            .await?
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
        Ok(id)
    }

    pub async fn create(&self, config: ContainerConfig) -> Result<String, tonic::Status> {
        let mut rt = self
            .env
            .daemon
            .runtime()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: self.pod_id.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
    }

    pub async fn run(&self, name: &str, cmd: &[&str]) -> Result<String> {
        self.run_config(container(name, cmd)).await
    }

    /// The host pid of a container's init, from the verbose status.
    pub async fn pid_of(&self, id: &str) -> Result<u64> {
        let r = self
            .env
            .daemon
            .runtime()
            .await?
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await?;
        let info: serde_json::Value = serde_json::from_str(&r.into_inner().info["info"])?;
        info["pid"]
            .as_u64()
            .filter(|pid| *pid > 0)
            .ok_or_else(|| anyhow::anyhow!("no pid in the verbose status of {id}: {info}"))
    }

    pub async fn status(&self, id: &str) -> Result<k8s_cri::v1::ContainerStatus> {
        let r = self
            .env
            .daemon
            .runtime()
            .await?
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?;
        Ok(r.into_inner().status.unwrap())
    }

    pub async fn wait_exited(&self, id: &str) -> Result<k8s_cri::v1::ContainerStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(id).await?;
            if st.state == ContainerState::ContainerExited as i32 || Instant::now() > deadline {
                return Ok(st);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<k8s_cri::v1::ExecSyncResponse, tonic::Status> {
        let mut rt = self
            .env
            .daemon
            .runtime()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn teardown(self) -> Result<()> {
        let mut rt = self.env.daemon.runtime().await?;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await?;
        let left = rt
            .list_containers(ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        assert!(left.is_empty(), "pod removal removes its containers");
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| {
                m.starts_with(&self.env.daemon.base_dir().display().to_string())
                    && !m.ends_with("/state/netns")
            })
            .collect();
        assert!(mounts.is_empty(), "no mounts left: {mounts:?}");
        for hierarchy in ["memory", "pids", "cpu", "unified"] {
            let cg = Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join("crius")
                .join(&self.pod_id);
            assert!(!cg.exists(), "pod cgroup left: {}", cg.display());
        }
        Ok(())
    }
}
