//! GetContainerEvents through the real criusd: every pod and container transition, in order,
//! to every subscriber, with the pod's status; a container that exits by itself is reported
//! without anyone asking for its status; nothing lost under churn.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use common::Env;
use common::pods::container;
use crius_testkit::{image, push_image};
use futures_util::StreamExt;
use k8s_cri::v1::{
    ContainerEventResponse, ContainerEventType as T, CreateContainerRequest, GetEventsRequest,
    PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::Streaming;

fn pod_config(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "events".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

async fn subscribe(env: &Env) -> Result<Streaming<ContainerEventResponse>> {
    Ok(env
        .daemon
        .runtime()
        .await?
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner())
}

async fn next(s: &mut Streaming<ContainerEventResponse>) -> Result<ContainerEventResponse> {
    match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
        Ok(Some(Ok(e))) => Ok(e),
        Ok(Some(Err(e))) => bail!("event stream failed: {e:?}"),
        Ok(None) => bail!("event stream ended"),
        Err(_) => bail!("no event within 10 s"),
    }
}

fn kind(e: &ContainerEventResponse) -> T {
    T::try_from(e.container_event_type).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_reach_every_subscriber_in_order() -> Result<()> {
    let env = Env::start().await?;
    push_image(
        &env.registry,
        "library/busybox",
        "latest",
        &image::busybox_image(),
    )
    .await?;
    env.pull("busybox").await?;
    let mut a = subscribe(&env).await?;
    let mut b = subscribe(&env).await?;
    let logs = tempfile::tempdir()?;
    let mut rt = env.daemon.runtime().await?;

    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("ev", logs.path())),
            runtime_handler: "runc".into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let ctr = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("short", &["sh", "-c", "sleep 1; exit 7"])),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await?;

    // Nothing asks for the container's status: its exit is reported by the exit watch.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut a).await?);
    }
    let got: Vec<(String, T)> = seen
        .iter()
        .map(|e| (e.container_id.clone(), kind(e)))
        .collect();
    assert_eq!(
        got,
        vec![
            (pod.clone(), T::ContainerCreatedEvent),
            (pod.clone(), T::ContainerStartedEvent),
            (ctr.clone(), T::ContainerCreatedEvent),
            (ctr.clone(), T::ContainerStartedEvent),
            (ctr.clone(), T::ContainerStoppedEvent),
        ]
    );
    let stopped = &seen[4];
    let status = stopped.pod_sandbox_status.as_ref().context("pod status")?;
    assert_eq!(status.id, pod);
    let cs = stopped
        .containers_statuses
        .iter()
        .find(|c| c.id == ctr)
        .context("the container's status")?;
    assert_eq!(cs.exit_code, 7);
    assert!(seen.windows(2).all(|w| w[0].created_at <= w[1].created_at));

    rt.remove_container(RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await?;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    for expected in [
        (ctr.clone(), T::ContainerDeletedEvent),
        (pod.clone(), T::ContainerStoppedEvent),
        (pod.clone(), T::ContainerDeletedEvent),
    ] {
        let e = next(&mut a).await?;
        assert_eq!((e.container_id.clone(), kind(&e)), expected);
        if expected == (pod.clone(), T::ContainerDeletedEvent) {
            assert!(
                e.pod_sandbox_status.is_none(),
                "a removed pod has no status"
            );
        }
    }

    // The second subscriber saw the same sequence.
    let mut other = Vec::new();
    for _ in 0..8 {
        let e = next(&mut b).await?;
        other.push((e.container_id.clone(), kind(&e)));
    }
    assert_eq!(&other[..5], &got[..]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_lost_under_pod_churn() -> Result<()> {
    let env = Env::start().await?;
    let mut events = subscribe(&env).await?;
    let logs = tempfile::tempdir()?;
    let pods = 100;
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let mut rt = env.daemon.runtime().await?;
        let dir = logs.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..pods / 10 {
                let id = rt
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(pod_config(&format!("churn-{worker}-{i}"), &dir)),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                rt.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                ids.push(id);
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let mut per_pod: HashMap<String, Vec<T>> = HashMap::new();
    for _ in 0..pods * 4 {
        let e = next(&mut events).await?;
        per_pod
            .entry(e.container_id.clone())
            .or_default()
            .push(kind(&e));
    }
    assert_eq!(per_pod.len(), pods);
    for id in &all {
        assert_eq!(
            per_pod.get(id).map(Vec::as_slice),
            Some(
                &[
                    T::ContainerCreatedEvent,
                    T::ContainerStartedEvent,
                    T::ContainerStoppedEvent,
                    T::ContainerDeletedEvent
                ][..]
            ),
            "events of pod {id}"
        );
    }
    Ok(())
}
