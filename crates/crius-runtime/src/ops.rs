//! The outside world a pod is built from, behind a trait so tests can make any step fail.

use std::path::Path;

use crius_sandbox::{PinRequest, PinnedNamespaces, SandboxError};

pub trait SandboxOps: Send + Sync {
    fn pin(&self, req: &PinRequest) -> Result<PinnedNamespaces, SandboxError>;
    /// Idempotent: unpinning what is already gone succeeds.
    fn unpin(&self, pinned: &PinnedNamespaces) -> Result<(), SandboxError>;
    fn mount_shm(&self, dir: &Path, size_bytes: u64) -> Result<(), SandboxError>;
    /// Idempotent.
    fn unmount_shm(&self, dir: &Path) -> Result<(), SandboxError>;
}

/// The real thing: crius-sandbox on this host.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostSandboxOps;

impl SandboxOps for HostSandboxOps {
    fn pin(&self, req: &PinRequest) -> Result<PinnedNamespaces, SandboxError> {
        crius_sandbox::pin_namespaces(req)
    }
    fn unpin(&self, pinned: &PinnedNamespaces) -> Result<(), SandboxError> {
        crius_sandbox::unpin(pinned)
    }
    fn mount_shm(&self, dir: &Path, size_bytes: u64) -> Result<(), SandboxError> {
        crius_sandbox::mount_shm(dir, size_bytes)
    }
    fn unmount_shm(&self, dir: &Path) -> Result<(), SandboxError> {
        crius_sandbox::unmount_shm(dir)
    }
}
