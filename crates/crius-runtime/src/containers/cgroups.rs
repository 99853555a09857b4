//! Where a container's and a pod's cgroups are.

use super::*;

/// cgroupfs paths: under the pod's cgroup_parent (set by the kubelet), else under /crius.
pub(crate) fn cgroups_path(pod: &PodRecord, id: &str) -> String {
    format!(
        "{}/crius-{id}",
        pod_cgroup_parent(pod).trim_end_matches('/')
    )
}

/// The cgroup a pod's containers are created under.
pub(crate) fn pod_cgroup_parent(pod: &PodRecord) -> String {
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if parent.is_empty() {
        default_cgroup_parent(pod)
    } else {
        parent
    }
}

pub(super) fn default_cgroup_parent(pod: &PodRecord) -> String {
    format!("{}/{}", rootfs::CRIUS_CGROUP, pod.id)
}
