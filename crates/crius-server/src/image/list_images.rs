//! ListImages: every image, or those matching the filter's image name.

use k8s_cri::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::to_status;

pub fn handle(ctx: &Context, req: ListImagesRequest) -> Result<ListImagesResponse, Status> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.trim().is_empty());
    let images = match wanted {
        Some(name) => {
            tracing::Span::current().record("image", name.as_str());
            ctx.images
                .resolve(&name)
                .map_err(to_status)?
                .into_iter()
                .collect()
        }
        None => ctx.images.list(),
    };
    Ok(ListImagesResponse {
        images: images
            .iter()
            .map(|i| super::to_cri(&ctx.images, i))
            .collect(),
    })
}
