//! Where a container's cgroup is: named by the pod's cgroup driver (see `crate::cgroups`).

use super::*;

impl ContainerManager {
    /// The OCI `linux.cgroupsPath` of container `id` in `pod`.
    pub(super) fn cgroups_path(&self, pod: &PodRecord, id: &str) -> Result<String, RuntimeError> {
        Ok(crate::cgroups::of_pod(&self.pods, pod)?.container_cgroups_path(id))
    }

    /// Whether runc/crun run with `--systemd-cgroup`.
    pub(super) fn systemd_cgroup(&self) -> bool {
        crate::cgroups::systemd(&self.pods)
    }

    /// A new `oom_score_adj` for a running container's processes (`runc update` has none),
    /// raised to the daemon's own floor as at create.
    pub(super) fn update_oom_score_adj(
        &self,
        pod: &PodRecord,
        id: &str,
        value: i64,
    ) -> Result<(), RuntimeError> {
        if !(-1000..=1000).contains(&value) {
            return Err(invalid(
                "linux.oom_score_adj",
                format!("{value} is outside [-1000, 1000]"),
            ));
        }
        let value = self.oom_floor.map_or(value, |f| value.max(f));
        let Some(dir) = container_dir(&self.pods, pod, id) else {
            return Ok(());
        };
        let n = crate::cgroups::set_oom_score_adj(self.pods.cgroups().as_ref(), &dir, value)
            .map_err(io_err("setting oom_score_adj of the processes of", &dir))?;
        tracing::debug!(container_id = %id, processes = n, value, "oom_score_adj updated");
        Ok(())
    }
}

/// The pod's cgroup directory (for stats); `None` when its parent is not valid any more.
pub(crate) fn pod_dir(pods: &PodManager, pod: &PodRecord) -> Option<String> {
    crate::cgroups::of_pod(pods, pod).ok().map(|c| c.parent_dir)
}

/// A container's cgroup directory (for stats and updates).
pub(crate) fn container_dir(pods: &PodManager, pod: &PodRecord, id: &str) -> Option<String> {
    crate::cgroups::of_pod(pods, pod)
        .ok()
        .map(|c| c.container_dir(id))
}
