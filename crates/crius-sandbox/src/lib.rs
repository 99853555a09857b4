//! Pod sandboxes without a pause image.
//!
//! A pod's namespaces are created by the short-lived `crius-pinns` helper and kept alive by
//! bind-mounting `/proc/<pid>/ns/<type>` onto files ([`pin_namespaces`]); containers join those
//! files through the OCI `linux.namespaces[].path`. A shared PID namespace gets `crius-init` as
//! its PID 1 ([`start_pod_init`]). The pod's resolv.conf, hosts, hostname ([`files`]) and
//! `/dev/shm` ([`mount_shm`]) live here too.

mod error;
pub mod files;
mod helper;
mod mounter;
mod ns;
mod pid;
mod pindir;
mod procfs;
mod shm;
mod sysctl;

pub use error::SandboxError;
pub use files::{
    DnsConfig, write_hostname, write_hosts, write_resolv_conf, write_resolv_conf_from,
};
pub use helper::{Helpers, POD_ID_ENV, find_helper, helper_path};
pub use mounter::{HostMounter, Mounter};
pub use ns::{NsType, PinRequest, PinnedNamespaces, pin_namespaces, pin_namespaces_with, unpin};
pub use pid::{DEFAULT_STOP_GRACE, PodInit, start_pod_init, start_pod_init_with, stop_pod_init};
pub use pindir::{ensure_pin_dir, release_pin_dir};
pub use shm::{DEFAULT_SHM_SIZE, mount_shm, unmount_shm};
pub use sysctl::{normalize_sysctl_key, validate_sysctls};
