//! `crius.v1.Images`: crius's own image RPCs for criusctl (proto/crius/v1/images.proto).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crius_image::{LayerState, PullProgress};
use crius_proto::v1 as pb;
use futures_util::Stream;
use k8s_cri::v1::AuthConfig;
use tonic::{Request, Response, Status};

use crate::context::Context;
use crate::status::{invalid, to_status};

/// Progress messages are sent at most this often; the final one always goes out.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

pub struct InternalImages {
    ctx: Arc<Context>,
}

impl InternalImages {
    pub fn new(ctx: Arc<Context>) -> InternalImages {
        InternalImages { ctx }
    }
}

fn to_pb(p: &PullProgress) -> pb::PullProgress {
    pb::PullProgress {
        reference: p.reference.clone(),
        layers: p
            .layers
            .iter()
            .map(|l| pb::LayerProgress {
                digest: l.digest.clone(),
                downloaded: l.downloaded,
                total: l.total,
                state: match l.state {
                    LayerState::Waiting => pb::LayerState::Waiting,
                    LayerState::Downloading => pb::LayerState::Downloading,
                    LayerState::Exists => pb::LayerState::Exists,
                    LayerState::Done => pb::LayerState::Done,
                } as i32,
            })
            .collect(),
        image_id: String::new(),
        done: false,
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::PullProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::images_server::Images for InternalImages {
    type PullWithProgressStream = ProgressStream;

    async fn pull_with_progress(
        &self,
        req: Request<pb::PullWithProgressRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        if req.image.trim().is_empty() {
            return Err(invalid("image", "must not be empty"));
        }
        tracing::Span::current().record("image", req.image.as_str());
        let auth = AuthConfig {
            username: req.username,
            password: req.password,
            auth: req.auth,
            identity_token: req.identity_token,
            registry_token: req.registry_token,
            server_address: String::new(),
        };
        let creds = crate::image::credentials(Some(&auth))?;
        let handle = self
            .ctx
            .puller
            .start(&req.image, creds)
            .map_err(to_status)?;
        let mut progress = handle.progress.clone();
        let stream = async_stream(move |tx| async move {
            let mut done = std::pin::pin!(handle.wait());
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            let mut last = None;
            loop {
                tokio::select! {
                    result = &mut done => {
                        let mut last_msg = to_pb(&progress.borrow());
                        match result {
                            Ok(id) => {
                                last_msg.image_id = id;
                                last_msg.done = true;
                                let _ = tx.send(Ok(last_msg)).await;
                            }
                            Err(e) => { let _ = tx.send(Err(to_status(e))).await; }
                        }
                        return;
                    }
                    _ = tick.tick() => {
                        let msg = to_pb(&progress.borrow_and_update());
                        if last.as_ref() != Some(&msg) {
                            if tx.send(Ok(msg.clone())).await.is_err() {
                                // The client went away; the pull itself goes on.
                                return;
                            }
                            last = Some(msg);
                        }
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> ProgressStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::PullProgress, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
