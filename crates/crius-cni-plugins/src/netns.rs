//! Entering network namespaces (per thread, restored on drop).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::{CniError, ErrorCode, Result};

/// An open network namespace file (e.g. `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| CniError::io("opening netns", path, e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// The current thread's network namespace.
    pub fn current() -> Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Move the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NsGuard> {
        let orig = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            CniError::new(
                ErrorCode::Io,
                format!("entering netns {}", self.path.display()),
                e.to_string(),
            )
        })?;
        Ok(NsGuard { orig })
    }

    /// Run `f` with the calling thread inside this namespace.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _guard = self.enter()?;
        Ok(f())
    }
}

/// Returns the thread to its original namespace on drop.
#[derive(Debug)]
pub struct NsGuard {
    orig: NetNs,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.orig.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Continuing in the wrong namespace would make every later operation wrong.
            eprintln!("fatal: cannot return to original netns: {e}");
            std::process::abort();
        }
    }
}
