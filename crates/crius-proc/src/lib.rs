//! Waiting for a child process with a deadline.
//!
//! Helpers such as runc and CNI plugins sit on the pod start path, so their exit must be seen
//! the moment it happens: a sleep-and-poll loop adds up to its interval to every call. A pidfd
//! becomes readable when the process exits, so `poll(2)` on it wakes exactly then.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child` for at most `timeout`. On timeout the child is killed (SIGKILL) and
/// reaped, and `Ok(None)` is returned.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    match pidfd_open(child.id()) {
        Ok(fd) => loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return kill_and_reap(child);
            }
            poll_readable(&fd, left)?;
        },
        // Kernels before 5.3 have no pidfd: fall back to a short poll.
        Err(_) => loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return kill_and_reap(child);
            }
            std::thread::sleep(Duration::from_millis(1));
        },
    }
}

/// Calls `ready` until it returns true or `timeout` passes; returns whether it became ready.
/// The first checks come quickly (1 ms apart, doubling up to `max_interval`) because most waits
/// on the pod start and stop paths end within a few milliseconds.
pub fn poll_until<E>(
    timeout: Duration,
    max_interval: Duration,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<bool, E> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1).min(max_interval);
    loop {
        if ready()? {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(max_interval);
    }
}

/// Whether process `pid` exists and has not exited (a zombie counts as exited).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may hold spaces and parentheses: the state follows the last ')'.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn kill_and_reap(child: &mut Child) -> io::Result<Option<ExitStatus>> {
    let _ = child.kill();
    child.wait()?;
    Ok(None)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until `fd` is readable or `timeout` passes (EINTR counts as a wake-up).
fn poll_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up so a sub-millisecond remainder does not spin.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn returns_the_exit_status_at_once() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let start = Instant::now();
        let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn poll_until_reports_ready_and_timeout() {
        let mut n = 0;
        let ok: Result<bool, ()> =
            poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
                n += 1;
                Ok(n == 3)
            });
        assert_eq!(ok, Ok(true));
        let start = Instant::now();
        let late: Result<bool, ()> =
            poll_until(Duration::from_millis(50), Duration::from_millis(10), || {
                Ok(false)
            });
        assert_eq!(late, Ok(false));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let err: Result<bool, &str> =
            poll_until(Duration::from_secs(1), Duration::ZERO, || Err("x"));
        assert_eq!(err, Err("x"));
    }

    #[test]
    fn alive_tells_running_from_exited() {
        assert!(alive(std::process::id()));
        let mut child = Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie is not alive.
        assert!(
            poll_until(Duration::from_secs(5), Duration::from_millis(5), || {
                Ok::<_, ()>(!alive(pid))
            })
            .unwrap()
        );
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn kills_and_reaps_past_the_deadline() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let start = Instant::now();
        let status = wait_timeout(&mut child, Duration::from_millis(100)).unwrap();
        assert!(status.is_none());
        assert!(start.elapsed() < Duration::from_secs(5));
        // Reaped: nothing left to wait for.
        assert!(child.try_wait().unwrap().is_some());
    }
}
