//! PullImage: fetch an image from its registry; answers with the image id.

use crius_registry::{Credentials, Reference};
use k8s_cri::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;

use crate::context::Context;
use crate::status::to_status;

pub async fn handle(ctx: &Context, req: PullImageRequest) -> Result<PullImageResponse, Status> {
    let name = super::image_name("image", req.image.as_ref())?;
    let mut creds = credentials(req.auth.as_ref())?;
    // Credentials for another registry are not ours to send (containerd's ParseAuth); an
    // unparsable name fails in the pull with its own error.
    if let (Some(auth), Ok(reference)) = (req.auth.as_ref(), Reference::parse(name))
        && creds.is_some()
        && !Credentials::scoped_to(&auth.server_address, &reference.registry)
    {
        tracing::info!(image = %name, server_address = %auth.server_address,
            "credentials are for another registry; pulling without them");
        creds = None;
    }
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
