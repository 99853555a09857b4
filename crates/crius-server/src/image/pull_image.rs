//! PullImage: fetch an image from its registry; answers with the image id.

use crius_registry::Credentials;
use k8s_cri::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::to_status;

pub async fn handle(ctx: &Context, req: PullImageRequest) -> Result<PullImageResponse, Status> {
    let name = super::image_name("image", req.image.as_ref())?;
    let creds = credentials(req.auth.as_ref())?;
    let pull = ctx.puller.start(name, creds).map_err(to_status)?;
    let id = pull.wait().await.map_err(to_status)?;
    Ok(PullImageResponse { image_ref: id })
}

pub(crate) fn credentials(auth: Option<&AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    Credentials::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|e| Status::invalid_argument(format!("auth: {e}")))
}
