//! Hostile host users and hostile requests (issue 10, host side), each against a real criusd:
//! an unprivileged host user must not reach a container's files, a pod must not change the
//! host's mount table, and request fields are treated as untrusted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use common::pods::*;

/// Whether `ls path` succeeds for uid/gid 65534 (nobody) without supplementary groups.
fn nobody_can_list(path: &Path) -> Result<bool> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(path)
        .output()?;
    Ok(out.status.success())
}

#[tokio::test]
async fn host_users_cannot_reach_container_files() -> Result<()> {
    let pod = pod_with_busybox("runc").await?;
    // The testkit's temp dir is 0700; opened like /var/lib and /run are, only crius's own
    // modes stand between a host user and the container.
    let base = pod.env.daemon.base_dir().to_path_buf();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
    ensure!(
        nobody_can_list(&base)?,
        "setpriv works and the base dir is open"
    );

    let id = pod.run("victim", &["sleep", "3600"]).await?;
    let state = pod.env.daemon.state();
    let bundle = state.join("containers").join(&id);
    let rootfs = bundle.join("rootfs");
    ensure!(rootfs.join("bin").exists(), "root sees the running rootfs");
    let pod_dir = state.join("pods").join(&pod.pod_id);
    ensure!(pod_dir.join("shm").exists(), "the pod has its own shm");
    let result = async {
        for p in [
            rootfs.clone(),
            bundle.clone(),
            state.join("containers"),
            pod_dir.clone(),
            pod_dir.join("shm"),
            pod.env.daemon.root().join("containers").join(&id),
            pod.env.daemon.root().join("containers"),
        ] {
            ensure!(!nobody_can_list(&p)?, "uid 65534 can list {}", p.display());
        }
        Ok(())
    }
    .await;
    pod.teardown().await?;
    result
}

/// Mount id → (mount point, propagation fields) for every mount of this namespace.
fn propagation_table() -> Result<std::collections::BTreeMap<u64, (String, String)>> {
    let mut table = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")?.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = pre.split(' ').collect();
        table.insert(
            fields[0].parse()?,
            (fields[4].to_string(), fields[6..].join(" ")),
        );
    }
    Ok(table)
}

/// A temp dir with a bind mount of its own and the given propagation (`--make-shared`, …),
/// as an admin prepares a volume for propagation; unmounted on drop. `source` is bound
/// instead of the dir itself (a slave needs a shared master to be bound from).
struct SelfBind(tempfile::TempDir);

impl SelfBind {
    fn new(flag: &str, source: Option<&Path>) -> Result<SelfBind> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().to_path_buf();
        let run = |args: &[&str]| -> Result<()> {
            let st = Command::new("mount").args(args).arg(&target).status()?;
            ensure!(st.success(), "mount {args:?} failed");
            Ok(())
        };
        let from = source.unwrap_or(&target).display().to_string();
        run(&["--bind", &from])?;
        let bound = SelfBind(dir);
        run(&[flag])?;
        Ok(bound)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SelfBind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn volume(host: &Path, propagation: k8s_cri::v1::MountPropagation) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: "/vol".into(),
        host_path: host.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn propagation_needs_a_shared_host_mount_and_never_changes_the_host() -> Result<()> {
    use k8s_cri::v1::MountPropagation as P;
    let pod = pod_with_busybox("runc").await?;
    let plain = tempfile::tempdir()?;
    let plain_mount = String::from_utf8(
        Command::new("findmnt")
            .args(["-n", "-o", "TARGET", "-T"])
            .arg(plain.path())
            .output()?
            .stdout,
    )?
    .trim()
    .to_string();
    let plain_shared = propagation_table()?
        .values()
        .any(|(mp, prop)| *mp == plain_mount && prop.contains("shared:"));
    let shared = SelfBind::new("--make-shared", None)?;
    let slave = SelfBind::new("--make-slave", Some(shared.path()))?;
    let private = SelfBind::new("--make-private", None)?;
    let before = propagation_table()?;

    let result = async {
        let mut cases = vec![
            (private.path(), P::PropagationHostToContainer, false),
            (private.path(), P::PropagationBidirectional, false),
            (slave.path(), P::PropagationBidirectional, false),
            (slave.path(), P::PropagationHostToContainer, true),
            (shared.path(), P::PropagationBidirectional, true),
            (shared.path(), P::PropagationHostToContainer, true),
        ];
        if !plain_shared {
            // This host's / is private (as in many CI containers): re-sharing it was the bug.
            cases.push((plain.path(), P::PropagationHostToContainer, false));
            cases.push((Path::new("/"), P::PropagationBidirectional, false));
        }
        for (n, (host, propagation, allowed)) in cases.into_iter().enumerate() {
            let mut c = container(&format!("c{n}"), &["sleep", "3600"]);
            c.mounts = vec![volume(host, propagation)];
            let got = pod.create(c).await;
            match (got, allowed) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    ensure!(
                        e.code() == tonic::Code::FailedPrecondition,
                        "{host:?} {propagation:?}: {:?} {}",
                        e.code(),
                        e.message()
                    );
                    ensure!(
                        e.message().contains("config.mounts[0].propagation")
                            && e.message().contains(&host.display().to_string()),
                        "the error names the field and the path: {}",
                        e.message()
                    );
                }
                (got, _) => anyhow::bail!(
                    "{host:?} {propagation:?}: allowed={allowed} but got {:?}",
                    got.map_err(|e| e.message().to_string())
                ),
            }
        }
        // Mounts that existed before (others may come and go meanwhile) kept their flags.
        let after = propagation_table()?;
        for (id, (mp, prop)) in &before {
            if let Some((_, now)) = after.get(id) {
                ensure!(now == prop, "{mp}: propagation {prop:?} became {now:?}");
            }
        }
        let new: Vec<&String> = after
            .iter()
            .filter(|(id, (mp, _))| {
                !before.contains_key(id)
                    && [plain.path(), private.path(), slave.path()]
                        .iter()
                        .any(|p| mp.starts_with(&p.display().to_string()))
            })
            .map(|(_, (mp, _))| mp)
            .collect();
        ensure!(new.is_empty(), "host paths got new mounts: {new:?}");
        Ok(())
    }
    .await;
    pod.teardown().await?;
    drop((slave, shared, private));
    result
}

#[tokio::test]
async fn request_fields_are_untrusted() -> Result<()> {
    use k8s_cri::v1::{
        CreateContainerRequest, LinuxContainerConfig, LinuxContainerSecurityContext,
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, PodSandboxConfig, PodSandboxMetadata,
        PortMapping, RunPodSandboxRequest, SecurityProfile, security_profile::ProfileType,
    };
    use tonic::Code;
    let pod = pod_with_busybox("runc").await?;
    let outside = tempfile::tempdir()?;
    let result = async {
        let expect = |got: Result<String, tonic::Status>, field: &str| -> Result<()> {
            let e = match got {
                Ok(id) => anyhow::bail!("{field}: accepted as {id}"),
                Err(e) => e,
            };
            ensure!(
                e.code() == Code::InvalidArgument && e.message().contains(field),
                "{field}: {:?} {}",
                e.code(),
                e.message()
            );
            Ok(())
        };
        // log_path stays inside the pod's log directory.
        let target = outside.path().join("owned");
        for bad in [
            target.display().to_string(),
            format!("../../../../../../..{}", target.display()),
        ] {
            let mut c = container("log", &["true"]);
            c.log_path = bad;
            expect(pod.create(c).await, "config.log_path")?;
        }
        ensure!(!target.exists(), "nothing written outside the log dir");

        // A symlink or FIFO planted at the log path is never followed or opened.
        std::fs::create_dir_all(pod.log_dir.path())?;
        let link = pod.log_dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link)?;
        let mut c = container("link", &["echo", "hi"]);
        c.log_path = "link.log".into();
        let created = pod.create(c).await;
        ensure!(created.is_err(), "a symlinked log path is refused");
        ensure!(!target.exists(), "the symlink was not followed");
        let fifo = pod.log_dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        let mut c = container("fifo", &["echo", "hi"]);
        c.log_path = "fifo.log".into();
        let created = tokio::time::timeout(std::time::Duration::from_secs(20), pod.create(c))
            .await
            .map_err(|_| anyhow::anyhow!("a FIFO log path hangs CreateContainer"))?;
        ensure!(created.is_err(), "a FIFO log path is refused");

        // The request's copy of the sandbox config cannot make a pod privileged.
        let mut c = container("priv", &["sleep", "3600"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let claim = PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = pod
            .env
            .daemon
            .runtime()
            .await?
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.pod_id.clone(),
                config: Some(c),
                sandbox_config: Some(claim),
            })
            .await;
        ensure!(
            got.is_err(),
            "a privileged container in an unprivileged pod was created"
        );

        // A Localhost seccomp profile is a small regular file: a FIFO must not hang the RPC.
        let profile_fifo = outside.path().join("profile.json");
        nix::unistd::mkfifo(
            &profile_fifo,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?;
        let mut c = container("seccomp", &["true"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: profile_fifo.display().to_string(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), pod.create(c))
            .await
            .map_err(|_| anyhow::anyhow!("a FIFO seccomp profile hangs CreateContainer"))?;
        expect(got, "localhost_ref")?;

        // Ports and CNI_ARGS values.
        let run = |mutate: &dyn Fn(&mut PodSandboxConfig)| {
            let mut config = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "bad".into(),
                    namespace: "default".into(),
                    uid: "bad-uid".into(),
                    attempt: 0,
                }),
                ..Default::default()
            };
            mutate(&mut config);
            let daemon = &pod.env.daemon;
            async move {
                daemon
                    .runtime()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: "runc".into(),
                    })
                    .await
                    .map(|r| r.into_inner().pod_sandbox_id)
            }
        };
        let port = |host_port: i32, container_port: i32| PortMapping {
            host_port,
            container_port,
            ..Default::default()
        };
        for (p, field) in [
            (port(65536 + 8080, 80), "config.port_mappings[0].host_port"),
            (port(-1, 80), "config.port_mappings[0].host_port"),
            (port(8080, 0), "config.port_mappings[0].container_port"),
            (port(8080, 70000), "config.port_mappings[0].container_port"),
        ] {
            expect(
                run(&|c: &mut PodSandboxConfig| c.port_mappings = vec![p.clone()]).await,
                field,
            )?;
        }
        expect(
            run(&|c: &mut PodSandboxConfig| {
                c.metadata.as_mut().unwrap().name = "x;IP=10.0.0.1".into()
            })
            .await,
            "config.metadata.name",
        )?;
        Ok(())
    }
    .await;
    pod.teardown().await?;
    result
}

/// Host pids whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Waits up to `within` for `f` to hold.
async fn eventually(within: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    f()
}

#[tokio::test]
async fn exec_sync_is_bounded_cancellable_and_never_hangs() -> Result<()> {
    use std::time::{Duration, Instant};
    use tonic::Code;
    let pod = pod_with_busybox("runc").await?;
    let id = pod.run("execs", &["sleep", "3600"]).await?;
    let pod = std::sync::Arc::new(pod);
    // Unique arguments, so the host's process table tells our execs apart.
    let marker = |n: u32| (7_000_000 + n * 100_000 + std::process::id() % 100_000).to_string();
    let result = async {
        // A client that goes away takes its exec with it.
        let one = marker(1);
        let call = {
            let (pod, id, one) = (pod.clone(), id.clone(), one.clone());
            tokio::spawn(async move { pod.exec(&id, &["sleep", &one], 0).await })
        };
        ensure!(
            eventually(Duration::from_secs(10), || !pids_running(&["sleep", &one])
                .is_empty())
            .await,
            "the exec started"
        );
        call.abort();
        ensure!(
            eventually(Duration::from_secs(10), || pids_running(&["sleep", &one])
                .is_empty())
            .await,
            "the exec of a cancelled ExecSync is killed"
        );

        // Many outstanding execs: the excess is refused, the rest of the API stays fast.
        let many = marker(2);
        let calls: Vec<_> = (0..100)
            .map(|_| {
                let (pod, id, many) = (pod.clone(), id.clone(), many.clone());
                tokio::spawn(async move { pod.exec(&id, &["sleep", &many], 0).await })
            })
            .collect();
        ensure!(
            eventually(Duration::from_secs(30), || calls
                .iter()
                .filter(|c| c.is_finished())
                .count()
                >= 36)
            .await,
            "execs beyond the per-container limit (64) are refused at once"
        );
        let mut refused = 0;
        let mut pending = Vec::new();
        for c in calls {
            if c.is_finished() {
                match c.await? {
                    Err(e) if e.code() == Code::ResourceExhausted => refused += 1,
                    other => anyhow::bail!("an exec ended early: {other:?}"),
                }
            } else {
                pending.push(c);
            }
        }
        ensure!(refused == 36, "{refused} execs refused, 36 expected");
        let mut rt = pod.env.daemon.runtime().await?;
        for _ in 0..3 {
            let t = Instant::now();
            rt.status(k8s_cri::v1::StatusRequest::default()).await?;
            rt.list_containers(k8s_cri::v1::ListContainersRequest::default())
                .await?;
            rt.container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await?;
            ensure!(
                t.elapsed() < Duration::from_secs(1),
                "Status, List and ContainerStatus took {:?} with 64 execs outstanding",
                t.elapsed()
            );
        }
        for c in &pending {
            c.abort();
        }
        ensure!(
            eventually(Duration::from_secs(20), || pids_running(&["sleep", &many])
                .is_empty())
            .await,
            "every cancelled exec is killed"
        );

        // Output beyond 16 MiB per stream is cut; the call still succeeds.
        let channel = pod.env.daemon.channel().await?;
        let mut big = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel)
            .max_decoding_message_size(64 << 20);
        let out = big
            .exec_sync(k8s_cri::v1::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "head".into(),
                    "-c".into(),
                    "20000000".into(),
                    "/dev/zero".into(),
                ],
                timeout: 30,
            })
            .await?
            .into_inner();
        ensure!(out.exit_code == 0, "exit code {}", out.exit_code);
        // Cut at 16 MiB per stream, and both together within the 16 MiB message limit.
        ensure!(
            (15 << 20..16 << 20).contains(&out.stdout.len()) && out.stdout.iter().all(|b| *b == 0),
            "stdout of {} bytes",
            out.stdout.len()
        );

        // A hung monitor fails the call with DeadlineExceeded instead of hanging it.
        let monitors: Vec<i32> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.windows(2)
                        .any(|w| w[0] == b"--pod-id" && w[1] == pod.pod_id.as_bytes())
                })
            })
            .collect();
        ensure!(monitors.len() == 1, "one monitor for the pod: {monitors:?}");
        let stop = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitors[0]), sig);
        stop(nix::sys::signal::Signal::SIGSTOP)?;
        let t = Instant::now();
        let hung = tokio::time::timeout(Duration::from_secs(30), pod.exec(&id, &["true"], 1)).await;
        stop(nix::sys::signal::Signal::SIGCONT)?;
        match hung {
            Err(_) => anyhow::bail!("ExecSync hangs on a hung monitor"),
            Ok(Ok(_)) => anyhow::bail!("ExecSync succeeded on a stopped monitor"),
            Ok(Err(e)) => ensure!(
                e.code() == Code::DeadlineExceeded,
                "{:?} {} after {:?}",
                e.code(),
                e.message(),
                t.elapsed()
            ),
        }
        Ok(())
    }
    .await;
    // Aborted exec tasks release their handle on the pod once they are dropped.
    let mut pod = pod;
    for _ in 0..100 {
        match std::sync::Arc::try_unwrap(pod) {
            Ok(p) => {
                p.teardown().await?;
                return result;
            }
            Err(p) => pod = p,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.and(Err(anyhow::anyhow!("exec tasks still hold the pod")))
}

#[tokio::test]
async fn the_pods_pid_1_is_no_door_to_the_host() -> Result<()> {
    use k8s_cri::v1::{
        Capability, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    };
    let shared_pid = || NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    // A kubelet-style pod cgroup the init must join.
    let parent = format!("crius-hh-{}", std::process::id());
    for h in ["memory", "pids"] {
        std::fs::create_dir_all(Path::new("/sys/fs/cgroup").join(h).join(&parent))?;
    }
    let remove_parent = || {
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(h.path().join(&parent));
        }
    };
    let pod = match pod_with("runc", |c| {
        c.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{parent}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(shared_pid()),
                ..Default::default()
            }),
            ..Default::default()
        })
    })
    .await
    {
        Ok(p) => p,
        Err(e) => {
            remove_parent();
            return Err(e);
        }
    };
    // A host file only the host should see.
    let secret_dir = tempfile::tempdir()?;
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, "host secret\n")?;
    let result = async {
        let mut c = container("tracer", &["sleep", "3600"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(shared_pid()),
                capabilities: Some(Capability {
                    add_capabilities: vec!["SYS_PTRACE".into()],
                    ..Default::default()
                }),
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
        let sh = |script: String| {
            let (pod, id) = (&pod, id.clone());
            async move {
                let r = pod.exec(&id, &["sh", "-c", &script], 10).await?;
                Ok::<_, anyhow::Error>((
                    r.exit_code,
                    String::from_utf8_lossy(&r.stdout).trim().to_string(),
                ))
            }
        };
        let (_, comm) = sh("cat /proc/1/comm".into()).await?;
        ensure!(comm == "crius-init", "PID 1 is the pod's init: {comm}");
        let (code, out) = sh(format!(
            "cat /proc/1/root{p} /proc/1/root/etc/os-release /proc/1/cwd{p} 2>&1",
            p = secret.display()
        ))
        .await?;
        ensure!(
            code != 0 && !out.contains("host secret") && !out.contains("NAME="),
            "host files read through PID 1: {out}"
        );
        let (_, status) =
            sh("grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Uid|Gid|NoNewPrivs):' /proc/1/status".into())
                .await?;
        for line in status.lines() {
            let mut f = line.split_whitespace();
            let (key, value) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            match key {
                "Uid:" | "Gid:" => ensure!(value == "65535", "{line}"),
                "NoNewPrivs:" => ensure!(value == "1", "{line}"),
                _ => ensure!(u64::from_str_radix(value, 16) == Ok(0), "{line}"),
            }
        }
        ensure!(status.lines().count() == 8, "{status}");
        // It counts against the pod's cgroup.
        let in_pod_cgroup: Vec<i32> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "crius-init")
                    && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
                        // The leaf of the pod's own processes, in the pod's cgroup.
                        c.lines()
                            .any(|l| l.ends_with(&format!(":memory:/{parent}/crius-pod")))
                    })
            })
            .collect();
        ensure!(
            in_pod_cgroup.len() == 1,
            "the pod's init is in its memory cgroup /{parent}/crius-pod: {in_pod_cgroup:?}"
        );
        Ok(())
    }
    .await;
    let torn_down = pod.teardown().await;
    remove_parent();
    torn_down?;
    result
}
