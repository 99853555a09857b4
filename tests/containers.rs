//! Containers through the real criusd with runc and crun: lifecycle, logs in the CRI format,
//! ExecSync, exit codes, stop/kill, pod teardown, and recovery after kill -9 of criusd.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::pods::*;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, ImageSpec, ListContainersRequest,
    RemoveContainerRequest, ReopenContainerLogRequest, StopContainerRequest,
};
use tonic::Code;

async fn lifecycle(handler: &str) -> Result<()> {
    let pod = pod_with_busybox(handler).await?;
    // Its own PID namespace: `sleep` is PID 1 there and ignores SIGTERM (the stop below).
    let id = pod
        .run_config(own_pid_ns(container(
            "web",
            &["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"],
        )))
        .await?;
    let st = pod.status(&id).await?;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "{handler}"
    );
    assert!(st.started_at >= st.created_at && st.created_at > 0);
    // As containerd: the image's repo tag; the name as requested stays user_specified_image.
    let image = st.image.as_ref().unwrap();
    assert_eq!(image.image, "docker.io/library/busybox:latest");
    assert_eq!(image.user_specified_image, "busybox");
    assert!(st.image_ref.contains("sha256:"));
    let log = pod.log_dir.path().join("web.log");
    assert_eq!(st.log_path, log.display().to_string());

    // CRI log format: "<RFC3339Nano> <stream> <P|F> <text>".
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("oops") {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F oops")),
        "{text}"
    );
    for l in &lines {
        let ts = l.split(' ').next().unwrap();
        assert!(
            ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "timestamp {ts:?} in {l:?}"
        );
    }

    // ExecSync: output, exit code, timeout.
    let out = pod
        .exec(&id, &["sh", "-c", "echo hi; echo err >&2; exit 3"], 10)
        .await?;
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);
    let started = Instant::now();
    let err = pod
        .exec(&id, &["sleep", "30"], 1)
        .await
        .expect_err("exec timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timed out"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(10));

    // Reopen after rotation: new lines go to a new file.
    std::fs::rename(&log, pod.log_dir.path().join("web.log.1"))?;
    pod.env
        .daemon
        .runtime()
        .await?
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await?;
    assert!(log.exists(), "log reopened");

    // sleep is PID 1 of its namespace and ignores SIGTERM: stopped by SIGKILL after the timeout.
    let started = Instant::now();
    pod.env
        .daemon
        .runtime()
        .await?
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await?;
    assert!(started.elapsed() >= Duration::from_secs(1));
    let st = pod.status(&id).await?;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137);
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at);
    let err = pod
        .env
        .daemon
        .runtime()
        .await?
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Stop and remove are idempotent.
    pod.env
        .daemon
        .runtime()
        .await?
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let err = pod
        .env
        .daemon
        .runtime()
        .await?
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), Code::NotFound);
    pod.teardown().await
}

#[tokio::test]
async fn lifecycle_logs_exec_and_stop_with_runc() -> Result<()> {
    lifecycle("runc").await
}

#[tokio::test]
async fn lifecycle_logs_exec_and_stop_with_crun() -> Result<()> {
    lifecycle("crun").await
}

#[tokio::test]
async fn exit_codes_reasons_and_filters() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let ok = pod.run("ok", &["true"]).await?;
    let bad = pod.run("bad", &["sh", "-c", "exit 3"]).await?;
    let st = pod.wait_exited(&ok).await?;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    let st = pod.wait_exited(&bad).await?;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));
    let created = pod.create(container("idle", &["sleep", "100"])).await?;
    assert_eq!(
        pod.status(&created).await?.state,
        ContainerState::ContainerCreated as i32
    );

    let list = |filter: ContainerFilter| {
        let pod = &pod;
        async move {
            let c = pod
                .env
                .daemon
                .runtime()
                .await?
                .list_containers(ListContainersRequest {
                    filter: Some(filter),
                })
                .await?;
            anyhow::Ok(
                c.into_inner()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(
        list(ContainerFilter {
            id: ok[..10].into(),
            ..Default::default()
        })
        .await?,
        vec![ok.clone()]
    );
    let created_state = k8s_cri::v1::ContainerStateValue {
        state: ContainerState::ContainerCreated as i32,
    };
    assert_eq!(
        list(ContainerFilter {
            state: Some(created_state),
            ..Default::default()
        })
        .await?,
        vec![created.clone()]
    );
    let labels = HashMap::from([("name".to_string(), "bad".to_string())]);
    assert_eq!(
        list(ContainerFilter {
            label_selector: labels,
            ..Default::default()
        })
        .await?,
        vec![bad.clone()]
    );
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: pod.pod_id.clone(),
            ..Default::default()
        })
        .await?
        .len(),
        3
    );

    // The image under a container cannot be removed while the container exists.
    let err = common::remove(&pod.env.daemon, "busybox")
        .await
        .expect_err("image in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("in use by container"),
        "names the container: {}",
        err.message()
    );

    // The same name twice in a pod is refused.
    let err = pod
        .create(container("ok", &["true"]))
        .await
        .expect_err("duplicate name");
    assert_eq!(err.code(), Code::AlreadyExists);
    // An image that is not present is NotFound naming it.
    let mut missing = container("missing", &["true"]);
    missing.image = Some(ImageSpec {
        image: "nothere:v9".into(),
        ..Default::default()
    });
    let err = pod.create(missing).await.expect_err("no image");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nothere:v9"), "{}", err.message());
    pod.teardown().await
}

/// kill -9 of criusd: running containers keep running, exits while it is down are reported
/// with their real codes after the restart.
#[tokio::test]
async fn containers_survive_a_daemon_kill9() -> Result<()> {
    let mut pod = pod_with_busybox("runc").await?;
    let long = pod.run("long", &["sleep", "1000"]).await?;
    let short = pod.run("short", &["sh", "-c", "sleep 2; exit 7"]).await?;
    let pid = pod.pid_of(&long).await?;
    let short_pid = pod.pid_of(&short).await?;
    assert!(pid > 0);

    pod.env.daemon.kill9();
    // "short" exits while criusd is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{short_pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "short never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "container kept running"
    );
    pod.env.daemon.restart().await?;

    assert_eq!(
        pod.status(&long).await?.state,
        ContainerState::ContainerRunning as i32
    );
    let st = pod.wait_exited(&short).await?;
    assert_eq!(
        st.exit_code, 7,
        "exit while the daemon was down keeps its real code"
    );
    let out = pod.exec(&long, &["echo", "still here"], 10).await?;
    assert_eq!(out.stdout, b"still here\n");
    pod.teardown().await
}

/// The pod's monitor is killed: a container that exits afterwards is reported exited with an
/// unknown code (nothing could record it), a container still running is stopped by crius when
/// the monitor is replaced, and the pod keeps working with a new monitor.
#[tokio::test]
async fn a_dead_monitor_leaves_no_container_stuck() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let long = pod.run("long", &["sleep", "1000"]).await?;
    let short = pod.run("short", &["sh", "-c", "sleep 2; exit 7"]).await?;
    let long_pid = pod.pid_of(&long).await?;
    let pid_file = pod
        .env
        .daemon
        .state()
        .join("pods")
        .join(&pod.pod_id)
        .join("monitor/monitor.pid");
    let monitor: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    // SAFETY: signalling the monitor process the test's daemon started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);

    let st = pod.wait_exited(&short).await?;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 255, "Unknown"),
        "an exit nobody could record: {st:?}"
    );
    assert!(st.message.contains("monitor"), "{}", st.message);
    assert_eq!(
        pod.status(&long).await?.state,
        ContainerState::ContainerRunning as i32
    );

    let started = Instant::now();
    pod.env
        .daemon
        .runtime()
        .await?
        .stop_container(StopContainerRequest {
            container_id: long.clone(),
            timeout: 30,
        })
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped by crius, not after a timeout"
    );
    let st = pod.status(&long).await?;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 137, "Error"),
        "{st:?}"
    );
    assert!(st.message.contains("monitor"), "{}", st.message);
    assert!(
        !Path::new(&format!("/proc/{long_pid}")).exists(),
        "the orphaned container's process is really gone"
    );

    // A new monitor serves the pod: new containers run, exit codes are recorded again.
    let again = pod.run("again", &["sh", "-c", "exit 3"]).await?;
    let st = pod.wait_exited(&again).await?;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    pod.teardown().await
}
