//! The pod's /dev/shm: one tmpfs shared by all its containers.

use std::path::Path;

use nix::mount::MsFlags;

use crate::error::{SandboxError, invalid, io_err, sys_err};
use crate::mounter::{HostMounter, Mounter, unmount_quiet};

/// Kubernetes' and Docker's default size.
pub const DEFAULT_SHM_SIZE: u64 = 64 * 1024 * 1024;

/// Mounts a tmpfs (mode 1777, nosuid, nodev, noexec) of `size_bytes` on `dir`, creating it.
pub fn mount_shm(dir: &Path, size_bytes: u64) -> Result<(), SandboxError> {
    if size_bytes == 0 {
        return Err(invalid("shm_size", "must be greater than zero"));
    }
    std::fs::create_dir_all(dir).map_err(io_err("creating shm dir", dir))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    HostMounter
        .tmpfs(dir, flags, &format!("mode=1777,size={size_bytes}"))
        .map_err(sys_err("mounting shm", dir))
}

/// Unmounts the pod's shm; not mounted or missing is fine.
pub fn unmount_shm(dir: &Path) -> Result<(), SandboxError> {
    unmount_quiet(&HostMounter, dir).map_err(sys_err("unmounting shm", dir))
}
