//! Security contexts end to end: containers run through criusd with runc and crun, and every
//! setting is observed from inside the container (capability sets in /proc/self/status,
//! failing syscalls, `id`, mount flags, visible processes and devices).

mod common;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, ensure};
use common::*;
use crius_testkit::image;
use crius_testkit::push_image;
use k8s_cri::v1::{
    Capability as CriCaps, ContainerConfig, ContainerMetadata, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, SeLinuxOption, SecurityProfile, StartContainerRequest,
    StopPodSandboxRequest, SupplementalGroupsPolicy, security_profile::ProfileType,
};
use tonic::Code;

/// crun 1.8.1 refuses a hybrid cgroup layout unless hugetlb is mounted as a v1 hierarchy.
fn prepare_runtime(handler: &str) {
    let hugetlb = Path::new("/sys/fs/cgroup/hugetlb");
    if handler == "crun" && !hugetlb.exists() && Path::new("/sys/fs/cgroup/memory").exists() {
        let _ = std::fs::create_dir_all(hugetlb);
        let _ = std::process::Command::new("mount")
            .args(["-t", "cgroup", "-o", "hugetlb", "cgroup"])
            .arg(hugetlb)
            .status();
    }
}

/// A daemon with busybox and the setuid probe image pulled.
struct Node {
    env: Env,
    handler: String,
    log_dir: tempfile::TempDir,
    pods: Vec<String>,
}

#[derive(Default, Clone, Copy)]
struct PodOpts {
    privileged: bool,
    host_network: bool,
    pid: NamespaceMode,
}

impl Node {
    async fn start(handler: &str) -> Result<Node> {
        prepare_runtime(handler);
        let env = Env::start().await?;
        push_image(
            &env.registry,
            "library/busybox",
            "latest",
            &image::busybox_image(),
        )
        .await?;
        push_image(
            &env.registry,
            "library/suid-probe",
            "latest",
            &image::setuid_probe_image(),
        )
        .await?;
        env.pull("busybox").await?;
        env.pull("suid-probe").await?;
        Ok(Node {
            env,
            handler: handler.to_string(),
            log_dir: tempfile::tempdir()?,
            pods: Vec::new(),
        })
    }

    async fn pod(&mut self, name: &str, o: PodOpts) -> Result<String> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("{name}-uid"),
                attempt: 0,
            }),
            log_directory: self.log_dir.path().display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    privileged: o.privileged,
                    namespace_options: Some(NamespaceOption {
                        network: if o.host_network {
                            NamespaceMode::Node as i32
                        } else {
                            NamespaceMode::Pod as i32
                        },
                        pid: o.pid as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .env
            .daemon
            .runtime()
            .await?
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: self.handler.clone(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Ok(id)
    }

    async fn create(&self, pod: &str, config: ContainerConfig) -> Result<String, tonic::Status> {
        let mut rt = self
            .env
            .daemon
            .runtime()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
    }

    /// Creates and starts `config` (whose command should keep it running).
    async fn run(&self, pod: &str, config: ContainerConfig) -> Result<String> {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let id = self.create(pod, config).await.map_err(|e| {
            anyhow::anyhow!(
                "{}: creating {name}: {:?} {}",
                self.handler,
                e.code(),
                e.message()
            )
        })?;
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

    /// Runs `sh -c script` in the container: (exit code, stdout + stderr).
    async fn sh(&self, id: &str, script: &str) -> Result<(i32, String)> {
        let r = self
            .env
            .daemon
            .runtime()
            .await?
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 20,
            })
            .await?
            .into_inner();
        let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&r.stderr));
        Ok((r.exit_code, out))
    }

    /// Like [`Node::sh`], but the command must succeed; returns its trimmed output.
    async fn ok(&self, id: &str, script: &str) -> Result<String> {
        let (code, out) = self.sh(id, script).await?;
        ensure!(
            code == 0,
            "{}: `{script}` exited {code}: {out}",
            self.handler
        );
        Ok(out.trim().to_string())
    }

    /// The command must fail; returns its output.
    async fn fails(&self, id: &str, script: &str) -> Result<String> {
        let (code, out) = self.sh(id, script).await?;
        ensure!(
            code != 0,
            "{}: `{script}` should have failed: {out}",
            self.handler
        );
        Ok(out)
    }

    /// One capability set of the container's init process, e.g. `CapEff`.
    async fn caps(&self, id: &str, set: &str) -> Result<u64> {
        let line = self.ok(id, &format!("grep {set}: /proc/1/status")).await?;
        Ok(u64::from_str_radix(
            line.split_whitespace().nth(1).unwrap(),
            16,
        )?)
    }

    async fn teardown(self) -> Result<()> {
        let mut rt = self.env.daemon.runtime().await?;
        for pod in &self.pods {
            rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
        }
        let left = rt
            .list_containers(ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        ensure!(left.is_empty(), "pod removal removes its containers");
        let base = self.env.daemon.base_dir().display().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&base) && !m.ends_with("/state/netns"))
            .collect();
        ensure!(mounts.is_empty(), "no mounts left: {mounts:?}");
        for pod in &self.pods {
            for hierarchy in ["memory", "pids", "cpu", "unified"] {
                let cg = Path::new("/sys/fs/cgroup")
                    .join(hierarchy)
                    .join("crius")
                    .join(pod);
                ensure!(!cg.exists(), "pod cgroup left: {}", cg.display());
            }
        }
        Ok(())
    }
}

/// A container as the kubelet sends it for a pod without shareProcessNamespace: pid mode
/// CONTAINER unless the test names a mode (the checks read the container's own PID 1).
fn container(name: &str, image: &str, mut sc: LinuxContainerSecurityContext) -> ContainerConfig {
    sc.namespace_options.get_or_insert(NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    });
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000".into()],
        log_path: format!("{name}.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn busybox(name: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    container(name, "busybox", sc)
}

fn caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> Option<CriCaps> {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Some(CriCaps {
        add_capabilities: v(add),
        drop_capabilities: v(drop),
        add_ambient_capabilities: v(ambient),
    })
}

fn profile(t: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.into(),
    })
}

fn uid(v: i64) -> Option<Int64Value> {
    Some(Int64Value { value: v })
}

/// Bits of the capability sets, as the kernel numbers them.
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;
/// The 14 default capabilities of Docker and containerd.
const DEFAULT_CAPS: u64 = 0xa80425fb;

fn host_cap_bounding() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    Ok(u64::from_str_radix(
        line.split_whitespace().nth(1).unwrap(),
        16,
    )?)
}

async fn capabilities(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let pod = n.pod("caps", PodOpts::default()).await?;
    let sc = LinuxContainerSecurityContext::default;

    let def = n.run(&pod, busybox("default", sc())).await?;
    assert_eq!(n.caps(&def, "CapEff").await?, DEFAULT_CAPS, "{handler}");
    assert_eq!(n.caps(&def, "CapBnd").await?, DEFAULT_CAPS, "{handler}");
    assert_eq!(n.caps(&def, "CapInh").await?, 0, "{handler}");
    n.ok(&def, "touch /tmp/f && chown 1000 /tmp/f").await?;
    let out = n.fails(&def, "ip link set lo mtu 65536").await?;
    assert!(out.contains("not permitted"), "{handler}: {out}");

    // Without the CAP_ prefix, lower case, and ALL.
    let no_chown = n
        .run(
            &pod,
            busybox(
                "no-chown",
                LinuxContainerSecurityContext {
                    capabilities: caps(&["net_admin"], &["CHOWN"], &[]),
                    ..sc()
                },
            ),
        )
        .await?;
    let eff = n.caps(&no_chown, "CapEff").await?;
    assert_eq!(
        eff,
        (DEFAULT_CAPS & !CAP_CHOWN) | CAP_NET_ADMIN,
        "{handler}"
    );
    let out = n
        .fails(&no_chown, "touch /tmp/f && chown 1000 /tmp/f")
        .await?;
    assert!(out.contains("not permitted"), "{handler}: {out}");
    n.ok(&no_chown, "ip link set lo mtu 65536").await?;

    let only = n
        .run(
            &pod,
            busybox(
                "only-chown",
                LinuxContainerSecurityContext {
                    capabilities: caps(&["CAP_CHOWN"], &["ALL"], &[]),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(n.caps(&only, "CapEff").await?, CAP_CHOWN, "{handler}");
    assert_eq!(n.caps(&only, "CapBnd").await?, CAP_CHOWN, "{handler}");

    let all = n
        .run(
            &pod,
            busybox(
                "all",
                LinuxContainerSecurityContext {
                    capabilities: caps(&["ALL"], &[], &[]),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.caps(&all, "CapEff").await?,
        host_cap_bounding()?,
        "{handler}"
    );

    // A non-root user keeps only ambient capabilities across exec.
    let plain = n
        .run(
            &pod,
            busybox(
                "user-plain",
                LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(n.caps(&plain, "CapEff").await?, 0, "{handler}");
    assert_eq!(n.caps(&plain, "CapBnd").await?, DEFAULT_CAPS, "{handler}");
    let amb = n
        .run(
            &pod,
            busybox(
                "user-ambient",
                LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    capabilities: caps(&[], &[], &["NET_BIND_SERVICE"]),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.caps(&amb, "CapAmb").await?,
        CAP_NET_BIND_SERVICE,
        "{handler}"
    );
    assert_eq!(
        n.caps(&amb, "CapEff").await?,
        CAP_NET_BIND_SERVICE,
        "{handler}"
    );
    // Bound to port 80 as uid 1000: only the ambient capability allows it.
    n.ok(&amb, "nc -l -p 80 & p=$!; sleep 0.3; kill $p").await?;
    let out = n
        .sh(&plain, "nc -l -p 80 2>&1 & p=$!; sleep 0.3; kill $p")
        .await?
        .1;
    assert!(out.contains("denied"), "{handler}: {out}");

    let err = n
        .create(
            &pod,
            busybox(
                "bad-cap",
                LinuxContainerSecurityContext {
                    capabilities: caps(&["CAP_FLY"], &[], &[]),
                    ..sc()
                },
            ),
        )
        .await
        .expect_err("unknown capability");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("add_capabilities[0]"),
        "{}",
        err.message()
    );
    n.teardown().await
}

async fn users_groups_and_no_new_privs(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let pod = n.pod("users", PodOpts::default()).await?;
    let sc = LinuxContainerSecurityContext::default;

    let root = n.run(&pod, busybox("root", sc())).await?;
    assert_eq!(
        n.ok(&root, "id").await?,
        "uid=0(root) gid=0(root) groups=0(root)"
    );

    let u = n
        .run(
            &pod,
            busybox(
                "uid",
                LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.ok(&u, "id").await?,
        "uid=1000(user) gid=1000(user) groups=1000(user)",
        "{handler}"
    );

    let named = n
        .run(
            &pod,
            busybox(
                "username",
                LinuxContainerSecurityContext {
                    run_as_username: "user".into(),
                    run_as_group: uid(2000),
                    supplemental_groups: vec![3000, 3001],
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.ok(&named, "id -u; id -g; id -G").await?,
        "1000\n2000\n2000 3000 3001"
    );

    // Group memberships from the image's /etc/group: merged unless the policy is Strict.
    let merge = n
        .run(
            &pod,
            container(
                "merge",
                "suid-probe",
                LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    supplemental_groups: vec![5000],
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(n.ok(&merge, "id -G").await?, "1000 4000 5000", "{handler}");
    let strict = n
        .run(
            &pod,
            container(
                "strict",
                "suid-probe",
                LinuxContainerSecurityContext {
                    run_as_user: uid(1000),
                    supplemental_groups: vec![5000],
                    supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(n.ok(&strict, "id -G").await?, "1000 5000", "{handler}");

    for (name, bad) in [
        (
            "group-only",
            LinuxContainerSecurityContext {
                run_as_group: uid(2000),
                ..sc()
            },
        ),
        (
            "no-such-user",
            LinuxContainerSecurityContext {
                run_as_username: "nobody-here".into(),
                ..sc()
            },
        ),
    ] {
        let err = n.create(&pod, busybox(name, bad)).await.expect_err(name);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
    }

    // no_new_privs: the setuid-root probe gains euid 0 only without it. It runs as the
    // container's own process (ExecSync processes do not carry no_new_privs yet, see the
    // report), which records what it saw in /tmp/probe.
    let probe = |name: &str, nnp: bool| {
        let mut c = container(
            name,
            "suid-probe",
            LinuxContainerSecurityContext {
                run_as_user: uid(1000),
                no_new_privs: nnp,
                ..sc()
            },
        );
        c.command = vec![
            "sh".into(),
            "-c".into(),
            "/bin/suid-probe > /tmp/probe; exec sleep 1000".into(),
        ];
        c
    };
    let suid = n.run(&pod, probe("suid", false)).await?;
    assert_eq!(
        n.ok(&suid, "sleep 0.2; cat /tmp/probe").await?,
        "1000 0",
        "{handler}"
    );
    assert_eq!(
        n.ok(&suid, "grep NoNewPrivs /proc/1/status").await?,
        "NoNewPrivs:\t0"
    );
    let nnp = n.run(&pod, probe("nnp", true)).await?;
    assert_eq!(
        n.ok(&nnp, "sleep 0.2; cat /tmp/probe").await?,
        "1000 1000",
        "{handler}"
    );
    assert_eq!(
        n.ok(&nnp, "grep NoNewPrivs /proc/1/status").await?,
        "NoNewPrivs:\t1"
    );
    n.teardown().await
}

#[allow(deprecated)]
async fn seccomp(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let pod = n.pod("seccomp", PodOpts::default()).await?;
    let sc = LinuxContainerSecurityContext::default;
    let unshare = "busybox unshare -U true";

    // No seccomp field at all: unconfined, as the kubelet's default says.
    let none = n.run(&pod, busybox("none", sc())).await?;
    assert_eq!(
        n.ok(&none, "grep Seccomp: /proc/1/status").await?,
        "Seccomp:\t0"
    );
    n.ok(&none, unshare).await?;

    let rd = n
        .run(
            &pod,
            busybox(
                "runtime-default",
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::RuntimeDefault, ""),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.ok(&rd, "grep Seccomp: /proc/1/status").await?,
        "Seccomp:\t2"
    );
    let out = n.fails(&rd, unshare).await?;
    assert!(out.contains("not permitted"), "{handler}: {out}");
    // Ordinary work still runs under the profile.
    n.ok(
        &rd,
        "mkdir -p /tmp/d && echo x > /tmp/d/f && ls /tmp/d && ps",
    )
    .await?;

    // CAP_SYS_ADMIN unlocks the syscalls gated on it.
    let admin = n
        .run(
            &pod,
            busybox(
                "runtime-default-admin",
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::RuntimeDefault, ""),
                    capabilities: caps(&["SYS_ADMIN"], &[], &[]),
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(
        n.caps(&admin, "CapEff").await? & CAP_SYS_ADMIN,
        CAP_SYS_ADMIN
    );
    n.ok(&admin, unshare).await?;

    // The deprecated string form.
    let old = n
        .run(
            &pod,
            busybox(
                "docker-default",
                LinuxContainerSecurityContext {
                    seccomp_profile_path: "docker/default".into(),
                    ..sc()
                },
            ),
        )
        .await?;
    n.fails(&old, unshare).await?;
    let unconfined = n
        .run(
            &pod,
            busybox(
                "unconfined",
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Unconfined, ""),
                    ..sc()
                },
            ),
        )
        .await?;
    n.ok(&unconfined, unshare).await?;

    // A node-local profile: everything allowed except mkdir, which gets EACCES.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("no-mkdir.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )?;
    let p = path.display().to_string();
    let local = n
        .run(
            &pod,
            busybox(
                "localhost",
                LinuxContainerSecurityContext {
                    seccomp: profile(ProfileType::Localhost, &p),
                    ..sc()
                },
            ),
        )
        .await?;
    let out = n.fails(&local, "mkdir /tmp/x").await?;
    assert!(out.contains("Permission denied"), "{handler}: {out}");
    n.ok(&local, "touch /tmp/y").await?;
    let local_old = n
        .run(
            &pod,
            busybox(
                "localhost-old",
                LinuxContainerSecurityContext {
                    seccomp_profile_path: format!("localhost/{p}"),
                    ..sc()
                },
            ),
        )
        .await?;
    n.fails(&local_old, "mkdir /tmp/x").await?;

    let missing = dir.path().join("missing.json").display().to_string();
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, "{\"defaultAction\": 7")?;
    let invalid = invalid.display().to_string();
    for (name, bad, needle) in [
        (
            "missing-profile",
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &missing),
                ..sc()
            },
            missing.as_str(),
        ),
        (
            "invalid-profile",
            LinuxContainerSecurityContext {
                seccomp: profile(ProfileType::Localhost, &invalid),
                ..sc()
            },
            invalid.as_str(),
        ),
        (
            "bad-path-value",
            LinuxContainerSecurityContext {
                seccomp_profile_path: "strict-please".into(),
                ..sc()
            },
            "seccomp_profile_path",
        ),
    ] {
        let err = n.create(&pod, busybox(name, bad)).await.expect_err(name);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        assert!(err.message().contains(needle), "{name}: {}", err.message());
    }
    n.teardown().await
}

async fn filesystems(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let pod = n.pod("fs", PodOpts::default()).await?;
    let sc = LinuxContainerSecurityContext::default;

    let def = n.run(&pod, busybox("default", sc())).await?;
    n.ok(&def, "touch /rootfs-is-writable").await?;
    // Masked: /proc/kcore and /proc/timer_list read as empty; /proc/sys is read-only; sysfs
    // is read-only.
    assert_eq!(n.ok(&def, "wc -c < /proc/timer_list").await?, "0");
    if Path::new("/proc/kcore").exists() {
        assert_eq!(n.ok(&def, "wc -c < /proc/kcore").await?, "0");
    }
    let out = n.fails(&def, "echo x > /proc/sys/kernel/hostname").await?;
    assert!(out.contains("Read-only"), "{handler}: {out}");
    let out = n.fails(&def, "touch /sys/kernel/x").await?;
    assert!(out.contains("Read-only"), "{handler}: {out}");

    let ro = n
        .run(
            &pod,
            busybox(
                "readonly",
                LinuxContainerSecurityContext {
                    readonly_rootfs: true,
                    ..sc()
                },
            ),
        )
        .await?;
    let out = n.fails(&ro, "touch /x").await?;
    assert!(out.contains("Read-only"), "{handler}: {out}");
    n.ok(&ro, "touch /dev/shm/ok").await?;

    // Explicit lists replace the defaults.
    let custom = n
        .run(
            &pod,
            busybox(
                "custom-paths",
                LinuxContainerSecurityContext {
                    masked_paths: vec!["/proc/cpuinfo".into()],
                    readonly_paths: vec!["/proc/sysrq-trigger".into()],
                    ..sc()
                },
            ),
        )
        .await?;
    assert_eq!(n.ok(&custom, "wc -c < /proc/cpuinfo").await?, "0");
    let len: u64 = n.ok(&custom, "wc -c < /proc/timer_list").await?.parse()?;
    assert!(len > 0, "{handler}: timer_list no longer masked");
    n.teardown().await
}

async fn privileged(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let plain_pod = n.pod("unprivileged", PodOpts::default()).await?;
    let priv_sc = || LinuxContainerSecurityContext {
        privileged: true,
        seccomp: profile(ProfileType::RuntimeDefault, ""),
        ..Default::default()
    };
    let err = n
        .create(&plain_pod, busybox("priv", priv_sc()))
        .await
        .expect_err("privileged container in an unprivileged pod");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("privileged"), "{}", err.message());

    let pod = n
        .pod(
            "privileged",
            PodOpts {
                privileged: true,
                ..Default::default()
            },
        )
        .await?;
    let id = n.run(&pod, busybox("priv", priv_sc())).await?;
    assert_eq!(
        n.caps(&id, "CapEff").await?,
        host_cap_bounding()?,
        "{handler}"
    );
    assert_eq!(
        n.ok(&id, "grep Seccomp: /proc/1/status").await?,
        "Seccomp:\t0"
    );
    // The host's device nodes are there (the container's own /dev/console and /dev/ptmx
    // aside), and usable: the device cgroup lets a host device be read.
    let inside = n.ok(&id, "ls /dev").await?;
    let inside: Vec<&str> = inside.split_whitespace().collect();
    for e in std::fs::read_dir("/dev")?.flatten() {
        use std::os::unix::fs::FileTypeExt;
        let name = e.file_name().to_string_lossy().into_owned();
        let t = e.file_type()?;
        if (t.is_block_device() || t.is_char_device())
            && !["console", "ptmx"].contains(&name.as_str())
        {
            assert!(
                inside.contains(&name.as_str()),
                "{handler}: /dev/{name} missing: {inside:?}"
            );
        }
    }
    n.ok(&id, "test -c /dev/kmsg && head -c 1 /dev/kmsg > /dev/null")
        .await?;
    // Nothing masked or read-only; sysfs and the cgroup fs read-write.
    let len: u64 = n.ok(&id, "wc -c < /proc/timer_list").await?.parse()?;
    assert!(len > 0);
    n.ok(&id, "grep -E ' /sys rw,' /proc/self/mountinfo")
        .await?;
    n.ok(
        &id,
        "grep -E ' /sys/fs/cgroup[^ ]* rw,' /proc/self/mountinfo",
    )
    .await?;
    n.ok(
        &id,
        "grep -E ' /proc/sys ' /proc/self/mountinfo && exit 1 || true",
    )
    .await?;
    n.ok(&id, "busybox unshare -U true").await?;
    n.teardown().await
}

async fn namespaces(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let sc = LinuxContainerSecurityContext::default;

    // Host network: the host's interfaces are visible.
    let host_pod = n
        .pod(
            "hostnet",
            PodOpts {
                host_network: true,
                ..Default::default()
            },
        )
        .await?;
    let id = n.run(&host_pod, busybox("hostnet", sc())).await?;
    let inside = n.ok(&id, "ls /sys/class/net").await?;
    for iface in std::fs::read_dir("/sys/class/net")?.flatten() {
        let name = iface.file_name().to_string_lossy().into_owned();
        assert!(inside.contains(&name), "{handler}: {name} not in {inside}");
    }

    // PID namespaces: POD shares one, CONTAINER does not.
    let pod = n
        .pod(
            "pidns",
            PodOpts {
                pid: NamespaceMode::Pod,
                ..Default::default()
            },
        )
        .await?;
    let with_pid = |mode: NamespaceMode| LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: mode as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut marker = busybox("marker", with_pid(NamespaceMode::Pod));
    marker.command = vec!["sleep".into(), "4242".into()];
    n.run(&pod, marker).await?;
    let shared = n
        .run(&pod, busybox("shared", with_pid(NamespaceMode::Pod)))
        .await?;
    let own = n
        .run(&pod, busybox("own", with_pid(NamespaceMode::Container)))
        .await?;
    n.ok(&shared, "ps -o args | grep -v grep | grep 'sleep 4242'")
        .await?;
    n.ok(
        &own,
        "ps -o args | grep -v grep | grep 'sleep 4242' && exit 1 || true",
    )
    .await?;
    assert_eq!(
        n.ok(&own, "cat /proc/1/cmdline | tr '\\0' ' '").await?,
        "sleep 1000"
    );

    // TARGET: the container joins the target container's PID namespace and sees it as PID 1.
    let mut target = with_pid(NamespaceMode::Target);
    target.namespace_options.as_mut().unwrap().target_id = own.clone();
    let id = n.create(&pod, busybox("target", target)).await?;
    n.env
        .daemon
        .runtime()
        .await?
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    assert_eq!(
        n.ok(&id, "cat /proc/1/cmdline | tr '\\0' ' '").await?,
        "sleep 1000"
    );
    // A target that does not exist is refused naming the field.
    let mut missing = with_pid(NamespaceMode::Target);
    missing.namespace_options.as_mut().unwrap().target_id = "0000000000000000".into();
    let err = n
        .create(&pod, busybox("target-missing", missing))
        .await
        .expect_err("no such target");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    n.teardown().await
}

#[allow(deprecated)]
async fn apparmor_and_selinux(handler: &str) -> Result<()> {
    let mut n = Node::start(handler).await?;
    let pod = n.pod("lsm", PodOpts::default()).await?;
    let sc = LinuxContainerSecurityContext::default;
    let host_apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    let host_selinux = Path::new("/sys/fs/selinux/enforce").exists();

    for (name, ok) in [
        (
            "aa-default",
            LinuxContainerSecurityContext {
                apparmor: profile(ProfileType::RuntimeDefault, ""),
                ..sc()
            },
        ),
        (
            "aa-unconfined",
            LinuxContainerSecurityContext {
                apparmor: profile(ProfileType::Unconfined, ""),
                ..sc()
            },
        ),
        (
            "aa-old-default",
            LinuxContainerSecurityContext {
                apparmor_profile: "runtime/default".into(),
                ..sc()
            },
        ),
    ] {
        let id = n.run(&pod, busybox(name, ok)).await?;
        n.ok(&id, "true").await?;
    }
    if !host_apparmor {
        for (name, bad, field) in [
            (
                "aa-localhost",
                LinuxContainerSecurityContext {
                    apparmor: profile(ProfileType::Localhost, "my-profile"),
                    ..sc()
                },
                "apparmor.localhost_ref",
            ),
            (
                "aa-old-localhost",
                LinuxContainerSecurityContext {
                    apparmor_profile: "localhost/my-profile".into(),
                    ..sc()
                },
                "apparmor_profile",
            ),
        ] {
            let err = n.create(&pod, busybox(name, bad)).await.expect_err(name);
            assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
            assert!(
                err.message().contains(field) && err.message().contains("my-profile"),
                "{}",
                err.message()
            );
        }
    }
    if !host_selinux {
        let bad = LinuxContainerSecurityContext {
            selinux_options: Some(SeLinuxOption {
                r#type: "container_t".into(),
                level: "s0:c1,c2".into(),
                ..Default::default()
            }),
            ..sc()
        };
        let err = n
            .create(&pod, busybox("selinux", bad))
            .await
            .expect_err("selinux");
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(
            err.message().contains("selinux_options"),
            "{}",
            err.message()
        );
    }
    n.teardown().await
}

macro_rules! for_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod runc {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name("runc").await
                }
            )*
        }
        mod crun {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name("crun").await
                }
            )*
        }
    };
}

for_both_runtimes!(
    capabilities,
    users_groups_and_no_new_privs,
    seccomp,
    filesystems,
    privileged,
    namespaces,
    apparmor_and_selinux,
);
