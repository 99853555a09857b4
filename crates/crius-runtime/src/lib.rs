//! Pod sandbox and container lifecycle.
//!
//! A pod is a record (its CRI config and what was built for it) persisted atomically under
//! `<root>/pods/<id>.json`, plus runtime state under `<state>/pods/<id>/` (pinned namespaces,
//! /dev/shm, hostname, resolv.conf, hosts) that a reboot clears. Building and tearing down the
//! runtime state goes through [`SandboxOps`], so tests can inject failures.
//!
//! Pod states:
//!
//! ```text
//!   RunPodSandbox ──▶ Ready ──StopPodSandbox──▶ NotReady ──RemovePodSandbox──▶ (gone)
//!        │ failure: everything built so far is undone; no record remains
//! ```

mod cgroups;
mod containers;
mod error;
mod events;
mod exit_watch;
mod ids;
mod keylocks;
mod network;
mod ops;
mod pods;
mod record;
mod records;
mod recovery;
mod rollback;
mod rootfs;
mod runtime;
mod stats;
mod stats_net;

pub use cgroups::resources_from_cri;
pub use containers::{
    ContainerFilter, ContainerHost, ContainerManager, ContainerManagerOptions, ContainerRecord,
    ContainerState, ExecCancel, ExecLimits, ExecOutput, ExecStreams, HostContainers, ImageInfo,
    ProcessUser, signal_number,
};
pub use crius_monitor::EXEC_OUTPUT_LIMIT;
pub use error::RuntimeError;
pub use events::{Event, EventBus, EventKind, Subscription};
pub use ids::new_id;
pub use network::{CniNetwork, POD_IFNAME, PodNetwork};
pub use ops::{HostSandboxOps, SandboxOps};
pub use pods::{PodFilter, PodManager, PodManagerOptions};
pub use record::{PodRecord, PodState};
pub use runtime::{ContainerView, FsUsage, ImageSource, Runtime};
pub use stats::{ContainerUsage, DiskUsage, PodUsage, StatsCollector};
