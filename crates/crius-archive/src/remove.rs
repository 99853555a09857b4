//! Robust removal of a directory tree (a failed or discarded layer).
//!
//! Layers may contain directories without write or search permission (mode 0000, 0555); as a
//! non-root user those cannot be emptied until they are chmod-ed, so permissions are fixed on the
//! way down. The walk keeps only one directory fd open and climbs back with `..`, so hostile
//! trees thousands of levels deep neither exhaust fds nor the stack.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys;

/// Removes `path` and everything below it without following symlinks. A missing path is not
/// an error (removal is idempotent); a non-directory is simply unlinked.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return ignore_missing(std::fs::remove_file(path));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cannot remove this path"))?;
    let parent_fd = std::fs::File::open(parent)?;
    let name = CString::new(name.as_bytes())?;
    remove_tree_at(parent_fd.as_fd(), &name)
}

/// Removes directory `name` in `parent` and its whole content.
pub(crate) fn remove_tree_at(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let root = match open_dir_fixing_perms(parent, name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    empty_dir(root)?;
    ignore_missing(sys::unlinkat(parent, name, libc::AT_REMOVEDIR))
}

fn ignore_missing(res: io::Result<()>) -> io::Result<()> {
    match res {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn open_dir_fixing_perms(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    match sys::open_dir_nofollow(parent, name) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            sys::fchmodat(parent, name, 0o700)?;
            sys::open_dir_nofollow(parent, name)
        }
        other => other,
    }
}

struct Frame {
    /// Subdirectories still to remove.
    pending: Vec<CString>,
    /// Name of this directory in its parent (`None` for the top).
    name: Option<CString>,
}

/// Empties the directory `top` (which itself stays).
fn empty_dir(top: OwnedFd) -> io::Result<()> {
    let mut cur = top;
    let mut stack = vec![Frame {
        pending: scan(cur.as_fd())?,
        name: None,
    }];
    while let Some(frame) = stack.last_mut() {
        if let Some(child) = frame.pending.pop() {
            match open_dir_fixing_perms(cur.as_fd(), &child) {
                Ok(fd) => {
                    cur = fd;
                    let pending = scan(cur.as_fd())?;
                    stack.push(Frame {
                        pending,
                        name: Some(child),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let frame = stack.pop().expect("stack is not empty");
        let Some(name) = frame.name else { break };
        // `..` of a directory we opened is its real parent: no symlink can be involved.
        cur = sys::open_dir_nofollow(cur.as_fd(), c"..")?;
        ignore_missing(sys::unlinkat(cur.as_fd(), &name, libc::AT_REMOVEDIR))?;
    }
    Ok(())
}

/// Unlinks every non-directory in `dir` and returns the names of its subdirectories.
fn scan(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let st = sys::fstat(dir)?;
    // Unlinking needs write and search permission on the directory itself.
    if st.st_mode & 0o300 != 0o300 {
        sys::fchmod(dir, (st.st_mode & 0o7777) | 0o700)?;
    }
    let mut subdirs = Vec::new();
    let reader = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut stream = nix::dir::Dir::from_fd(reader).map_err(io::Error::from)?;
    for entry in stream.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            Some(nix::dir::Type::Directory) => true,
            Some(_) => false,
            None => match sys::lstatat(dir, name) {
                Ok(st) => sys::is_dir(&st),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            },
        };
        if is_dir {
            subdirs.push(name.to_owned());
        } else {
            ignore_missing(sys::unlinkat(dir, name, 0))?;
        }
    }
    Ok(subdirs)
}
