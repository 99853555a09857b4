//! The daemon's listening socket, created with its final mode already in place.
//!
//! `bind` then `chmod` leaves a window in which the socket has the umask's mode (often 0755,
//! which for a socket means anyone may connect). Changing the umask is process-wide and races
//! with other threads. Instead the socket is bound inside a fresh 0700 directory, given its
//! mode there, and renamed into place: no other user can reach it before it has its mode, and
//! the rename also replaces a stale socket atomically.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::{StateError, io_err};

/// Binds a Unix socket at `path` whose mode is `mode` from the first moment it is reachable.
/// The listener is non-blocking, ready for `tokio::net::UnixListener::from_std`.
pub fn bind_private_socket(path: &Path, mode: u32) -> Result<UnixListener, StateError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = dir.join(format!(".{name}.bind.{}", std::process::id()));
    // Left over by a crash of this pid's predecessor: it only ever holds a socket.
    let _ = fs::remove_dir_all(&private);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io_err("creating directory", &private))?;
    let inner = private.join("s");
    let bind = || -> io::Result<UnixListener> {
        let listener = UnixListener::bind(&inner)?;
        fs::set_permissions(&inner, fs::Permissions::from_mode(mode))?;
        listener.set_nonblocking(true)?;
        fs::rename(&inner, path)?;
        Ok(listener)
    };
    let result = bind().map_err(io_err("binding", path));
    let _ = fs::remove_dir_all(&private);
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn socket_has_its_mode_replaces_a_stale_one_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crius.sock");
        fs::write(&path, b"stale").unwrap();
        let listener = bind_private_socket(&path, 0o660).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        UnixStream::connect(&path).unwrap();
        listener.set_nonblocking(false).unwrap();
        listener.accept().unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("crius.sock")]);
    }
}
