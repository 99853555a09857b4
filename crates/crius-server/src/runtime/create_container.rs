//! CreateContainer: an overlay rootfs on the image's layers, an OCI spec, and `create` by the
//! pod's monitor.

use crius_runtime::ImageInfo;
use k8s_cri::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, invalid, to_status};

pub async fn handle(
    ctx: &Context,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    tracing::Span::current().record("pod_id", req.pod_sandbox_id.as_str());
    let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(invalid("config.image.image", "must not be empty"));
    }
    let img = ctx
        .images
        .resolve(&image_name)
        .map_err(to_status)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "config.image.image: image {image_name:?} is not present (pull it first)"
            ))
        })?;
    let info = ImageInfo {
        id: img.id.clone(),
        reference: img
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| img.id.clone()),
        tag: img.repo_tags.first().cloned(),
        config: ctx.images.config(&img).map_err(to_status)?,
        layers_dir: ctx.images.layers_dir().to_path_buf(),
        lower: ctx.images.lower_dirs(&img),
    };
    let containers = ctx.containers.clone();
    let pod_id = req.pod_sandbox_id;
    // req.sandbox_config is the caller's copy and is ignored: privileged and sysctl decisions
    // come from the pod as it was created, or a client could claim a privileged pod.
    let id = blocking(move || containers.create(&pod_id, config, info, image_name)).await?;
    tracing::Span::current().record("container_id", id.as_str());
    Ok(CreateContainerResponse { container_id: id })
}
