//! What a container gets from its config and image, observed from inside: image defaults,
//! mounts and propagation, a symlinked host path, the pod's shared PID namespace, long log
//! lines, resource updates, the oom_score_adj clamp and OOM kills.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::pods::*;
use crius_testkit::{image, push_image};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    UpdateContainerResourcesRequest,
};

fn text(out: &k8s_cri::v1::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn image_defaults_and_cri_overrides() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    // User 1000:1000, WorkingDir /app, Env GREETING=hello, Entrypoint/Cmd print a file.
    push_image(
        &pod.env.registry,
        "library/docker",
        "v1",
        &image::docker_schema2_image(),
    )
    .await?;
    pod.env.pull("docker:v1").await?;
    let mut c = container("app", &[]);
    c.image = Some(ImageSpec {
        image: "docker:v1".into(),
        ..Default::default()
    });
    c.args = vec!["sleep 1000".into()]; // replaces Cmd, keeps Entrypoint ["/bin/sh", "-c"]
    c.envs = vec![KeyValue {
        key: "EXTRA".into(),
        value: "cri".into(),
    }];
    let id = pod.create(c).await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    assert_eq!(text(&pod.exec(&id, &["id", "-u"], 10).await?), "1000");
    assert_eq!(text(&pod.exec(&id, &["pwd"], 10).await?), "/app");
    // ContainerStatus reports the effective user.
    let user = pod
        .status(&id)
        .await?
        .user
        .and_then(|u| u.linux)
        .expect("user reported");
    assert_eq!((user.uid, user.gid), (1000, 1000));
    assert!(
        user.supplemental_groups.contains(&1000),
        "{:?}",
        user.supplemental_groups
    );
    assert_eq!(
        text(
            &pod.exec(&id, &["sh", "-c", "echo $GREETING-$EXTRA"], 10)
                .await?
        ),
        "hello-cri"
    );
    let r = pod
        .env
        .daemon
        .runtime()
        .await?
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await?;
    let info: serde_json::Value = serde_json::from_str(&r.into_inner().info["info"])?;
    assert_eq!(
        info["runtimeSpec"]["process"]["args"],
        serde_json::json!(["/bin/sh", "-c", "sleep 1000"])
    );
    pod.teardown().await
}

#[tokio::test]
async fn mounts_readonly_propagation_and_symlinked_host_path() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let host = tempfile::tempdir()?;
    // HOST_TO_CONTAINER needs a shared host mount, which crius no longer makes itself: the
    // test makes its volume dir one, as an admin would.
    for args in [
        &["--bind", &host.path().display().to_string()][..],
        &["--make-shared"][..],
    ] {
        let st = std::process::Command::new("mount")
            .args(args)
            .arg(host.path())
            .status()?;
        assert!(st.success(), "mount {args:?}");
    }
    let data = host.path().join("data");
    std::fs::create_dir(&data)?;
    let link = host.path().join("link");
    std::os::unix::fs::symlink(&data, &link)?;
    let ro = host.path().join("ro");
    std::fs::create_dir(&ro)?;
    let slave = host.path().join("slave");
    std::fs::create_dir(&slave)?;
    let mut c = container("mounts", &["sleep", "1000"]);
    let mount = |container_path: &str,
                 host_path: &Path,
                 readonly: bool,
                 propagation: MountPropagation| Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    };
    c.mounts = vec![
        mount("/data", &link, false, MountPropagation::PropagationPrivate),
        mount("/ro", &ro, true, MountPropagation::PropagationPrivate),
        mount(
            "/slave",
            &slave,
            false,
            MountPropagation::PropagationHostToContainer,
        ),
    ];
    let id = pod.create(c).await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;

    // The symlink was resolved: writes land in its target.
    pod.exec(&id, &["sh", "-c", "echo hi > /data/x"], 10)
        .await?;
    assert_eq!(std::fs::read_to_string(data.join("x"))?, "hi\n");
    let out = pod.exec(&id, &["sh", "-c", "echo no > /ro/x"], 10).await?;
    assert_ne!(out.exit_code, 0, "read-only mount is read-only");
    assert!(!ro.join("x").exists());

    // HOST_TO_CONTAINER (rslave): a mount made on the host later shows up inside.
    let sub = slave.join("sub");
    std::fs::create_dir(&sub)?;
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )?;
    std::fs::write(sub.join("marker"), "from host")?;
    let seen = pod.exec(&id, &["cat", "/slave/sub/marker"], 10).await;
    nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH)?;
    assert_eq!(text(&seen?), "from host");
    pod.teardown().await?;
    nix::mount::umount2(host.path(), nix::mount::MntFlags::MNT_DETACH)?;
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter(|l| l.contains(&host.path().display().to_string()))
        .map(String::from)
        .collect();
    assert!(
        left.is_empty(),
        "the shared bind of the volume is gone with the container: {left:?}"
    );
    Ok(())
}

#[tokio::test]
async fn shared_pid_namespace_sees_other_containers_and_reaps_zombies() -> Result<()> {
    let pod = pod_with("runc", |c| {
        c.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    })
    .await?;
    let pod_pid = |name: &str| {
        let mut c = container(name, &["sh", "-c", "(sleep 1 &); exec sleep 1000"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let a = pod.create(pod_pid("a")).await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(k8s_cri::v1::StartContainerRequest {
            container_id: a.clone(),
        })
        .await?;
    let b = pod.create(pod_pid("b")).await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(k8s_cri::v1::StartContainerRequest {
            container_id: b.clone(),
        })
        .await?;

    // Each sees the pod's init as PID 1 and the other's processes.
    let ps = text(&pod.exec(&b, &["ps", "-o", "pid,comm"], 10).await?);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "crius-init"]),
        "{ps}"
    );
    assert!(
        ps.lines().filter(|l| l.contains("sleep")).count() >= 2,
        "{ps}"
    );

    // The orphaned `sleep 1` children were reparented to crius-init, which reaps them: once
    // they have exited, none is left as a zombie.
    let host_pid = pod.pid_of(&a).await?;
    let ns = std::fs::read_link(format!("/proc/{host_pid}/ns/pid"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let in_pod: Vec<u32> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect();
        // The `sleep 1` children still running, then (if crius-init did not reap them) their
        // zombies.
        let sleeping = in_pod.iter().any(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x001\x00")
        });
        let zombies: Vec<String> = in_pod
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .collect();
        if !sleeping && zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "zombies in the pod: {zombies:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without namespace_options a container follows the pod (pid mode POD, the proto's zero
    // value, as containerd reads it): it sees the pod's init.
    let default = pod.run("default", &["sleep", "1000"]).await?;
    let ps = text(&pod.exec(&default, &["ps", "-o", "comm"], 10).await?);
    assert!(ps.contains("crius-init"), "{ps}");

    // With pid mode CONTAINER a container sees only itself.
    let own = pod
        .run_config(own_pid_ns(container("alone", &["sleep", "1000"])))
        .await?;
    let ps = text(&pod.exec(&own, &["ps", "-o", "comm"], 10).await?);
    assert!(!ps.contains("crius-init"), "{ps}");
    pod.teardown().await
}

#[tokio::test]
async fn long_lines_are_split_into_partial_log_records() -> Result<()> {
    let pod = pod_with_busybox("crun").await?;
    let id = pod
        .run(
            "long",
            &[
                "sh",
                "-c",
                "head -c 40000 /dev/zero | tr '\\0' a; echo; echo end; sleep 1000",
            ],
        )
        .await?;
    let log = pod.log_dir.path().join("long.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains(" F end") {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tags: Vec<(&str, usize)> = text
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_, _, tag, content) = (
                parts.next(),
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            (tag, content.len())
        })
        .collect();
    assert_eq!(
        tags,
        vec![
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 3)
        ],
        "{tags:?}"
    );
    let _ = id;
    pod.teardown().await
}

#[tokio::test]
async fn resource_updates_and_the_oom_score_adj_clamp() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    let mut c = container("res", &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 128 * 1024 * 1024,
            cpu_shares: 512,
            oom_score_adj: -500,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = pod.create(c).await?;
    pod.env
        .daemon
        .runtime()
        .await?
        .start_container(k8s_cri::v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let cg = Path::new("/sys/fs/cgroup/memory/crius")
        .join(&pod.pod_id)
        .join(format!("crius-{id}"));
    let limit = |cg: &Path| {
        std::fs::read_to_string(cg.join("memory.limit_in_bytes")).map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(limit(&cg)?, (128 * 1024 * 1024).to_string());
    }
    // The daemon cannot go below its own oom_score_adj without CAP_SYS_RESOURCE: clamped.
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")?
        .trim()
        .parse()?;
    let pid = pod.pid_of(&id).await?;
    let adj: i64 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?
        .trim()
        .parse()?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let cap_eff = u64::from_str_radix(
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim(),
        16,
    )?;
    if cap_eff & (1 << 24) == 0 {
        assert_eq!(adj, own.max(-500));
    } else {
        assert_eq!(adj, -500);
    }

    pod.env
        .daemon
        .runtime()
        .await?
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 * 1024 * 1024,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    if Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(limit(&cg)?, (64 * 1024 * 1024).to_string());
    }
    let st = pod.status(&id).await?;
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        64 * 1024 * 1024
    );
    pod.teardown().await
}

/// A container whose memory use passes its limit is killed by the kernel's OOM killer and
/// reported with reason OOMKilled (kubelet shows it and restarts with back-off); a container
/// that fails on its own under the same limit is reported as Error.
#[tokio::test]
async fn oom_killed_containers_are_reported_as_such() -> Result<()> {
    for handler in ["runc", "crun"] {
        let pod = pod_with_busybox(handler).await?;
        let limited = |name: &str, script: &str| {
            let mut c = container(name, &["sh", "-c", script]);
            c.linux = Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 32 * 1024 * 1024,
                    ..Default::default()
                }),
                ..Default::default()
            });
            c
        };
        // The shell keeps the command substitution's output in memory: it grows past 32 MiB.
        let hog = pod
            .create(limited("hog", "x=$(cat /dev/urandom); echo never"))
            .await?;
        let fails = pod.create(limited("fails", "exit 3")).await?;
        let mut rt = pod.env.daemon.runtime().await?;
        for id in [&hog, &fails] {
            rt.start_container(k8s_cri::v1::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await?;
        }
        let st = pod.wait_exited(&hog).await?;
        assert_eq!(
            (st.state, st.reason.as_str(), st.exit_code),
            (ContainerState::ContainerExited as i32, "OOMKilled", 137),
            "{handler}: {st:?}"
        );
        let st = pod.wait_exited(&fails).await?;
        assert_eq!(
            (st.reason.as_str(), st.exit_code),
            ("Error", 3),
            "{handler}: {st:?}"
        );
        pod.teardown().await?;
    }
    Ok(())
}
