//! `criusctl port-forward POD [LOCAL:]REMOTE...`: crictl's port-forward. Each local
//! connection becomes a pair of SPDY streams (`error` and `data`, with `port` and
//! `requestID`) on one `portforward.k8s.io` session to the URL of the PortForward RPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use crius_streaming::spdy::Headers;
use k8s_cri::v1::PortForwardRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::PortForwardArgs;
use crate::client::Context;

/// `[LOCAL:]REMOTE` (LOCAL 0: any free port).
fn parse_mapping(s: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| anyhow!("{p:?} is not a port (in {s:?})"))
    };
    let (local, remote) = match s.split_once(':') {
        Some((l, r)) => (if l.is_empty() { 0 } else { port(l)? }, port(r)?),
        None => (port(s)?, port(s)?),
    };
    if remote == 0 {
        bail!("remote port 0 in {s:?}");
    }
    Ok((local, remote))
}

pub async fn run(ctx: &Context, args: &PortForwardArgs) -> Result<()> {
    let maps = args
        .ports
        .iter()
        .map(|s| parse_mapping(s))
        .collect::<Result<Vec<_>>>()?;
    let request = PortForwardRequest {
        pod_sandbox_id: args.pod.clone(),
        port: maps.iter().map(|m| m.1 as i32).collect(),
    };
    ctx.trace("PortForwardRequest", &request);
    let url = ctx
        .runtime()
        .await?
        .port_forward(request)
        .await?
        .into_inner()
        .url;
    ctx.trace("PortForwardResponse", &url);
    let (session, _) = crius_streaming::client::connect(&url, &["portforward.k8s.io"])
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let session = Arc::new(session);
    let ids = Arc::new(AtomicU64::new(0));
    let mut listeners = tokio::task::JoinSet::new();
    for (local, remote) in maps {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{local}"))?;
        println!("Forwarding from {} -> {remote}", l.local_addr()?);
        let (session, ids) = (session.clone(), ids.clone());
        listeners.spawn(async move {
            loop {
                let Ok((conn, _)) = l.accept().await else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(forward(session.clone(), conn, remote, id));
            }
        });
    }
    // Until interrupted (or the session breaks: every forward then fails).
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn forward(
    session: Arc<crius_streaming::spdy::session::Session>,
    mut conn: tokio::net::TcpStream,
    port: u16,
    id: u64,
) {
    let headers = |t: &str| {
        Headers::new()
            .with("streamType", t)
            .with("port", &port.to_string())
            .with("requestID", &id.to_string())
    };
    let (Ok((mut err, _)), Ok((mut data_r, data_w))) = (
        session.open(headers("error")).await,
        session.open(headers("data")).await,
    ) else {
        eprintln!("port-forward: the streaming session is gone");
        return;
    };
    let (mut rd, mut wr) = conn.split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if data_w
                .write(Bytes::copy_from_slice(&buf[..n]))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = data_w.close().await;
    };
    let down = async {
        while let Some(b) = data_r.read().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let errors = async {
        let mut msg = Vec::new();
        while let Some(b) = err.read().await {
            if msg.len() < 4096 {
                msg.extend_from_slice(&b);
            }
        }
        if !msg.is_empty() {
            eprintln!(
                "port-forward {port}: {}",
                String::from_utf8_lossy(&msg).trim()
            );
        }
    };
    // The pod's side ending ends the connection; our side may stay half-open meanwhile.
    tokio::select! {
        _ = async { tokio::join!(up, errors) } => {}
        () = down => {}
    }
}
