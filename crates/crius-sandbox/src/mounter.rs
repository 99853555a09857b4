//! The mount syscalls, behind a trait so tests can make the Nth one fail and check rollback.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

pub trait Mounter: Send + Sync {
    /// `mount --bind source target`.
    fn bind(&self, source: &Path, target: &Path) -> nix::Result<()>;
    /// Changes the propagation type of the mount at `target` (MS_SHARED, MS_PRIVATE, ...).
    fn set_propagation(&self, target: &Path, flags: MsFlags) -> nix::Result<()>;
    /// Mounts a fresh tmpfs with `flags` and `data` (e.g. `mode=1777,size=...`).
    fn tmpfs(&self, target: &Path, flags: MsFlags, data: &str) -> nix::Result<()>;
    /// Lazy unmount (MNT_DETACH): never fails with EBUSY.
    fn unmount(&self, target: &Path) -> nix::Result<()>;
}

/// The real syscalls.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostMounter;

impl Mounter for HostMounter {
    fn bind(&self, source: &Path, target: &Path) -> nix::Result<()> {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    }

    fn set_propagation(&self, target: &Path, flags: MsFlags) -> nix::Result<()> {
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
    }

    fn tmpfs(&self, target: &Path, flags: MsFlags, data: &str) -> nix::Result<()> {
        mount(Some("shm"), target, Some("tmpfs"), flags, Some(data))
    }

    fn unmount(&self, target: &Path) -> nix::Result<()> {
        umount2(target, MntFlags::MNT_DETACH)
    }
}

/// Unmounts, treating "not mounted" and "does not exist" as success.
pub(crate) fn unmount_quiet(m: &dyn Mounter, target: &Path) -> nix::Result<()> {
    match m.unmount(target) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
