//! `criusctl inspecti`: verbose ImageStatus, shaped like `crictl inspecti`.

use anyhow::{Result, bail};
use k8s_cri::v1::{Image, ImageStatusRequest};
use serde_json::Value;

use super::image_spec;
use crate::cli::InspectiArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &InspectiArgs) -> Result<()> {
    let mut client = ctx.image().await?;
    for name in &args.images {
        let request = ImageStatusRequest {
            image: Some(image_spec(name)),
            verbose: true,
        };
        ctx.trace("ImageStatusRequest", &request);
        let response = client.image_status(request).await?.into_inner();
        ctx.trace("ImageStatusResponse", &response);
        let Some(image) = &response.image else {
            bail!("no such image {name:?} present");
        };
        print!(
            "{}",
            format::render(&document(image, &response.info)?, args.output)?
        );
    }
    Ok(())
}

/// `{"status": <image>, "info": {"imageSpec": …, …}, <other info keys>…}`.
fn document(image: &Image, info: &std::collections::HashMap<String, String>) -> Result<Value> {
    let mut doc = format::status_document(image, info)?;
    // containerd puts {"imageSpec": …, "chainID": …} under "info"; a runtime that puts the
    // bare OCI image config there gets it wrapped into the same shape.
    if let Some(parsed) = doc.get_mut("info") {
        let has_spec = parsed.get("imageSpec").is_some();
        if !has_spec {
            let spec = parsed.take();
            *parsed = serde_json::json!({ "imageSpec": spec });
        }
    }
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bare_config_is_wrapped_and_containerd_shape_kept() {
        let image = Image {
            id: "sha256:abc".into(),
            repo_tags: vec!["busybox:latest".into()],
            size: 10,
            ..Default::default()
        };
        let bare = [("info".to_owned(), r#"{"architecture":"amd64"}"#.to_owned())].into();
        let doc = document(&image, &bare).unwrap();
        assert_eq!(doc["info"], json!({"imageSpec": {"architecture": "amd64"}}));
        assert_eq!(doc["status"]["repoTags"], json!(["busybox:latest"]));
        assert_eq!(doc["status"]["size"], json!("10"));

        let wrapped = [(
            "info".to_owned(),
            r#"{"chainID":"sha256:x","imageSpec":{"os":"linux"}}"#.to_owned(),
        )]
        .into();
        let doc = document(&image, &wrapped).unwrap();
        assert_eq!(
            doc["info"],
            json!({"chainID": "sha256:x", "imageSpec": {"os": "linux"}})
        );
    }
}
