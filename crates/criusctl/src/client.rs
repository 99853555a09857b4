//! Connecting to a CRI endpoint over its Unix socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use crius_proto::v1::images_client::ImagesClient;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{DEFAULT_ENDPOINT, GlobalOpts};

/// How long to wait for the socket to accept before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Picks the endpoint: the flag or `CRIUS_ENDPOINT` (both via clap), then crictl's
/// `CONTAINER_RUNTIME_ENDPOINT`, then the crius default.
pub fn resolve_endpoint(flag: Option<&str>, crictl_env: Option<&str>) -> String {
    flag.or(crictl_env)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_ENDPOINT)
        .to_owned()
}

/// Turns `unix:///path` or a plain path into the socket path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = match endpoint.split_once("://") {
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            bail!(
                "unsupported endpoint scheme {scheme:?} in {endpoint:?} (only unix:// is supported)"
            )
        }
        None => endpoint,
    };
    if path.is_empty() {
        bail!("endpoint {endpoint:?} has no socket path");
    }
    Ok(PathBuf::from(path))
}

/// Opens a channel to the socket behind `endpoint`.
pub async fn connect(endpoint: &str) -> Result<Channel> {
    let path = socket_path(endpoint)?;
    // The URI is a placeholder: the connector below ignores it and dials the socket.
    Endpoint::try_from("http://[::]:50051")?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// What every command gets: where to connect and how chatty to be.
pub struct Context {
    pub runtime_endpoint: String,
    pub image_endpoint: String,
    pub debug: bool,
}

impl Context {
    pub fn new(opts: &GlobalOpts) -> Self {
        let crictl_env = std::env::var("CONTAINER_RUNTIME_ENDPOINT").ok();
        let runtime_endpoint =
            resolve_endpoint(opts.runtime_endpoint.as_deref(), crictl_env.as_deref());
        let image_endpoint = opts
            .image_endpoint
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| runtime_endpoint.clone());
        Self {
            runtime_endpoint,
            image_endpoint,
            debug: opts.debug,
        }
    }

    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(
            connect(&self.runtime_endpoint).await?,
        ))
    }

    pub async fn image(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(
            connect(&self.image_endpoint).await?,
        ))
    }

    /// crius's own image service, served on the image endpoint.
    pub async fn crius_images(&self) -> Result<ImagesClient<Channel>> {
        Ok(ImagesClient::new(connect(&self.image_endpoint).await?))
    }

    /// With `--debug`, shows a request or response on stderr.
    pub fn trace(&self, what: &str, value: &impl std::fmt::Debug) {
        if self.debug {
            eprintln!("DEBU[criusctl] {what}: {value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_precedence() {
        assert_eq!(resolve_endpoint(None, None), DEFAULT_ENDPOINT);
        assert_eq!(
            resolve_endpoint(None, Some("unix:///run/containerd/containerd.sock")),
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(
            resolve_endpoint(Some("/a.sock"), Some("/b.sock")),
            "/a.sock"
        );
        assert_eq!(resolve_endpoint(None, Some("")), DEFAULT_ENDPOINT);
    }

    #[test]
    fn socket_paths() {
        assert_eq!(
            socket_path("unix:///run/crius/crius.sock").unwrap(),
            PathBuf::from("/run/crius/crius.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(
            socket_path("relative.sock").unwrap(),
            PathBuf::from("relative.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1234").is_err());
        assert!(socket_path("unix://").is_err());
        assert!(socket_path("").is_err());
    }
}
