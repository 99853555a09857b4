//! crius-overlay: a per-node VXLAN overlay agent (flannel-style).
//!
//! Each node leases a pod subnet out of the cluster CIDR ([`backend`]: etcd v3 or a static
//! file), publishes its underlay address and VTEP MAC, and programs one vxlan device with an
//! FDB entry, a permanent neighbour and an onlink route per peer ([`netlink`]). The desired
//! state is diffed against the kernel's ([`state`]) so restarts change nothing that is right.
//! The lease is written to a subnet file that the `crius-vxlan` CNI plugin reads.

use std::io::Read;
use std::path::Path;

pub mod agent;
pub mod backend;
pub mod config;
pub mod error;
pub mod netlink;
pub mod state;
pub mod subnet;

pub use error::{OverlayError, Result};

/// Read a text file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| OverlayError::io("opening", path, e))?;
    let mut s = String::new();
    f.take(max + 1)
        .read_to_string(&mut s)
        .map_err(|e| OverlayError::io("reading", path, e))?;
    if s.len() as u64 > max {
        return Err(OverlayError::io(
            "reading",
            path,
            std::io::Error::other(format!("larger than {max} bytes")),
        ));
    }
    Ok(s)
}
