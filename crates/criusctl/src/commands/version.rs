//! `criusctl version`: the runtime's Version RPC, printed like crictl.

use anyhow::Result;
use k8s_cri::v1::{VersionRequest, VersionResponse};

use crate::client::Context;

/// The CRI API version criusctl speaks.
const CRI_API_VERSION: &str = "v1";

pub async fn run(ctx: &Context) -> Result<()> {
    let request = VersionRequest {
        version: CRI_API_VERSION.to_owned(),
    };
    ctx.trace("VersionRequest", &request);
    let response = ctx.runtime().await?.version(request).await?.into_inner();
    ctx.trace("VersionResponse", &response);
    print!("{}", render(&response));
    Ok(())
}

fn render(v: &VersionResponse) -> String {
    format!(
        "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        v.version, v.runtime_name, v.runtime_version, v.runtime_api_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crictl_layout() {
        let v = VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crius".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(
            render(&v),
            "Version:  0.1.0\nRuntimeName:  crius\nRuntimeVersion:  0.1.0\nRuntimeApiVersion:  v1\n"
        );
    }
}
