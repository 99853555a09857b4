//! `criusctl rmi`: resolve each image with ImageStatus, remove it by id.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use k8s_cri::v1::{Image, ImageStatusRequest, ListImagesRequest, RemoveImageRequest};

use super::image_spec;
use crate::cli::RmiArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &RmiArgs) -> Result<()> {
    let mut client = ctx.image().await?;
    // A set, so an image named twice (or by name and by --all) is removed once.
    let mut targets: BTreeSet<String> = args.images.iter().cloned().collect();
    if args.all {
        let request = ListImagesRequest::default();
        ctx.trace("ListImagesRequest", &request);
        let response = client.list_images(request).await?.into_inner();
        ctx.trace("ListImagesResponse", &response);
        targets.extend(response.images.into_iter().map(|i| i.id));
    }

    // Keep going after a failure so one bad name does not block the rest, as crictl.
    let mut failed = false;
    for target in &targets {
        let request = ImageStatusRequest {
            image: Some(image_spec(target)),
            verbose: false,
        };
        ctx.trace("ImageStatusRequest", &request);
        let image = match client.image_status(request).await {
            Ok(response) => response.into_inner().image,
            Err(status) => {
                let err = anyhow::Error::new(status);
                eprintln!(
                    "criusctl: image status for {target:?}: {}",
                    format::error_message(&err)
                );
                failed = true;
                continue;
            }
        };
        let Some(image) = image else {
            eprintln!("criusctl: no such image {target}");
            failed = true;
            continue;
        };
        let request = RemoveImageRequest {
            image: Some(image_spec(&image.id)),
        };
        ctx.trace("RemoveImageRequest", &request);
        if let Err(status) = client.remove_image(request).await {
            let err = anyhow::Error::new(status);
            eprintln!(
                "criusctl: removing image {target:?}: {}",
                format::error_message(&err)
            );
            failed = true;
            continue;
        }
        if !args.quiet {
            for name in deleted_names(&image) {
                println!("Deleted: {name}");
            }
        }
    }
    if failed {
        bail!("unable to remove the image(s)");
    }
    Ok(())
}

/// What crictl reports as deleted: the tags, or the digests of an untagged image.
fn deleted_names(image: &Image) -> &[String] {
    if image.repo_tags.is_empty() {
        &image.repo_digests
    } else {
        &image.repo_tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_images_report_digests() {
        let mut image = Image {
            repo_digests: vec!["busybox@sha256:aa".into()],
            ..Default::default()
        };
        assert_eq!(deleted_names(&image), ["busybox@sha256:aa"]);
        image.repo_tags = vec!["busybox:latest".into()];
        assert_eq!(deleted_names(&image), ["busybox:latest"]);
    }
}
