//! Port-forward: a TCP connection to `localhost:port` inside a pod's network namespace.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crius_runtime::{PodManager, PodState};
use nix::sched::{CloneFlags, setns};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `port` on the pod's loopback. The socket is made on a short-lived thread that
/// enters the pod's network namespace (setns is per thread; the thread then exits, so no
/// worker of criusd is left in the pod's namespace); a socket keeps its namespace.
pub async fn connect(
    pods: std::sync::Arc<PodManager>,
    pod_id: String,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let netns: Option<PathBuf> = crate::status::spawn_blocking(move || {
        let pod = pods.get(&pod_id).map_err(|e| e.to_string())?;
        if pod.state != PodState::Ready {
            return Err(format!("pod sandbox {} is not ready", pod.id));
        }
        Ok::<_, String>(pod.namespaces.net.clone())
    })
    .await
    .map_err(|e| e.to_string())??;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crius-portfwd".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns, port));
        })
        .map_err(|e| format!("starting a connect thread: {e}"))?;
    let stream = rx
        .await
        .map_err(|_| "the connect thread died".to_string())??;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
}

fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, String> {
    if let Some(ns) = &netns {
        let f = File::open(ns).map_err(|e| format!("opening {}: {e}", ns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {}: {e}", ns.display()))?;
    }
    // "localhost": IPv4 first, then IPv6.
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
        TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
            .map_err(|_| format!("connecting to localhost:{port}: {e4}"))
    })
}
