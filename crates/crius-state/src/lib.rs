//! Atomic on-disk state.
//!
//! Everything crius persists goes through [`atomic_write`]: write a temp file in the same
//! directory, fsync it, rename it over the target, fsync the directory. A crash leaves either
//! the old or the new content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crius_error::{ErrorKind, HasKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use socket::bind_private_socket;

mod socket;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("decoding {path}: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "another criusd is already running with root {root} (lock file {lock} is held{holder})"
    )]
    Locked {
        root: PathBuf,
        lock: PathBuf,
        holder: String,
    },
}

impl HasKind for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            StateError::Io { source, .. } => ErrorKind::from_internal_io(source),
            StateError::Decode { .. } => ErrorKind::DataLoss,
            StateError::Locked { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `data` atomically and durably.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<(), StateError> {
    write_and_rename(path, data, true)
}

/// [`atomic_write`] without the fsyncs: whole or absent after a crash of the process, but
/// not after a power loss. For files that only matter while the host stays up (intent
/// records, whose side effects a reboot undoes anyway; a bundle's spec).
pub fn atomic_write_volatile(path: &Path, data: &[u8]) -> Result<(), StateError> {
    write_and_rename(path, data, false)
}

fn write_and_rename(path: &Path, data: &[u8], durable: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per write, not per process: two threads saving one record at once must never
    // write into (or rename) each other's temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{seq}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StateError::Io {
            op: "writing",
            path: path.to_path_buf(),
            source: e,
        }
    })
}

/// Makes a rename or create inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| StateError::Decode {
        path: path.to_path_buf(),
        source: e,
    })?;
    atomic_write(path, &data)
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StateError::Decode {
                path: path.to_path_buf(),
                source: e,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

pub fn create_dir_all(path: &Path, mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err("creating directory", path))
}

/// Like [`create_dir_all`], and the leaf ends with exactly `mode` even when it existed (a
/// directory left by an older version, or one the umask narrowed or widened). Used for the
/// directories on the way to a container's files, which no host user but root may enter.
pub fn create_dir_with_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    create_dir_all(path, mode)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", path))
}

/// An exclusive lock on a daemon root, held for the life of the process.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    path: PathBuf,
}

impl RootLock {
    /// Takes `<root>/criusd.lock` or fails at once naming the holder's pid.
    pub fn acquire(root: &Path) -> Result<RootLock, StateError> {
        create_dir_all(root, 0o711)?;
        let path = root.join("criusd.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("opening lock file", &path))?;
        // flock, not fcntl locks: fcntl locks are per process and vanish when any fd of the
        // file is closed, which a daemon cannot guarantee.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" by pid {pid}"))
                    .unwrap_or_default();
                return Err(StateError::Locked {
                    root: root.to_path_buf(),
                    lock: path,
                    holder,
                });
            }
            return Err(io_err("locking", &path)(err));
        }
        file.set_len(0)
            .map_err(io_err("truncating lock file", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err("writing lock file", &path))?;
        Ok(RootLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap().unwrap();
        assert_eq!(v, vec![4]);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn concurrent_saves_of_one_record_never_share_a_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    // Big enough that writes overlap in time.
                    let data = vec![b'a' + t; 256 << 10];
                    for _ in 0..50 {
                        atomic_write(&p, &data).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a concurrent save failed");
        }
        // Whole content of exactly one writer, and no temp file left behind.
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 256 << 10);
        assert!(data.iter().all(|b| *b == data[0]), "torn record");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_record_is_none_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        assert!(read_json::<Vec<i32>>(&p).unwrap().is_none());
        fs::write(&p, b"{not json").unwrap();
        let err = read_json::<Vec<i32>>(&p).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss);
        assert!(err.to_string().contains("x.json"));
    }

    #[test]
    fn second_lock_on_same_root_fails_with_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RootLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open conflicts even
        // within one process, exactly like a second daemon would.
        let err = RootLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another criusd"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        RootLock::acquire(dir.path()).unwrap();
    }
}
