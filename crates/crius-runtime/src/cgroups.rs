//! Pods and containers on the cgroup manager (crius-cgroups): where their cgroups are, the
//! sandbox's `resources` and `overhead`, and the pod's own processes joining its cgroup.

use std::path::Path;

use crius_cgroups::{CgroupError, CgroupManager, Driver, PodCgroup, Resources};
use k8s_cri::v1::{LinuxContainerResources, PodSandboxConfig};
use tracing::{debug, warn};

use crate::error::RuntimeError;
use crate::pods::PodManager;
use crate::record::PodRecord;

pub(crate) fn cgroup_err(pod_id: &str) -> impl FnOnce(CgroupError) -> RuntimeError + '_ {
    move |source| RuntimeError::Cgroup {
        pod_id: pod_id.to_string(),
        source,
    }
}

fn cgroup_parent(config: &PodSandboxConfig) -> &str {
    config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or_default()
}

/// The pod's cgroups for a config, by the configured driver; a parent in the other driver's
/// form is InvalidArgument.
pub(crate) fn for_config(
    cg: &dyn CgroupManager,
    config: &PodSandboxConfig,
    pod_id: &str,
) -> Result<PodCgroup, RuntimeError> {
    cg.pod_cgroup(cgroup_parent(config), pod_id)
        .map_err(cgroup_err(pod_id))
}

/// The pod's cgroups from its record.
pub(crate) fn of_pod(pods: &PodManager, pod: &PodRecord) -> Result<PodCgroup, RuntimeError> {
    for_config(pods.cgroups().as_ref(), &pod.config, &pod.id)
}

/// Whether containers are made by the runtime's systemd driver (`--systemd-cgroup`).
pub(crate) fn systemd(pods: &PodManager) -> bool {
    pods.cgroups().driver() == Driver::Systemd
}

/// CRI limits in the manager's terms (zero is "not set" throughout the CRI).
pub fn resources_from_cri(r: &LinuxContainerResources) -> Resources {
    let set = |v: i64| (v != 0).then_some(v);
    Resources {
        cpu_shares: set(r.cpu_shares).map(|v| v.max(0) as u64),
        cpu_quota: set(r.cpu_quota),
        cpu_period: set(r.cpu_period).map(|v| v.max(0) as u64),
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
        memory_limit: set(r.memory_limit_in_bytes),
        memory_swap: set(r.memory_swap_limit_in_bytes),
        hugepages: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        pids_limit: None,
        unified: r.unified.clone().into_iter().collect(),
    }
}

/// The sandbox's `resources` (for the whole pod) and `overhead` (for its own processes).
pub(crate) fn sandbox_limits(config: &PodSandboxConfig) -> (Resources, Resources) {
    let linux = config.linux.as_ref();
    let get = |r: Option<&LinuxContainerResources>| r.map(resources_from_cri).unwrap_or_default();
    (
        get(linux.and_then(|l| l.resources.as_ref())),
        get(linux.and_then(|l| l.overhead.as_ref())),
    )
}

/// Moves one of the pod's own processes (its monitor) into the pod's cgroup. A failure is
/// logged: the process works anyway, only its accounting is off.
pub(crate) fn join(pods: &PodManager, pod: &PodRecord, pid: i32) {
    let result = of_pod(pods, pod).and_then(|c| {
        let (_, overhead) = sandbox_limits(&pod.config);
        pods.cgroups()
            .join_pod(&c, pid, &overhead)
            .map_err(cgroup_err(&pod.id))
    });
    match result {
        Ok(()) => debug!(pod_id = %pod.id, pid, "joined the pod cgroup"),
        Err(e) => warn!(pod_id = %pod.id, pid, error = %e, "could not join the pod cgroup"),
    }
}

/// Sets `oom_score_adj` of every process in a container's cgroup (the runtime's `update`
/// does not touch it). Processes that exit meanwhile are skipped.
pub(crate) fn set_oom_score_adj(
    cg: &dyn CgroupManager,
    container_dir: &str,
    value: i64,
) -> Result<usize, std::io::Error> {
    let h = cg.hierarchy();
    let Some((dir, _)) = h
        .dir("pids", container_dir)
        .or_else(|| h.dir("memory", container_dir))
    else {
        return Ok(0);
    };
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    let mut n = 0;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let file = Path::new("/proc")
            .join(pid.to_string())
            .join("oom_score_adj");
        match std::fs::write(&file, value.to_string()) {
            Ok(()) => n += 1,
            Err(e)
                if e.raw_os_error() == Some(libc::ESRCH)
                    || e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// SIGKILLs every process in a container's cgroup, as the pids (else memory) hierarchy lists
/// them; returns how many were signalled. runc's `kill --all` is not enough on cgroup v1 with
/// its systemd driver: it lists the processes in the devices hierarchy only, and systemd can
/// leave a new scope's processes in its slice's devices cgroup (when it creates the slices
/// with the scope), so runc finds none and signals nothing.
pub(crate) fn kill_processes(cg: &dyn CgroupManager, container_dir: &str) -> usize {
    let h = cg.hierarchy();
    let Some((dir, _)) = h
        .dir("pids", container_dir)
        .or_else(|| h.dir("memory", container_dir))
    else {
        return 0;
    };
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return 0;
    };
    let n = procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .filter(|&pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .count();
    if n > 0 {
        debug!(
            cgroup = container_dir,
            processes = n,
            "killed what the runtime's kill left"
        );
    }
    n
}

/// Container limits this host can apply: values in range, `unified` only on cgroup v2 (runc
/// and crun would fail later with a less clear message, or drop it).
pub(crate) fn check_resources(
    cg: &dyn CgroupManager,
    r: &LinuxContainerResources,
    container_id: &str,
) -> Result<(), RuntimeError> {
    let err = |source| RuntimeError::ContainerCgroup {
        id: container_id.to_string(),
        source,
    };
    let r = resources_from_cri(r);
    r.validate().map_err(err)?;
    if !r.unified.is_empty() && !cg.hierarchy().is_v2_only() {
        let only_unified = Resources {
            unified: r.unified,
            ..Resources::default()
        };
        only_unified.file_writes(cg.hierarchy()).map_err(err)?;
    }
    Ok(())
}
