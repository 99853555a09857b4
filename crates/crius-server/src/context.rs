use std::sync::Arc;

use crius_config::Config;
use crius_image::{ImageStore, Puller};
use crius_runtime::{CniNetwork, ContainerManager, PodManager, StatsCollector};

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
    pub network: Arc<CniNetwork>,
    pub stats: Arc<StatsCollector>,
}

impl Context {
    pub fn new(
        config: Config,
        version: VersionInfo,
        images: Arc<ImageStore>,
        puller: Arc<Puller>,
        pods: Arc<PodManager>,
        containers: Arc<ContainerManager>,
        network: Arc<CniNetwork>,
    ) -> Context {
        let stats = Arc::new(StatsCollector::new(pods.clone(), containers.clone()));
        Context {
            config,
            version,
            images,
            puller,
            pods,
            containers,
            network,
            stats,
        }
    }
}
