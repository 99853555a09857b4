//! The runtime core: every CRI operation that spans pods, containers and images is sequenced
//! here, so that an RPC handler is "validate, one call into [`Runtime`], convert".
//!
//! Locking rule: a pod's key lock (in [`PodManager`]) is held across container creation and
//! across stopping or removing the pod, so a CreateContainer can never put a container into a
//! pod that StopPodSandbox or RemovePodSandbox is tearing down. Order: pod lock, then a
//! container's lock, never the reverse.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::ContainerConfig;

use crate::containers::{
    ContainerFilter, ContainerManager, ContainerRecord, ImageInfo, ProcessUser,
};
use crate::error::{RuntimeError, invalid};
use crate::pods::PodManager;
use crate::record::PodRecord;
use crate::stats::StatsCollector;

/// Containers still running when their pod is stopped are killed at once, as containerd does:
/// the kubelet has already stopped them with the pod's grace period.
const POD_STOP_GRACE: Duration = Duration::ZERO;

/// Where container images come from: the image store in criusd, a fake in tests.
pub trait ImageSource: Send + Sync {
    /// The image `name` (reference, id or unique id prefix); `None` when it is not present.
    fn image_info(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError>;
}

/// A container as ContainerStatus shows it.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    pub user: Option<ProcessUser>,
    /// The generated OCI spec, read only when asked for (verbose status).
    pub spec: Option<serde_json::Value>,
}

/// Bytes and inodes used on a filesystem by one kind of data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

pub struct Runtime {
    pub pods: Arc<PodManager>,
    pub containers: Arc<ContainerManager>,
    pub stats: Arc<StatsCollector>,
    images: Arc<dyn ImageSource>,
}

impl Runtime {
    pub fn new(
        pods: Arc<PodManager>,
        containers: Arc<ContainerManager>,
        images: Arc<dyn ImageSource>,
    ) -> Runtime {
        let stats = Arc::new(StatsCollector::new(pods.clone(), containers.clone()));
        Runtime {
            pods,
            containers,
            stats,
            images,
        }
    }

    /// StopPodSandbox: the pod's containers first, then what the pod holds. Stopping a
    /// stopped or unknown pod succeeds.
    pub fn stop_pod(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.pods.find(id)? else {
            return Ok(());
        };
        let _pod = self.pods.lock_pod(&pod.id);
        for c in self.containers.in_pod(&pod.id) {
            self.containers.stop(&c, POD_STOP_GRACE)?;
        }
        self.pods.stop_locked(&pod.id)
    }

    /// RemovePodSandbox: the pod's containers, the pod's cgroup, then the pod. Removing an
    /// unknown pod succeeds.
    pub fn remove_pod(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(pod) = self.pods.find(id)? else {
            return Ok(());
        };
        let _pod = self.pods.lock_pod(&pod.id);
        for c in self.containers.in_pod(&pod.id) {
            self.containers.stop(&c, POD_STOP_GRACE)?;
            self.containers.remove(&c)?;
        }
        self.containers.release_pod(&pod);
        self.pods.remove_locked(&pod.id)
    }

    /// CreateContainer: resolves the image, then creates the container under the pod's lock.
    pub fn create_container(
        &self,
        pod_id: &str,
        config: ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(invalid("config.image.image", "must not be empty"));
        }
        let image =
            self.images
                .image_info(&image_name)?
                .ok_or_else(|| RuntimeError::ImageNotFound {
                    name: image_name.clone(),
                })?;
        let pod = self.pods.get(pod_id)?;
        let _pod = self.pods.lock_pod(&pod.id);
        self.containers.create(&pod.id, config, image, image_name)
    }

    /// ContainerStatus: the container (by id or unique prefix) brought up to date with its
    /// monitor; `verbose` adds its OCI spec.
    pub fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerView, RuntimeError> {
        let found = self.containers.get(id)?;
        Ok(self.view(self.containers.refresh(&found.id)?, verbose))
    }

    fn view(&self, record: ContainerRecord, verbose: bool) -> ContainerView {
        // Records of older versions have no user: their spec is read for it.
        let spec = (verbose || record.user.is_none()).then(|| read_spec(&record.bundle));
        let user = record
            .user
            .clone()
            .or_else(|| spec.as_ref().and_then(ProcessUser::of_spec));
        ContainerView {
            spec: spec.filter(|_| verbose),
            record,
            user,
        }
    }

    /// PodSandboxStatus (and each container event): the pod (by id or unique prefix) and
    /// every container of it, brought up to date.
    pub fn pod_status(
        &self,
        pod_id: &str,
    ) -> Result<(PodRecord, Vec<ContainerView>), RuntimeError> {
        let pod = self.pods.get(pod_id)?;
        let filter = ContainerFilter {
            pod_id: Some(pod.id.clone()),
            ..Default::default()
        };
        let containers = self
            .containers
            .list(&filter)
            .into_iter()
            .filter(|c| c.pod_id == pod.id)
            .map(|record| self.view(record, false))
            .collect();
        Ok((pod, containers))
    }

    /// Bytes and inodes of every container's writable layer (ImageFsInfo's container
    /// filesystem), from the stats collector's short-lived cache of each layer.
    pub fn container_fs_usage(&self) -> FsUsage {
        let total = self.stats.writable_layers();
        FsUsage {
            mountpoint: self.containers.layers_root().to_path_buf(),
            bytes: total.bytes,
            inodes: total.inodes,
        }
    }
}

/// The generated OCI spec of a container (null when it cannot be read).
fn read_spec(bundle: &Path) -> serde_json::Value {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
