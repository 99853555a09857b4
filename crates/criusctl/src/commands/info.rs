//! `criusctl info`: Status with verbose info, shaped like `crictl info`.

use anyhow::Result;
use k8s_cri::v1::{StatusRequest, StatusResponse};
use serde_json::{Map, Value};

use crate::cli::InfoArgs;
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &InfoArgs) -> Result<()> {
    let request = StatusRequest { verbose: true };
    ctx.trace("StatusRequest", &request);
    let response = ctx.runtime().await?.status(request).await?.into_inner();
    ctx.trace("StatusResponse", &response);
    print!("{}", format::render(&document(&response)?, args.output)?);
    Ok(())
}

/// `{"status": …, "runtimeHandlers": …, "features": …, <info keys, JSON parsed>…}`.
fn document(response: &StatusResponse) -> Result<Value> {
    let mut doc = Map::new();
    doc.insert("status".into(), format::message_json(&response.status)?);
    if !response.runtime_handlers.is_empty() {
        doc.insert(
            "runtimeHandlers".into(),
            format::message_json(&response.runtime_handlers)?,
        );
    }
    if let Some(features) = &response.features {
        doc.insert("features".into(), format::message_json(features)?);
    }
    format::merge_info(&mut doc, &response.info);
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{RuntimeCondition, RuntimeStatus};
    use serde_json::json;

    use super::*;

    #[test]
    fn info_keys_are_parsed_when_json() {
        let response = StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                }],
            }),
            info: [
                (
                    "config".to_owned(),
                    r#"{"root":"/var/lib/crius"}"#.to_owned(),
                ),
                ("note".to_owned(), "plain text".to_owned()),
            ]
            .into(),
            runtime_handlers: vec![],
            features: None,
        };
        assert_eq!(
            document(&response).unwrap(),
            json!({
                "status": {"conditions": [
                    {"type": "RuntimeReady", "status": true, "reason": "", "message": ""}
                ]},
                "config": {"root": "/var/lib/crius"},
                "note": "plain text"
            })
        );
    }
}
