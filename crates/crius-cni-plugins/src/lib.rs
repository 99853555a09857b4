//! crius's CNI plugins (bridge, host-local, loopback, portmap): the shared part.
//!
//! The binaries in `src/bin/` are thin: each implements [`skel::Plugin`] and calls
//! [`skel::run`]. Everything that talks to the kernel lives here: [`netlink`] (rtnetlink),
//! [`netns`] (setns per thread), [`nft`] (nf_tables over netlink), [`ipam`] (host-local
//! store and IPAM delegation).

pub mod conf;
pub mod error;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod routes;
pub mod skel;
pub mod sysctl;
pub mod types;

pub use error::{CniError, ErrorCode, Result};

/// A current-thread tokio runtime: setns is per thread, so all netlink work stays on one.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::internal("creating tokio runtime", e))
}
