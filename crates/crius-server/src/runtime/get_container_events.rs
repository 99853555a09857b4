//! GetContainerEvents: a stream of container and sandbox events (created, started, stopped,
//! deleted), each with its pod's status and all its containers' statuses, for the kubelet's
//! evented PLEG. A consumer that falls `EVENT_BUFFER` events behind is dropped with an error
//! (the kubelet then relists); it never slows the daemon down.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crius_runtime::{Event, EventKind};
use futures_util::Stream;
use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, GetEventsRequest};
use tonic::Status;

use super::pod_sandbox_status::{status_of, with_containers};
use crate::context::Context;

/// Events one subscriber may fall behind before it is dropped.
const EVENT_BUFFER: usize = 4096;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

pub fn handle(ctx: &Arc<Context>, _req: GetEventsRequest) -> Result<EventStream, Status> {
    let mut sub = ctx.pods.events().subscribe(EVENT_BUFFER);
    let ctx = ctx.clone();
    let stream = async_stream(move |tx| async move {
        while let Some(event) = sub.events.recv().await {
            let response = response(&ctx, event).await;
            if tx.send(Ok(response)).await.is_err() {
                return; // the client went away
            }
        }
        if sub.overflowed.load(Ordering::Relaxed) {
            let _ = tx
                .send(Err(Status::resource_exhausted(format!(
                    "event stream dropped: the client fell {EVENT_BUFFER} events behind; relist"
                ))))
                .await;
        }
    });
    Ok(stream)
}

/// The event with the pod's status as it is now (none once the pod is removed).
async fn response(ctx: &Arc<Context>, event: Event) -> ContainerEventResponse {
    let (runtime, pod_id) = (ctx.runtime.clone(), event.pod_id);
    let found = crate::status::spawn_blocking(move || with_containers(&runtime, &pod_id))
        .await
        .ok()
        .and_then(Result::ok);
    let (pod_sandbox_status, containers_statuses) = match found {
        Some((pod, statuses)) => (Some(status_of(&pod)), statuses),
        None => (None, Vec::new()),
    };
    ContainerEventResponse {
        container_id: event.id,
        container_event_type: match event.kind {
            EventKind::Created => ContainerEventType::ContainerCreatedEvent,
            EventKind::Started => ContainerEventType::ContainerStartedEvent,
            EventKind::Stopped => ContainerEventType::ContainerStoppedEvent,
            EventKind::Deleted => ContainerEventType::ContainerDeletedEvent,
        } as i32,
        created_at: event.timestamp,
        pod_sandbox_status,
        containers_statuses,
    }
}

/// A stream fed by a task: `f` gets the sending half of a small channel.
fn async_stream<F, Fut>(f: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ContainerEventResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
