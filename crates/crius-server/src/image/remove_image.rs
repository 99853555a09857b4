//! RemoveImage: by id, tag or digest, with every layer and blob nothing else uses. Removing
//! an image that is not there succeeds (the CRI requires idempotence).

use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::blocking;

pub async fn handle(ctx: &Context, req: RemoveImageRequest) -> Result<RemoveImageResponse, Status> {
    let name = super::image_name("image", req.image.as_ref())?.to_string();
    let store = ctx.images.clone();
    blocking(move || store.remove(&name)).await?;
    Ok(RemoveImageResponse {})
}
