//! The CNI client of crius: a synchronous CNI 1.0/1.1 client in the manner of libcni.
//!
//! - [`conf`]: loading the default network from the conf dir (first valid file by name).
//! - [`exec`]: running plugins per the CNI spec, behind the [`PluginExec`] trait.
//! - [`cache`]: the per-attachment cache of config and result that DEL and CHECK use.
//! - [`CniManager`]: ADD with rollback, DEL from the cache, CHECK, STATUS, GC and the
//!   readiness check behind the kubelet's NetworkReady condition.
//!
//! Everything blocks; criusd calls it from `spawn_blocking`.

pub mod cache;
pub mod conf;
mod error;
pub mod exec;
mod manager;
mod types;

pub use conf::{NetworkConfigList, PluginConfig, load_default_network};
pub use error::CniError;
pub use exec::{CniCommand, ExecOutput, ExecRequest, PluginExec, RawExec};
pub use manager::{CniManager, CniOptions, NetworkStatus, PluginVersionInfo};
pub use types::{
    Attachment, Bandwidth, Dns, DnsResult, Interface, IpConfig, IpRange, NetworkResult, PodArgs,
    PortMapping, Route, RuntimeConfig,
};

#[cfg(test)]
mod tests;
