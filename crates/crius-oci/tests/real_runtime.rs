//! Runs generated specs with the real runc and crun. Needs root, busybox-static at
//! /bin/busybox and cgroup v1 (memory controller at /sys/fs/cgroup/memory); skips otherwise.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_oci::spec::{SpecFeatures, linux_resources};
use crius_oci::{
    CliRuntime, ContainerIo, ImageConfig, NsSource, OciRuntime, PodFiles, PodNamespaces,
    RuntimeError, RuntimeStatus, SpecInput, container_spec, exec_process,
};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    Mount, PodSandboxConfig, PodSandboxMetadata,
};
use nix::sys::signal::Signal;

const BUSYBOX: &str = "/bin/busybox";
const MEMORY_CGROUP: &str = "/sys/fs/cgroup/memory";

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() || !Path::new(MEMORY_CGROUP).exists() {
        eprintln!("skipping: needs {BUSYBOX} and a cgroup v1 memory hierarchy");
        return false;
    }
    true
}

/// crun 1.8 refuses a hybrid cgroup layout without a v1 hugetlb hierarchy; mount one if the
/// host has none. It is left mounted (harmless, and other tests may rely on it).
fn ensure_hugetlb_hierarchy() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/cgroup/hugetlb"))
    {
        return;
    }
    std::fs::create_dir_all("/sys/fs/cgroup/hugetlb").unwrap();
    nix::mount::mount(
        Some("cgroup"),
        "/sys/fs/cgroup/hugetlb",
        Some("cgroup"),
        nix::mount::MsFlags::empty(),
        Some("hugetlb"),
    )
    .unwrap();
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in [
        "bin", "etc", "home", "out", "ro", "proc", "sys", "dev", "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "echo", "cat", "id", "sleep", "true", "touch", "pwd", "hostname", "grep",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
    rootfs
}

/// Undoes everything a scenario leaves behind, even when an assertion fails half-way.
struct Cleanup {
    runtime: CliRuntime,
    id: String,
    cgroup_parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.runtime.kill(&self.id, Signal::SIGKILL, true);
        let _ = self.runtime.delete(&self.id, true);
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let parent = e.path().join(self.cgroup_parent.trim_start_matches('/'));
                let _ = std::fs::remove_dir(parent.join(&self.id));
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lifecycle(name: &str, path: &str) {
    if !can_run() {
        return;
    }
    if !Path::new(path).exists() {
        eprintln!("skipping: {path} not installed");
        return;
    }
    ensure_hugetlb_hierarchy();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let out = tmp.path().join("out");
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&ro).unwrap();
    // The container runs as uid 1000 and must be able to write its reports.
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    let runtime = CliRuntime::new(name, path, tmp.path().join("state"), false);
    let id = format!("crius-oci-{name}-{}", std::process::id());
    let cgroup_parent = format!("/crius-oci-test-{name}-{}", std::process::id());
    let cgroups_path = format!("{cgroup_parent}/{id}");
    let _cleanup = Cleanup {
        runtime: runtime.clone(),
        id: id.clone(),
        cgroup_parent,
    };

    let image = ImageConfig {
        cmd: vec!["/bin/false-never-used".into()],
        env: vec!["FOO=image".into(), "KEEP=yes".into()],
        user: "app".into(),
        ..ImageConfig::default()
    };
    let script = "id > /out/id; echo \"$FOO $KEEP\" > /out/env; pwd > /out/cwd; \
                  touch /ro/x 2>/dev/null; echo $? > /out/ro_rc; hostname > /out/hostname; \
                  grep CapBnd /proc/self/status > /out/capbnd; echo ok > /out/done; \
                  exec sleep 1000";
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        working_dir: "/home".into(),
        envs: vec![KeyValue {
            key: "FOO".into(),
            value: "cri".into(),
        }],
        mounts: vec![
            Mount {
                container_path: "/out".into(),
                host_path: out.display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/ro".into(),
                host_path: ro.display().to_string(),
                readonly: true,
                ..Default::default()
            },
        ],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "pod".into(),
            uid: "u".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let features = runtime.features().unwrap();
    let input = SpecInput {
        container: &container,
        sandbox: &sandbox,
        sandbox_id: "sb",
        image: &image,
        rootfs: &rootfs,
        // No pod yet: the container gets namespaces of its own.
        namespaces: PodNamespaces {
            network: NsSource::New,
            ipc: NsSource::New,
            uts: NsSource::New,
            pid: NsSource::New,
            cgroup: NsSource::Host,
        },
        cgroups_path: cgroups_path.clone(),
        pod_files: PodFiles::default(),
        hostname: "crius-test".into(),
        oom_score_adj_floor: None,
        features: SpecFeatures::detect(&features),
    };
    let spec = container_spec(&input).unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    assert_eq!(runtime.state(&id).unwrap(), None);
    let stdout = File::create(tmp.path().join("stdout")).unwrap();
    let stderr = File::create(tmp.path().join("stderr")).unwrap();
    let io = ContainerIo {
        stdin: None,
        stdout: Some(OwnedFd::from(stdout)),
        stderr: Some(OwnedFd::from(stderr)),
    };
    let pid_file = bundle.join("pid");
    runtime.create(&id, &bundle, &pid_file, None, io).unwrap();
    let state = runtime.state(&id).unwrap().unwrap();
    assert_eq!(state.status, RuntimeStatus::Created);
    assert!(state.pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        state.pid.to_string()
    );

    runtime.start(&id).unwrap();
    wait_for("the container's reports", || out.join("done").exists());
    assert_eq!(
        runtime.state(&id).unwrap().unwrap().status,
        RuntimeStatus::Running
    );

    let read = |f: &str| {
        std::fs::read_to_string(out.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let id_out = read("id");
    assert!(
        id_out.starts_with("uid=1000(app) gid=1000(app)"),
        "{id_out}"
    );
    assert!(id_out.contains("groups=1000(app),2000(extra)"), "{id_out}");
    assert_eq!(read("env"), "cri yes");
    assert_eq!(read("cwd"), "/home");
    assert_ne!(read("ro_rc"), "0", "the read-only mount was writable");
    assert!(!ro.join("x").exists());
    assert_eq!(read("hostname"), "crius-test");
    // The 14 default capabilities, as a bounding-set mask.
    assert_eq!(read("capbnd"), "CapBnd:\t00000000a80425fb");

    // An exec runs as the container's user with its env and cwd.
    let process = exec_process(
        spec.process().as_ref().unwrap(),
        &[
            "/bin/sh".into(),
            "-c".into(),
            "id -u; echo $FOO; pwd".into(),
        ],
        false,
    )
    .unwrap();
    let process_json = bundle.join("exec.json");
    std::fs::write(&process_json, serde_json::to_vec(&process).unwrap()).unwrap();
    let argv = runtime.exec_args(&id, &process_json, None, None, false);
    assert_eq!(argv[0], path);
    let exec = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(
        exec.status.success(),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "1000\ncri\n/home\n");

    let limit_file = Path::new(MEMORY_CGROUP)
        .join(cgroups_path.trim_start_matches('/'))
        .join("memory.limit_in_bytes");
    let limit = || {
        std::fs::read_to_string(&limit_file)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(limit(), 64 << 20);
    let update = linux_resources(
        &LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        },
        SpecFeatures::detect(&features),
    )
    .unwrap();
    runtime.update_resources(&id, &update).unwrap();
    assert_eq!(limit(), 128 << 20);

    runtime.kill(&id, Signal::SIGKILL, false).unwrap();
    wait_for("the container to stop", || {
        runtime.state(&id).unwrap().unwrap().status == RuntimeStatus::Stopped
    });
    // Signalling a stopped container is not an error.
    runtime.kill(&id, Signal::SIGTERM, false).unwrap();
    runtime.delete(&id, false).unwrap();
    assert_eq!(runtime.state(&id).unwrap(), None);
    runtime.delete(&id, false).unwrap();
    assert!(
        !limit_file.exists(),
        "the container's cgroup was not removed"
    );
    match runtime.start(&id) {
        Err(RuntimeError::NotFound { .. }) => {}
        other => panic!("start of a deleted container: {other:?}"),
    }
}

fn create_error_carries_stderr(name: &str, path: &str) {
    if !can_run() || !Path::new(path).exists() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runtime = CliRuntime::new(name, path, tmp.path().join("state"), false);
    // An empty bundle: no config.json.
    let err = runtime
        .create(
            "crius-oci-bad",
            tmp.path(),
            &tmp.path().join("pid"),
            None,
            ContainerIo::default(),
        )
        .unwrap_err();
    match &err {
        RuntimeError::Command { stderr, .. } => {
            assert!(stderr.contains("config.json"), "{name}: {stderr}")
        }
        other => panic!("{name}: unexpected {other:?}"),
    }
    runtime.delete("crius-oci-bad", true).unwrap();
}

#[test]
fn runc_lifecycle() {
    lifecycle("runc", "/usr/bin/runc");
}

#[test]
fn crun_lifecycle() {
    lifecycle("crun", "/usr/bin/crun");
}

#[test]
fn runc_create_error() {
    create_error_carries_stderr("runc", "/usr/bin/runc");
}

#[test]
fn crun_create_error() {
    create_error_carries_stderr("crun", "/usr/bin/crun");
}
