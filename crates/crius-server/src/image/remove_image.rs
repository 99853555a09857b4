//! RemoveImage: by id, tag or digest, with every layer and blob nothing else uses. Removing
//! an image that is not there succeeds (the CRI requires idempotence). An image a container
//! still runs on is refused, as CRI-O does: its layers are that container's root filesystem.

use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::{blocking, to_status};

pub async fn handle(ctx: &Context, req: RemoveImageRequest) -> Result<RemoveImageResponse, Status> {
    let name = super::image_name("image", req.image.as_ref())?.to_string();
    if let Some(img) = ctx.images.resolve(&name).map_err(to_status)? {
        let users = ctx.containers.list(&Default::default());
        if let Some(c) = users.iter().find(|c| c.image_id == img.id) {
            return Err(Status::failed_precondition(format!(
                "image {name:?} ({}) is in use by container {}",
                img.id, c.id
            )));
        }
    }
    let store = ctx.images.clone();
    blocking(move || store.remove(&name)).await?;
    Ok(RemoveImageResponse {})
}
