//! The gRPC services of criusd.
//!
//! One file per RPC under `runtime/` and `image/`: each validates its request, handles
//! idempotency, and calls the core crates. Domain errors become `tonic::Status` in one place,
//! [`status`]. Every RPC is logged by one tower layer, [`logging::RpcLogLayer`].

mod context;
mod internal;
pub mod logging;
pub mod status;

mod image;
mod image_source;
mod runtime;
mod streaming;

use std::future::Future;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use context::{Context, VersionInfo};

/// Largest message accepted or sent: ListContainers on a busy node can be large (kubelet's
/// own limit is 16 MiB).
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Serves every service on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight RPCs finish (the caller bounds how long that may take).
pub async fn serve(
    ctx: Context,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let ctx = std::sync::Arc::new(ctx);
    // The streaming server lives as long as the CRI server; sessions end with the process.
    let _streaming = streaming::spawn(&ctx).map(AbortOnDrop);
    let runtime = RuntimeServiceServer::new(runtime::Runtime::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(image::Images::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    metrics_states(&ctx);
    let internal =
        crius_proto::v1::images_server::ImagesServer::new(internal::InternalImages::new(ctx));
    tonic::transport::Server::builder()
        .layer(logging::RpcLogLayer)
        .layer(crius_metrics::GrpcMetricsLayer)
        .add_service(runtime)
        .add_service(images)
        .add_service(internal)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// Pods and containers by state for `/metrics`, counted from the stores on each scrape.
fn metrics_states(ctx: &std::sync::Arc<Context>) {
    let ctx = std::sync::Arc::downgrade(ctx);
    crius_metrics::global().set_state_source(move || {
        let Some(ctx) = ctx.upgrade() else {
            return crius_metrics::StateCounts::default();
        };
        let mut counts = crius_metrics::StateCounts::default();
        let mut pods = std::collections::BTreeMap::<&str, i64>::new();
        for p in ctx.pods.list(&crius_runtime::PodFilter::default()) {
            let state = match p.state {
                crius_runtime::PodState::Ready => "ready",
                crius_runtime::PodState::NotReady => "notready",
            };
            *pods.entry(state).or_default() += 1;
        }
        let mut containers = std::collections::BTreeMap::<&str, i64>::new();
        for c in ctx
            .containers
            .list(&crius_runtime::ContainerFilter::default())
        {
            let state = match c.state {
                crius_runtime::ContainerState::Created => "created",
                crius_runtime::ContainerState::Running => "running",
                crius_runtime::ContainerState::Exited => "exited",
            };
            *containers.entry(state).or_default() += 1;
        }
        counts.pods = pods.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        counts.containers = containers
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect();
        counts
    });
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
