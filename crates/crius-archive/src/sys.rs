//! Thin wrappers over the `*at` syscalls the unpacker needs.
//!
//! Everything works relative to a directory fd so that no path is ever resolved from `/` and no
//! symlink is followed by accident. nix lacks a few of these (openat2, xattrs, linkat flags we
//! want), so libc is used directly for all of them, keeping one style.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a syscall interrupted by a signal.
fn retry(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let fd = retry(|| {
        // SAFETY: `name` is NUL-terminated and `dir` is a live fd.
        unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        }
    })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an existing directory component without following a symlink there.
pub(crate) fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

// Lets a test force the component-by-component walk on its own thread.
#[cfg(test)]
thread_local! {
    pub(crate) static FORCE_WALK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Cleared the first time openat2 turns out to be missing (kernel < 5.6 or a seccomp filter).
static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

/// Opens directory `path` (relative, already normalised) beneath `root`, refusing any symlink on
/// the way. Returns `None` when openat2 is unavailable so the caller walks by hand.
pub(crate) fn openat2_dir_beneath(
    root: BorrowedFd<'_>,
    path: &CStr,
) -> Option<io::Result<OwnedFd>> {
    if !HAVE_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    #[cfg(test)]
    if FORCE_WALK.with(|f| f.get()) {
        return None;
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    let res = retry(|| {
        // SAFETY: `how` is a valid open_how of the size passed; `path` is NUL-terminated.
        unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            ) as libc::c_int
        }
    });
    match res {
        // SAFETY: fresh fd from the kernel, owned by nobody else.
        Ok(fd) => Some(Ok(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
            HAVE_OPENAT2.store(false, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e)),
    }
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated strings.
    retry(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Hard link without AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    retry(|| {
        // SAFETY: valid fds and NUL-terminated names.
        unsafe {
            libc::linkat(
                old_dir.as_raw_fd(),
                old.as_ptr(),
                new_dir.as_raw_fd(),
                new.as_ptr(),
                0,
            )
        }
    })
    .map(drop)
}

pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    retry(|| unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// lstat relative to `dir`.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; the kernel fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| {
        // SAFETY: valid fd, NUL-terminated name, `st` is a valid out pointer.
        unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    })?;
    Ok(st)
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; the kernel fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// lchown relative to `dir`.
pub(crate) fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    retry(|| {
        // SAFETY: valid fd and NUL-terminated name.
        unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    })
    .map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// chmod relative to `dir`. Follows a final symlink, so only call it on entries just created
/// as something else (devices, fifos, directories).
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    retry(|| unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, ts: &libc::timespec) -> io::Result<()> {
    let times = [*ts, *ts];
    // SAFETY: valid fd and a two-element timespec array.
    retry(|| unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// Sets atime and mtime of `name` in `dir` without following a final symlink.
pub(crate) fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, ts: &libc::timespec) -> io::Result<()> {
    let times = [*ts, *ts];
    retry(|| {
        // SAFETY: valid fd, NUL-terminated name, two-element timespec array.
        unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    })
    .map(drop)
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    retry(|| {
        // SAFETY: valid fd, NUL-terminated key, value pointer and length from one slice.
        unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    })
    .map(drop)
}

/// lsetxattr on a full path (the caller builds it from `/proc/self/fd/<dirfd>/<name>`, so
/// only the final component is looked up, without following it).
pub(crate) fn lsetxattr(path: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    retry(|| {
        // SAFETY: NUL-terminated path and key, value pointer and length from one slice.
        unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    })
    .map(drop)
}

pub(crate) fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}
