use std::sync::Arc;

use crius_config::Config;
use crius_image::{ImageStore, Puller};
use crius_runtime::{CniNetwork, ContainerManager, PodManager, Runtime, StatsCollector};

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
    /// The runtime core: every RPC that sequences pods, containers and images calls it.
    pub runtime: Arc<Runtime>,
    pub pods: Arc<PodManager>,
    pub containers: Arc<ContainerManager>,
    pub network: Arc<CniNetwork>,
    pub stats: Arc<StatsCollector>,
    /// Mints the URLs of Exec, Attach and PortForward; `None` until the daemon binds it.
    pub streaming: Option<crius_streaming::Streaming>,
    /// Its listener, until [`crate::serve`] starts serving it.
    pub(crate) streaming_listener: std::sync::Mutex<Option<crius_streaming::Listener>>,
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
        let runtime = Arc::new(Runtime::new(
            pods.clone(),
            containers.clone(),
            Arc::new(crate::image_source::StoreImages(images.clone())),
        ));
        let stats = runtime.stats.clone();
        Context {
            runtime,
            config,
            version,
            images,
            puller,
            pods,
            containers,
            network,
            stats,
            streaming: None,
            streaming_listener: std::sync::Mutex::new(None),
        }
    }

    /// The streaming server the URLs of Exec, Attach and PortForward point to.
    pub fn with_streaming(
        mut self,
        streaming: crius_streaming::Streaming,
        listener: crius_streaming::Listener,
    ) -> Context {
        self.streaming = Some(streaming);
        self.streaming_listener = std::sync::Mutex::new(Some(listener));
        self
    }
}
