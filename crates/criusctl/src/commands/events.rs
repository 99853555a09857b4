//! `criusctl events`: GetContainerEvents as it streams, one table row or one JSON document
//! per line for each event, until interrupted or the runtime ends the stream.

use std::io::Write as _;

use anyhow::Result;
use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, GetEventsRequest};

use crate::cli::{EventsArgs, EventsOutput};
use crate::client::Context;
use crate::format;

pub async fn run(ctx: &Context, args: &EventsArgs) -> Result<()> {
    ctx.trace("GetEventsRequest", &GetEventsRequest {});
    let mut stream = ctx
        .runtime()
        .await?
        .get_container_events(GetEventsRequest {})
        .await?
        .into_inner();
    if args.output == EventsOutput::Table {
        println!("{}", row(["TIME", "EVENT", "CONTAINER", "POD ID", "POD"]));
    }
    while let Some(event) = stream.message().await? {
        let line = match args.output {
            EventsOutput::Json => serde_json::to_string(&format::message_json(&event)?)?,
            EventsOutput::Table => table_row(&event),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        // Each event is seen as it happens, also through a pipe.
        out.flush()?;
    }
    Ok(())
}

fn row(cells: [&str; 5]) -> String {
    format!(
        "{:<30}  {:<25}  {:<13}  {:<13}  {}",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    )
}

fn event_name(kind: i32) -> &'static str {
    ContainerEventType::try_from(kind).map_or("UNKNOWN", |k| k.as_str_name())
}

fn table_row(e: &ContainerEventResponse) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(e.created_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let pod = e.pod_sandbox_status.as_ref();
    let pod_id = pod.map_or("", |p| p.id.as_str());
    let pod_name = pod
        .and_then(|p| p.metadata.as_ref())
        .map_or("", |m| m.name.as_str());
    row([
        &time,
        event_name(e.container_event_type),
        format::truncate_id(&e.container_id),
        format::truncate_id(pod_id),
        pod_name,
    ])
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{PodSandboxMetadata, PodSandboxStatus};

    use super::*;

    #[test]
    fn a_row_per_event() {
        let e = ContainerEventResponse {
            container_id: "c0ffee0123456789abcdef".into(),
            container_event_type: ContainerEventType::ContainerStartedEvent as i32,
            created_at: 1_700_000_000_123_456_789,
            pod_sandbox_status: Some(PodSandboxStatus {
                id: "beef0123456789abcdef".into(),
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers_statuses: vec![],
        };
        let cols: Vec<String> = table_row(&e).split_whitespace().map(String::from).collect();
        assert_eq!(
            cols,
            [
                "2023-11-14T22:13:20.123456789Z",
                "CONTAINER_STARTED_EVENT",
                "c0ffee0123456",
                "beef012345678",
                "web"
            ]
        );
    }
}
