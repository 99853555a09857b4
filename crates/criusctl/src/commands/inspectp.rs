//! `criusctl inspectp`: verbose PodSandboxStatus, shaped like `crictl inspectp`.

use anyhow::Result;
use k8s_cri::v1::{PodSandboxStatusRequest, PodSandboxStatusResponse};
use serde_json::{Map, Value};

use crate::cli::InspectpArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &InspectpArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    for id in &args.pods {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        };
        ctx.trace("PodSandboxStatusRequest", &request);
        let response = client.pod_sandbox_status(request).await?.into_inner();
        ctx.trace("PodSandboxStatusResponse", &response);
        print!("{}", format::render(&document(&response)?, args.output)?);
    }
    Ok(())
}

/// `{"status": <PodSandboxStatus>, <info keys, JSON parsed>…}` (containerd: `"info"`).
fn document(response: &PodSandboxStatusResponse) -> Result<Value> {
    let mut doc = Map::new();
    doc.insert("status".into(), format::message_json(&response.status)?);
    format::merge_info(&mut doc, &response.info);
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{PodSandboxMetadata, PodSandboxStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn status_and_parsed_info() {
        let response = PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "p1".into(),
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    ..Default::default()
                }),
                state: 1,
                created_at: 42,
                ..Default::default()
            }),
            info: [("info".to_owned(), r#"{"pid":1234}"#.to_owned())].into(),
            ..Default::default()
        };
        let doc = document(&response).unwrap();
        assert_eq!(doc["status"]["state"], "SANDBOX_NOTREADY");
        assert_eq!(doc["status"]["createdAt"], "42");
        assert_eq!(doc["status"]["metadata"]["name"], "web");
        assert_eq!(doc["info"], json!({"pid": 1234}));
    }
}
