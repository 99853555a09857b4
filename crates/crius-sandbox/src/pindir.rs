//! Directories that hold pin files.
//!
//! Each pin directory is made a bind mount of itself with *shared* propagation, like
//! `ip netns` does for /run/netns. Why shared and not private: any mount namespace created
//! later (a container, a systemd unit with PrivateTmp, ...) gets a copy of the nsfs mounts that
//! exist at that moment. With a private directory our unmount would not reach those copies and
//! each copy would keep the namespace alive forever. As a shared peer group, mounts and
//! unmounts propagate to the copies, so unpinning really frees the namespace. Containers do not
//! accumulate our mounts either: runc detaches the old root after pivot_root.

use std::path::Path;
use std::sync::Mutex;

use nix::mount::MsFlags;

use crate::error::{SandboxError, io_err, sys_err};
use crate::mounter::{Mounter, unmount_quiet};
use crate::procfs;

/// Serialises check-then-mount so parallel pod starts never stack two self-binds.
static PIN_DIR_LOCK: Mutex<()> = Mutex::new(());

/// Creates `dir` (0755) and makes it a shared self-bind mount unless it is a mount point
/// already. Returns whether it mounted.
pub fn ensure_pin_dir(dir: &Path, m: &dyn Mounter) -> Result<bool, SandboxError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating pin dir", dir))?;
    let dir = dir
        .canonicalize()
        .map_err(io_err("resolving pin dir", dir))?;
    let _guard = PIN_DIR_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if is_mount_point(&dir)? {
        return Ok(false);
    }
    m.bind(&dir, &dir)
        .map_err(sys_err("bind-mounting pin dir onto itself", &dir))?;
    // Private first so the new mount leaves whatever peer group it inherited, then shared so it
    // becomes its own peer group.
    let propagate = m
        .set_propagation(&dir, MsFlags::MS_PRIVATE)
        .and_then(|()| m.set_propagation(&dir, MsFlags::MS_SHARED));
    if let Err(e) = propagate {
        let _ = unmount_quiet(m, &dir);
        return Err(sys_err("setting propagation of pin dir", &dir)(e));
    }
    Ok(true)
}

/// Unmounts the self-bind of a pod-owned pin dir and removes the dir if it is empty.
/// Idempotent. Never call this on a directory shared by pods (the net dir) while pods live:
/// the lazy unmount would detach their pins as well.
pub fn release_pin_dir(dir: &Path, m: &dyn Mounter) -> Result<(), SandboxError> {
    let _guard = PIN_DIR_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    unmount_quiet(m, dir).map_err(sys_err("unmounting pin dir", dir))?;
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Something else still lives there; the caller owns it.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(io_err("removing pin dir", dir)(e)),
    }
}

pub(crate) fn is_mount_point(path: &Path) -> Result<bool, SandboxError> {
    let points = procfs::mount_points().map_err(io_err("reading", "/proc/self/mountinfo"))?;
    Ok(points.iter().any(|p| p == path))
}
