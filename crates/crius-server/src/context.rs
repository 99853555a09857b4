use std::sync::{Arc, RwLock};

use crius_config::Config;
use crius_image::{ImageStore, Puller};
use crius_runtime::{ContainerManager, PodManager};

/// Version of the build, stamped by build.rs.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
}

/// Everything the RPC handlers share.
pub struct Context {
    pub config: Config,
    pub version: VersionInfo,
    pub images: Arc<ImageStore>,
    pub puller: Arc<Puller>,
    pub pods: Arc<PodManager>,
    pub containers: Arc<ContainerManager>,
    /// The pod CIDR last given by UpdateRuntimeConfig.
    pub pod_cidr: RwLock<String>,
}

impl Context {
    pub fn new(
        config: Config,
        version: VersionInfo,
        images: Arc<ImageStore>,
        puller: Arc<Puller>,
        pods: Arc<PodManager>,
        containers: Arc<ContainerManager>,
    ) -> Context {
        Context {
            config,
            version,
            images,
            puller,
            pods,
            containers,
            pod_cidr: RwLock::new(String::new()),
        }
    }
}
