//! ImageStatus: one image by id, tag or digest; an unknown image is an empty answer, not an
//! error. `verbose` adds the image config.

use std::collections::HashMap;

use k8s_cri::v1::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::to_status;

pub fn handle(ctx: &Context, req: ImageStatusRequest) -> Result<ImageStatusResponse, Status> {
    let name = super::image_name("image", req.image.as_ref())?;
    let Some(img) = ctx.images.resolve(name).map_err(to_status)? else {
        return Ok(ImageStatusResponse {
            image: None,
            info: HashMap::new(),
        });
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config = ctx.images.config(&img).map_err(to_status)?;
        let verbose = serde_json::json!({
            "imageSpec": config,
            "manifestDigest": img.manifest_digest,
            "chainIDs": img.layers,
            "lowerDirs": ctx.images.lower_dirs(&img),
            "pulledAt": img.pulled_at,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(super::to_cri(&ctx.images, &img)),
        info,
    })
}
