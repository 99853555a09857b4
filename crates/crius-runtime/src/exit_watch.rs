//! Noticing container exits as the monitor records them: an inotify watch on each pod's exit
//! directory, whose files the monitor renames into place. A thread reads the events and
//! refreshes the container, which records the exit and publishes STOPPED at once, instead of
//! whenever someone next asks for the container's status.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{OnceLock, Weak};

use tracing::warn;

use crate::containers::ContainerManager;

#[derive(Default)]
pub(crate) struct ExitWatch {
    fd: OnceLock<OwnedFd>,
}

impl ExitWatch {
    /// Starts the reader thread for `manager`. Only the first call does anything.
    pub(crate) fn start(&self, manager: Weak<ContainerManager>) -> std::io::Result<()> {
        if self.fd.get().is_some() {
            return Ok(());
        }
        // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let reader = owned.try_clone()?;
        if self.fd.set(owned).is_err() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("exit-watch".into())
            .spawn(move || read_events(reader, manager))?;
        Ok(())
    }

    /// Watches a pod's exit directory (idempotent; a no-op before [`start`](Self::start)).
    pub(crate) fn add(&self, dir: &Path) {
        let Some(fd) = self.fd.get() else { return };
        let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                path.as_ptr(),
                libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_ONLYDIR,
            )
        };
        if wd < 0 {
            warn!(dir = %dir.display(), error = %std::io::Error::last_os_error(), "cannot watch a pod's exit directory; exits are seen on the next status query");
        }
    }
}

/// Reads inotify events until the manager is gone; each file name is a container id.
fn read_events(fd: OwnedFd, manager: Weak<ContainerManager>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reading into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let Some(manager) = manager.upgrade() else {
            return;
        };
        for name in names(&buf[..n as usize]) {
            if !name.starts_with('.') {
                let _ = manager.refresh(&name);
            }
        }
    }
}

/// The names in a buffer of `struct inotify_event`s.
fn names(mut buf: &[u8]) -> Vec<String> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        // The name length is the last field of the header (wd, mask, cookie, len).
        let len = u32::from_ne_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
        let end = (HEADER + len).min(buf.len());
        let name = &buf[HEADER..end];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        if !name.is_empty() {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        buf = &buf[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn parses_inotify_event_names() {
        let mut buf = Vec::new();
        for (wd, name) in [(1i32, "abc"), (2, "")] {
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&(libc::IN_MOVED_TO).to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        assert_eq!(names(&buf), vec!["abc".to_string()]);
    }
}
