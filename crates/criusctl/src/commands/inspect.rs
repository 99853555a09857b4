//! `criusctl inspect`: verbose ContainerStatus, shaped like `crictl inspect`. `inspectp`
//! is the same over pod sandboxes, hence [`inspect_all`] is generic.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::Value;

use super::kind::{Containers, Kind};
use crate::cli::{InspectArgs, Output};
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &InspectArgs) -> Result<()> {
    inspect_all::<Containers>(ctx, &args.containers, args.output).await
}

/// Prints the verbose status of each id in turn; the first failure ends the command.
pub async fn inspect_all<K: Kind>(ctx: &Context, ids: &[String], output: Output) -> Result<()> {
    let mut client = ctx.runtime().await?;
    for id in ids {
        let reply = K::status(ctx, &mut client, id, true).await?;
        print!(
            "{}",
            format::render(&document(&reply.status, &reply.info)?, output)?
        );
    }
    Ok(())
}

/// `{"status": <status>, <info keys, JSON parsed>…}` (containerd: `"info"`).
fn document(status: &impl serde::Serialize, info: &HashMap<String, String>) -> Result<Value> {
    Ok(Value::Object(format::status_document(status, info)?))
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{
        ContainerState, ContainerStatus, ContainerStatusResponse, PodSandboxMetadata,
        PodSandboxStatus, PodSandboxStatusResponse,
    };
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
        let doc = document(&response.status, &response.info).unwrap();
        assert_eq!(doc["status"]["state"], "CONTAINER_RUNNING");
        assert_eq!(doc["status"]["startedAt"], "7");
        assert_eq!(doc["info"], json!({"pid": 99}));
    }

    /// Was `inspectp`'s own test.
    #[test]
    fn pod_status_and_parsed_info() {
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
        let doc = document(&response.status, &response.info).unwrap();
        assert_eq!(doc["status"]["state"], "SANDBOX_NOTREADY");
        assert_eq!(doc["status"]["createdAt"], "42");
        assert_eq!(doc["status"]["metadata"]["name"], "web");
        assert_eq!(doc["info"], json!({"pid": 1234}));
    }
}
