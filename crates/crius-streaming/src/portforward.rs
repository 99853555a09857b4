//! The kubelet's port-forward protocol over SPDY (`portforward.k8s.io`).
//!
//! For every forwarded connection the client opens two streams carrying the same `port` and
//! `requestID` headers: `streamType: error` and `streamType: data`. Once both are there the
//! server connects to the port inside the pod and copies bytes both ways on the data stream;
//! a failure is reported as text on the error stream. One session carries many connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::PortForwardParams;
use crate::backend::Backend;
use crate::spdy::frame::rst;
use crate::spdy::session::{IncomingStream, Session};

pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long the second stream of a pair may take to arrive.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// Pairs waiting for their second stream at once.
const MAX_PENDING_PAIRS: usize = 256;
const READ_CHUNK: usize = 32 * 1024;

#[derive(Default)]
struct Pair {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
    since: Option<tokio::time::Instant>,
}

/// Serves one port-forward session until the client closes it.
pub async fn run(mut session: Session, params: PortForwardParams, backend: Arc<dyn Backend>) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(1), session.accept()).await;
        // Drop pairs whose second stream never came.
        let now = tokio::time::Instant::now();
        pending.retain(|_, p| p.since.is_some_and(|s| now - s < PAIR_TIMEOUT));
        let st = match next {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(st)) => st,
        };
        let kind = st.headers.get("streamtype").unwrap_or("").to_string();
        let port = st.headers.get("port").unwrap_or("").to_string();
        // Clients older than requestID pair streams by port.
        let key = match st.headers.get("requestid") {
            Some(r) => r.to_string(),
            None => format!("port-{port}"),
        };
        if !pending.contains_key(&key) && pending.len() >= MAX_PENDING_PAIRS {
            st.writer.reset(rst::REFUSED_STREAM).await;
            continue;
        }
        let pair = pending.entry(key.clone()).or_default();
        pair.since.get_or_insert(now);
        let slot = match kind.as_str() {
            "data" => &mut pair.data,
            "error" => &mut pair.error,
            _ => {
                st.writer.reset(rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() {
            st.writer.reset(rst::STREAM_IN_USE).await;
            continue;
        }
        *slot = Some(st);
        if pair.data.is_some() && pair.error.is_some() {
            let Some(Pair {
                data: Some(data),
                error: Some(error),
                ..
            }) = pending.remove(&key)
            else {
                continue;
            };
            tokio::spawn(forward(data, error, port, params.clone(), backend.clone()));
        }
    }
    session.close().await;
}

async fn forward(
    data: IncomingStream,
    error: IncomingStream,
    port: String,
    params: PortForwardParams,
    backend: Arc<dyn Backend>,
) {
    let report = |msg: String| {
        let w = error.writer.clone();
        async move {
            let _ = w.write(Bytes::from(msg)).await;
            let _ = w.close().await;
        }
    };
    let port_num = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            report(format!("invalid port {port:?}")).await;
            let _ = data.writer.close().await;
            return;
        }
    };
    if !params.ports.is_empty() && !params.ports.contains(&(port_num as i32)) {
        report(format!(
            "port {port_num} was not requested for pod {}",
            params.pod_sandbox_id
        ))
        .await;
        let _ = data.writer.close().await;
        return;
    }
    let conn = match backend
        .port_forward(params.pod_sandbox_id.clone(), port_num)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            report(format!(
                "error forwarding port {port_num} to pod {}: {e}",
                params.pod_sandbox_id
            ))
            .await;
            let _ = data.writer.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let IncomingStream {
        reader: mut from_client,
        writer: to_client,
        ..
    } = data;
    let upstream = async move {
        while let Some(b) = from_client.read().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        // The client finished sending: half-close towards the pod.
        let _ = wr.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client
                        .write(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = to_client.close().await;
    };
    // The connection is done once the pod's side has finished; the client's side may stay
    // half-open (kubectl closes its end only when the local connection closes).
    let up = tokio::spawn(upstream);
    downstream.await;
    up.abort();
    let _ = error.writer.close().await;
}
