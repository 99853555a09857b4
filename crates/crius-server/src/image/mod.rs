//! `runtime.v1.ImageService`: one file per RPC.

mod image_fs_info;
mod image_status;
mod list_images;
mod pull_image;
pub(crate) use pull_image::credentials;
mod remove_image;

use std::sync::Arc;

use crius_image::{ImageRecord, ImageStore};
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use crate::context::Context;

pub struct Images {
    ctx: Arc<Context>,
}

impl Images {
    pub fn new(ctx: Arc<Context>) -> Images {
        Images { ctx }
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, req: Request<ListImagesRequest>) -> R<ListImagesResponse> {
        list_images::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn image_status(&self, req: Request<ImageStatusRequest>) -> R<ImageStatusResponse> {
        image_status::handle(&self.ctx, req.into_inner()).map(Response::new)
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> R<PullImageResponse> {
        pull_image::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> R<RemoveImageResponse> {
        remove_image::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn image_fs_info(&self, req: Request<ImageFsInfoRequest>) -> R<ImageFsInfoResponse> {
        image_fs_info::handle(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }
}

/// The `image` field of an `ImageSpec`, required and non-empty; recorded on the RPC span.
pub(crate) fn image_name<'a>(field: &str, spec: Option<&'a ImageSpec>) -> Result<&'a str, Status> {
    let spec = spec.ok_or_else(|| crate::status::invalid(field, "is required"))?;
    let name = spec.image.trim();
    if name.is_empty() {
        return Err(crate::status::invalid(
            &format!("{field}.image"),
            "must not be empty",
        ));
    }
    tracing::Span::current().record("image", name);
    Ok(name)
}

/// An image record as the CRI shows it.
pub(crate) fn to_cri(store: &ImageStore, img: &ImageRecord) -> Image {
    let (uid, username) = user_of(&img.user);
    Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size.max(1),
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: img.id.clone(),
            ..Default::default()
        }),
        pinned: store.is_pinned(img),
    }
}

/// The image config's `User` ("uid", "uid:gid", "name", "name:group") as the CRI's uid or
/// username, which are mutually exclusive.
fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn image_user_forms() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".to_string()));
    }
}
