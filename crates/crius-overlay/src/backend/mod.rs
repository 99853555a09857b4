//! Where the nodes of the overlay are known: a static file or etcd v3.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::Result;
use crate::state::{Mac, Node};
use crate::subnet::Ipv4Net;

pub mod etcd;
pub mod static_file;

/// Nodes a backend reports at most; more is refused rather than programmed.
pub const MAX_NODES: usize = 4096;

/// What this node asks for.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub public_ip: Ipv4Addr,
    pub mac: Mac,
    /// The subnet it held before (from the subnet file), kept when still free.
    pub preferred: Option<Ipv4Net>,
}

/// The result of one sync: this node's record and every node known (this one included).
#[derive(Debug, Clone)]
pub struct View {
    pub me: Node,
    pub nodes: Vec<Node>,
}

pub trait Backend: Send {
    /// Hold a lease (acquire or renew it) and report every node. An error leaves the data
    /// path as it is; the agent retries on its next round.
    fn sync(&mut self, me: &Registration) -> impl Future<Output = Result<View>> + Send;
    /// Return when something may have changed, or after `timeout`.
    fn wait(&mut self, timeout: Duration) -> impl Future<Output = ()> + Send;
    /// How often `sync` must run at least (lease renewal).
    fn period(&self) -> Duration;
}
