//! Attach: clients joining a container's stdio (see `crius_monitor::attach` for the framing).
//!
//! Output is copied to every attacher as it is logged; the log never waits for an attacher:
//! one whose unsent output passes [`MAX_WBUF`] is dropped. Attachers' input goes through a
//! bounded buffer per container; while it is full their connections are not read, so a
//! container that does not read its stdin slows its attachers, never the monitor.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crius_monitor::attach::{self as frame, FrameError};
use crius_monitor::cri_log::Stream;
use crius_monitor::{ContainerStatus, ErrorCode, MonitorError, Response};

use crate::container::Container;
use crate::server::{Conn, Monitor};
use crate::sys;

/// Attachers per container at once.
pub const MAX_ATTACHERS: usize = 16;
/// Output queued for one attacher before it is dropped as too slow.
pub const MAX_WBUF: usize = 4 * 1024 * 1024;
/// Attachers' input queued for a container's stdin.
const MAX_STDIN_BUF: usize = 256 * 1024;
/// Unparsed input read from one attacher.
pub const MAX_RBUF: usize = 2 * frame::MAX_PAYLOAD + frame::HEADER_LEN;

pub struct Attacher {
    pub container: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The attacher's stdin ended (or it never had one).
    pub stdin_done: bool,
}

/// Where attachers' input goes: the console master of a TTY container, else its stdin pipe.
pub fn stdin_fd(c: &Container) -> Option<BorrowedFd<'_>> {
    if c.tty {
        c.stdout.as_ref().map(|p| p.fd.as_fd())
    } else {
        c.stdin.as_ref().map(|f| f.as_fd())
    }
}

/// Copies a chunk of the container's output to its attachers.
pub fn fan_out(conns: &mut [Conn], id: &str, stream: Stream, data: &[u8]) {
    let kind = match stream {
        Stream::Stdout => frame::STDOUT,
        Stream::Stderr => frame::STDERR,
    };
    for c in conns.iter_mut() {
        let Some(a) = &c.attach else { continue };
        let wants = match stream {
            Stream::Stdout => a.stdout,
            Stream::Stderr => a.stderr,
        };
        if a.container != id || !wants || c.dead || c.closing {
            continue;
        }
        if c.wbuf.len() + data.len() > MAX_WBUF {
            // Too slow: drop it rather than buffer without bound or stall the container.
            c.dead = true;
            c.wbuf = Vec::new();
            continue;
        }
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            frame::encode(&mut c.wbuf, kind, chunk);
        }
        send(c);
    }
}

/// Writes what the socket takes now; marks the connection dead on error.
pub fn send(c: &mut Conn) {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.dead = true;
                c.wbuf = Vec::new();
                return;
            }
        }
    }
}

impl Monitor {
    /// The `attach` request: connection `conn` joins the container's stdio.
    pub fn attach(
        &mut self,
        conn: u64,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Response {
        let fail = |code, message: String| Response::Error(MonitorError { code, message });
        let Some(c) = self.containers.iter().find(|c| c.id == id) else {
            return fail(ErrorCode::NotFound, format!("no such container: {id}"));
        };
        if c.status == ContainerStatus::Exited {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("container {id} is not running"),
            );
        }
        if !(stdin || stdout || stderr) {
            return fail(
                ErrorCode::Invalid,
                "attach needs at least one of stdin, stdout and stderr".into(),
            );
        }
        let attached = self
            .conns
            .iter()
            .filter(|c| c.attach.as_ref().is_some_and(|a| a.container == id) && !c.dead)
            .count();
        if attached >= MAX_ATTACHERS {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("container {id} already has {MAX_ATTACHERS} attachers"),
            );
        }
        if let Some(fd) = stdin_fd(c).filter(|_| stdin) {
            // The monitor's own end only: the container's end is another open file.
            if let Err(e) = sys::set_nonblocking(fd) {
                return fail(ErrorCode::Internal, format!("container stdin: {e}"));
            }
        }
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == conn) else {
            return Response::Ok;
        };
        conn.attach = Some(Attacher {
            container: id.to_string(),
            stdin,
            stdout,
            stderr,
            stdin_done: !stdin,
        });
        Response::Ok
    }

    /// Takes the complete frames an attacher sent. `all`: it is gone, so its input is taken
    /// whatever the container's buffer holds (bounded by [`MAX_RBUF`]).
    pub fn process_frames(&mut self, conn: u64, all: bool) {
        let Some(k) = self.conns.iter().position(|c| c.id == conn) else {
            return;
        };
        let Some(cid) = self.conns[k].attach.as_ref().map(|a| a.container.clone()) else {
            return;
        };
        let Some(ci) = self.containers.iter().position(|c| c.id == cid) else {
            self.conns[k].dead = true;
            return;
        };
        let (conn, container) = (&mut self.conns[k], &mut self.containers[ci]);
        let mut used = 0;
        let result: Result<(), FrameError> = loop {
            let (kind, payload, n) = match frame::decode(&conn.rbuf[used..]) {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let a = conn.attach.as_mut().expect("an attacher");
            match kind {
                frame::STDIN => {
                    if !all && container.stdin_buf.len() >= MAX_STDIN_BUF {
                        break Ok(()); // later, once the container has read
                    }
                    if a.stdin && !a.stdin_done && stdin_fd(container).is_some() {
                        container.stdin_buf.extend_from_slice(payload);
                    }
                }
                frame::STDIN_EOF => {
                    if a.stdin && !a.stdin_done {
                        a.stdin_done = true;
                        if container.stdin_once {
                            container.stdin_close_pending = true;
                        }
                    }
                }
                frame::RESIZE => {
                    if container.tty
                        && let (Some((w, h)), Some(p)) =
                            (frame::parse_resize(payload), &container.stdout)
                    {
                        sys::set_winsize(p.fd.as_fd(), w, h);
                    }
                }
                k => break Err(FrameError(format!("frame kind {k} is not for the monitor"))),
            }
            used += n;
        };
        conn.rbuf.drain(..used);
        if let Err(e) = result {
            eprintln!("crius-monitor: attacher of {cid}: {e}");
            conn.dead = true;
        }
        if all {
            conn.rbuf = Vec::new();
        }
        self.flush_stdin(ci);
    }

    /// Writes queued input into the container; closes its stdin when asked to and done.
    fn flush_stdin(&mut self, ci: usize) {
        let c = &mut self.containers[ci];
        while !c.stdin_buf.is_empty() {
            let Some(fd) = stdin_fd(c) else {
                c.stdin_buf = Vec::new();
                break;
            };
            // SAFETY: writing from a valid buffer of the given length.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    c.stdin_buf.as_ptr().cast(),
                    c.stdin_buf.len(),
                )
            };
            if n >= 0 {
                c.stdin_buf.drain(..n as usize);
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return,
                // The container closed its stdin (EPIPE): nobody will read this.
                _ => c.stdin_buf = Vec::new(),
            }
        }
        if c.stdin_buf.capacity() > MAX_STDIN_BUF {
            c.stdin_buf = Vec::new();
        }
        if c.stdin_close_pending {
            c.stdin_close_pending = false;
            // A console has no EOF to give: only a pipe is closed.
            c.stdin = None;
        }
    }

    /// The container's stdin took data: write more, then take attachers' waiting frames.
    pub fn on_stdin_writable(&mut self, fd: RawFd) {
        let Some(ci) = self
            .containers
            .iter()
            .position(|c| stdin_fd(c).is_some_and(|f| f.as_raw_fd() == fd))
        else {
            return;
        };
        self.flush_stdin(ci);
        let id = self.containers[ci].id.clone();
        let waiting: Vec<u64> = self
            .conns
            .iter()
            .filter(|c| c.attach.as_ref().is_some_and(|a| a.container == id) && !c.rbuf.is_empty())
            .map(|c| c.id)
            .collect();
        for conn in waiting {
            self.process_frames(conn, false);
        }
    }

    /// The container exited (`code`) or was deleted: its attachers get the exit and are closed
    /// once their output is sent.
    pub fn end_attachers(&mut self, id: &str, code: Option<i32>) {
        for c in &mut self.conns {
            if c.attach.as_ref().is_some_and(|a| a.container == id) && !c.closing {
                if let Some(code) = code {
                    frame::encode(&mut c.wbuf, frame::EXIT, &code.to_be_bytes());
                }
                c.closing = true;
                send(c);
            }
        }
    }

    /// Drops dead connections and closing ones whose output is sent. An attacher leaving
    /// ends its stdin (closing a `stdin_once` container's stdin); an exec's client leaving
    /// kills the exec'd process.
    pub fn sweep_conns(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            let c = &self.conns[i];
            if !(c.dead || (c.closing && c.wbuf.is_empty())) {
                i += 1;
                continue;
            }
            let c = self.conns.swap_remove(i);
            if c.exec {
                self.exec_client_gone(c.id);
            }
            if let Some(a) = c.attach
                && a.stdin
                && !a.stdin_done
                && let Some(ci) = self.containers.iter().position(|k| k.id == a.container)
                && self.containers[ci].stdin_once
            {
                self.containers[ci].stdin_close_pending = true;
                self.flush_stdin(ci);
            }
        }
    }
}
