//! cgroups as crius reads them for stats: which hierarchy holds each controller (cgroup v1,
//! v2, or a hybrid host with v1 controllers beside a v2 mount), and the usage files of one
//! cgroup. Every read names the file it failed on.

mod hierarchy;
pub mod net;
mod stats;

pub use hierarchy::{Hierarchy, unescape as unescape_mountinfo};
pub use stats::{CgroupStats, MemoryStats, read_stats};
