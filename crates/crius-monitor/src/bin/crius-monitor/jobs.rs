//! Runtime commands in flight. Each is a child process reaped by the event loop; its result
//! becomes the response to the connection that asked for it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

use crate::container::Container;
use crate::sys;

/// Output captured from a runtime command, bounded.
pub struct Capture {
    pub fd: Option<OwnedFd>,
    pub data: Vec<u8>,
    limit: usize,
}

impl Capture {
    pub fn new(fd: OwnedFd, limit: usize) -> io::Result<Capture> {
        sys::set_nonblocking(fd.as_fd())?;
        Ok(Capture {
            fd: Some(fd),
            data: Vec::new(),
            limit,
        })
    }

    /// Reads what is available; past the limit the data is dropped but the pipe drained.
    /// Closes the fd at EOF.
    pub fn pump(&mut self, buf: &mut [u8]) {
        while let Some(fd) = &self.fd {
            match sys::read(fd.as_fd(), buf) {
                Ok(0) => self.fd = None,
                Ok(n) => {
                    let keep = n.min(self.limit.saturating_sub(self.data.len()));
                    self.data.extend_from_slice(&buf[..keep]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.fd = None,
            }
        }
    }
}

pub struct PendingCreate {
    pub container: Container,
    pub bundle: PathBuf,
    /// `--console-socket` listener for tty containers, and its path (removed afterwards).
    pub console: Option<(UnixListener, PathBuf)>,
    pub console_master: Option<OwnedFd>,
}

pub enum JobKind {
    Create(Box<PendingCreate>),
    Start {
        id: String,
    },
    Kill,
    Update,
    Delete {
        id: String,
        /// Run by the monitor itself once the container exited (as containerd deletes a
        /// task on its exit), so RemoveContainer later does no runtime work.
        after_exit: bool,
    },
    Exec {
        process_file: PathBuf,
        pid_file: PathBuf,
        /// Killing was asked for before the runtime wrote the pid file: retried each wakeup
        /// (killing the runtime then would orphan the process it is starting).
        kill_pending_since: Option<std::time::Instant>,
    },
}

pub struct Job {
    pub pid: i32,
    /// Connection waiting for the answer (gone if the client went away).
    pub conn: Option<u64>,
    pub kind: JobKind,
    pub stdout: Option<Capture>,
    pub stderr: Option<Capture>,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
}

impl Job {
    pub fn pump(&mut self, buf: &mut [u8]) {
        for c in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            c.pump(buf);
        }
    }

    /// Captured stderr (then stdout) as text, for error messages.
    pub fn output_text(&self) -> String {
        let mut s = String::new();
        for c in [&self.stderr, &self.stdout].into_iter().flatten() {
            s.push_str(String::from_utf8_lossy(&c.data).trim());
        }
        s
    }
}
