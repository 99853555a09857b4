//! A stand-in for criusd that only answers `runtime.v1.RuntimeService/Version` (everything else
//! is `Unimplemented`). crius-testkit uses it to test its `Daemon` harness without the real
//! daemon. It accepts criusd's flags; `FAKE_CRIUSD_EXIT=<code>` makes it exit at start-up and
//! `FAKE_CRIUSD_IGNORE_SIGTERM=1` makes it ignore SIGTERM.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::path::PathBuf;
use std::task::{Context, Poll};

use k8s_cri::v1::{VersionRequest, VersionResponse};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Runtime;

impl NamedService for Runtime {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

struct Version;

impl UnaryService<VersionRequest> for Version {
    type Response = VersionResponse;
    type Future = Ready<Result<Response<VersionResponse>, Status>>;

    fn call(&mut self, _req: Request<VersionRequest>) -> Self::Future {
        ready(Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crius-fake".into(),
            runtime_version: "0.0.0".into(),
            runtime_api_version: "v1".into(),
        })))
    }
}

impl Service<http::Request<tonic::body::Body>> for Runtime {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() == "/runtime.v1.RuntimeService/Version" {
                let mut grpc = Grpc::new(
                    tonic_prost::ProstCodec::<VersionResponse, VersionRequest>::default(),
                );
                Ok(grpc.unary(Version, req).await)
            } else {
                Ok(Status::unimplemented(req.uri().path().to_string()).into_http())
            }
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().map(PathBuf::from),
            "--config" | "--root" | "--state" | "--log-level" => {
                args.next();
            }
            other => anyhow::bail!("crius-fake-criusd: unknown argument {other}"),
        }
    }
    let listen = listen.ok_or_else(|| anyhow::anyhow!("--listen is required"))?;
    if let Some(code) = std::env::var("FAKE_CRIUSD_EXIT")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        eprintln!("crius-fake-criusd: exiting with {code} as told");
        std::process::exit(code);
    }
    let _ = std::fs::remove_file(&listen);
    let listener = tokio::net::UnixListener::bind(&listen)?;
    eprintln!("crius-fake-criusd: listening on {}", listen.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ignore_term = std::env::var_os("FAKE_CRIUSD_IGNORE_SIGTERM").is_some();
    let shutdown = async move {
        loop {
            term.recv().await;
            if !ignore_term {
                break;
            }
            eprintln!("crius-fake-criusd: ignoring SIGTERM");
        }
        eprintln!("crius-fake-criusd: SIGTERM, shutting down");
    };
    tonic::transport::Server::builder()
        .add_service(Runtime)
        .serve_with_incoming_shutdown(tokio_stream_listener(listener), shutdown)
        .await?;
    let _ = std::fs::remove_file(&listen);
    Ok(())
}

fn tokio_stream_listener(
    l: tokio::net::UnixListener,
) -> impl tonic::codegen::tokio_stream::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    tonic::codegen::tokio_stream::wrappers::UnixListenerStream::new(l)
}
