//! The image store as the runtime core sees it.

use std::sync::Arc;

use crius_error::HasKind;
use crius_image::ImageStore;
use crius_runtime::{ImageInfo, ImageSource, RuntimeError};

pub(crate) struct StoreImages(pub Arc<ImageStore>);

impl ImageSource for StoreImages {
    fn image_info(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let failed = |e: crius_image::ImageError| RuntimeError::Image {
            name: name.into(),
            kind: e.kind(),
            message: e.to_string(),
        };
        let Some(img) = self.0.resolve(name).map_err(failed)? else {
            return Ok(None);
        };
        Ok(Some(ImageInfo {
            reference: img
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| img.id.clone()),
            tag: img.repo_tags.first().cloned(),
            config: self.0.config(&img).map_err(failed)?,
            layers_dir: self.0.layers_dir().to_path_buf(),
            lower: self.0.lower_dirs(&img),
            id: img.id,
        }))
    }
}
