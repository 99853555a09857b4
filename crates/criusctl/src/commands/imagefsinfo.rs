//! `criusctl imagefsinfo`: ImageFsInfo as protojson under "status", like crictl.

use anyhow::Result;
use k8s_cri::v1::ImageFsInfoRequest;
use serde_json::json;

use crate::cli::ImagefsinfoArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &ImagefsinfoArgs) -> Result<()> {
    let request = ImageFsInfoRequest {};
    ctx.trace("ImageFsInfoRequest", &request);
    let response = ctx
        .image()
        .await?
        .image_fs_info(request)
        .await?
        .into_inner();
    ctx.trace("ImageFsInfoResponse", &response);
    let doc = json!({ "status": format::message_json(&response)? });
    print!("{}", format::render(&doc, args.output)?);
    Ok(())
}
