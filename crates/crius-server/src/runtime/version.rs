//! Version: who we are and which CRI version we speak.

use k8s_cri::v1::{VersionRequest, VersionResponse};
use tonic::Status;

use crate::context::Context;

/// The version of the kubelet runtime API this implements (fixed by the CRI).
const KUBELET_API_VERSION: &str = "0.1.0";

pub fn handle(ctx: &Context, _req: VersionRequest) -> Result<VersionResponse, Status> {
    Ok(VersionResponse {
        version: KUBELET_API_VERSION.into(),
        runtime_name: "crius".into(),
        runtime_version: format!("{}+{}", ctx.version.version, ctx.version.commit),
        runtime_api_version: "v1".into(),
    })
}
