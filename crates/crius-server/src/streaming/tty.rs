//! The terminal of a TTY exec. The OCI runtime, run in the foreground with a terminal of
//! criusd's as its stdio, allocates the container's pty itself and copies between the two,
//! resizing its pty when told (SIGWINCH) to the size of ours. (A console socket would hand
//! the container's pty to criusd directly, but runc accepts one only with --detach, and a
//! detached exec's exit code is lost to criusd's orphan reaper.)

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crius_streaming::TermSize;

/// A new pty pair: (master, slave).
pub fn open_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let p = nix::pty::openpty(None, None)?;
    Ok((p.master, p.slave))
}

/// The master, non-blocking, for async reads and writes.
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    pub fn new(fd: OwnedFd) -> io::Result<Master> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which neither replaces nor closes
        // it while registered.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Master { fd })
    }

    /// Reads output; `Ok(0)` once every process holding the terminal is gone (EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, size: TermSize) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        let r =
            unsafe { libc::ioctl(self.fd.get_ref().as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
