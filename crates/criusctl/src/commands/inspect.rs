//! `criusctl inspect`: verbose ContainerStatus, shaped like `crictl inspect`.

use anyhow::Result;
use k8s_cri::v1::{ContainerStatusRequest, ContainerStatusResponse};
use serde_json::{Map, Value};

use crate::cli::InspectArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &InspectArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    for id in &args.containers {
        let request = ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        };
        ctx.trace("ContainerStatusRequest", &request);
        let response = client.container_status(request).await?.into_inner();
        ctx.trace("ContainerStatusResponse", &response);
        print!("{}", format::render(&document(&response)?, args.output)?);
    }
    Ok(())
}

/// `{"status": <ContainerStatus>, <info keys, JSON parsed>…}` (containerd: `"info"`).
fn document(response: &ContainerStatusResponse) -> Result<Value> {
    let mut doc = Map::new();
    doc.insert("status".into(), format::message_json(&response.status)?);
    format::merge_info(&mut doc, &response.info);
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerState, ContainerStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn status_and_parsed_info() {
        let response = ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: "c1".into(),
                state: ContainerState::ContainerRunning as i32,
                started_at: 7,
                exit_code: 0,
                ..Default::default()
            }),
            info: [("info".to_owned(), r#"{"pid":99}"#.to_owned())].into(),
        };
        let doc = document(&response).unwrap();
        assert_eq!(doc["status"]["state"], "CONTAINER_RUNNING");
        assert_eq!(doc["status"]["startedAt"], "7");
        assert_eq!(doc["info"], json!({"pid": 99}));
    }
}
