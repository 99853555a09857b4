//! cgroups for crius: which hierarchy holds each controller (cgroup v1, v2, or a hybrid host
//! with v1 controllers beside a v2 mount), how the cgroupfs and systemd drivers name a pod's
//! and a container's cgroups, resource limits in both drivers' spellings, the
//! [`CgroupManager`] that creates, joins, limits and removes pod cgroups, and the usage
//! files of one cgroup. Every failure names the file, unit or field.

mod error;
mod hierarchy;
mod manager;
mod naming;
pub mod net;
mod resources;
mod stats;
pub mod systemd;

pub use error::CgroupError;
pub use hierarchy::{Hierarchy, unescape as unescape_mountinfo};
pub use manager::{CgroupManager, CgroupfsManager, SystemdManager};
pub use naming::{CRIUS_CGROUP, Driver, PodCgroup, expand_slice, validate_path, validate_slice};
pub use resources::{
    FileWrite, Property, PropertyValue, Resources, cpuset_bitmask, parse_cpuset, shares_to_weight,
    swap_v2,
};
pub use stats::{CgroupStats, MemoryStats, read_stats};
