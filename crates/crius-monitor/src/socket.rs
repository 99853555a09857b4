//! Unix socket paths of any length. `sockaddr_un` holds 108 bytes, so a socket inside a
//! deep state directory (`--state /var/lib/some/long/dir/...`) cannot be bound or connected by
//! its path. A directory handle shortens it: `/proc/self/fd/<fd>/<name>` (or
//! `/proc/<pid>/fd/<fd>/<name>` for another process, such as the OCI runtime dialling a
//! console socket) reaches the same inode through the kernel's magic link.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest socket path `sockaddr_un` takes (108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// An open directory (O_PATH) through which sockets inside it are named briefly.
#[derive(Debug)]
pub struct SocketDir {
    dir: File,
    path: PathBuf,
}

impl SocketDir {
    pub fn open(path: &Path) -> io::Result<SocketDir> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(SocketDir {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// A path to `name` in this directory usable by this process: the plain one when it fits,
    /// else one through this process's handle.
    pub fn local_path(&self, name: &str) -> PathBuf {
        self.path_for("self", name)
    }

    /// A path to `name` usable by any root process while this one lives and keeps the handle
    /// open (the OCI runtime connecting to a console socket of the monitor).
    pub fn shared_path(&self, name: &str) -> PathBuf {
        self.path_for(&std::process::id().to_string(), name)
    }

    fn path_for(&self, pid: &str, name: &str) -> PathBuf {
        let plain = self.path.join(name);
        if fits(&plain) {
            plain
        } else {
            PathBuf::from(format!("/proc/{pid}/fd/{}/{name}", self.dir.as_raw_fd()))
        }
    }
}

fn fits(path: &Path) -> bool {
    path.as_os_str().as_bytes().len() <= MAX_SOCKET_PATH
}

/// Runs `f` with a path to `path` that fits in `sockaddr_un`.
fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if fits(path) {
        return f(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return f(path);
    };
    let dir = SocketDir::open(parent)?;
    f(&dir.local_path(name))
}

/// `UnixListener::bind` for a path of any length.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    with_short_path(path, |p| UnixListener::bind(p))
}

/// `UnixStream::connect` for a path of any length.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose socket paths are longer than `sockaddr_un` takes.
    fn deep_dir() -> (tempfile::TempDir, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let deep = top.path().join("d".repeat(100)).join("e".repeat(20));
        std::fs::create_dir_all(&deep).unwrap();
        (top, deep)
    }

    #[test]
    fn long_socket_paths_bind_and_connect() {
        let (_top, deep) = deep_dir();
        let path = deep.join("monitor.sock");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH);
        // The plain path is refused by the kernel: this is what the module is for.
        assert!(UnixListener::bind(&path).is_err());
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket is in the named directory");
        let _client = connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn shared_path_reaches_the_socket_from_another_process() {
        let (_top, deep) = deep_dir();
        let dir = SocketDir::open(&deep).unwrap();
        let listener = UnixListener::bind(dir.local_path("console.sock")).unwrap();
        let shared = dir.shared_path("console.sock");
        assert!(shared.starts_with(format!("/proc/{}/fd", std::process::id())));
        // A child process (as runc is) dials it by that path.
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/null; test -S {}",
                shared.to_str().unwrap()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        let _c = UnixStream::connect(&shared).unwrap();
        listener.accept().unwrap();
        // Short paths stay plain.
        let short = SocketDir::open(Path::new("/tmp")).unwrap();
        assert_eq!(short.shared_path("x.sock"), PathBuf::from("/tmp/x.sock"));
    }
}
