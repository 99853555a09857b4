//! The single-threaded poll(2) event loop: client connections, container output, runtime
//! commands in flight, and SIGCHLD (via signalfd) for reaping.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

use crius_monitor::Response;
use crius_monitor::cri_log::now_unix_nanos;

use crate::container::{Container, RecentExits};
use crate::jobs::Job;
use crate::sys;

/// A request line longer than this is refused and the connection closed.
const MAX_REQUEST_LINE: usize = 1024 * 1024;
const READ_BUF: usize = 32 * 1024;

pub struct Conn {
    pub id: u64,
    pub stream: UnixStream,
    pub rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
    /// A request of this connection is being served by a job.
    pub busy: bool,
    /// The connection attached to a container's stdio (it carries frames, no more lines).
    pub attach: Option<crate::attach::Attacher>,
    /// Close once `wbuf` is sent (an attached container exited).
    pub closing: bool,
    /// Close at the next sweep (broken, hostile, or an attacher too slow to keep up).
    pub dead: bool,
    /// The connection runs a streaming exec (it carries frames, no more lines).
    pub exec: bool,
}

impl Conn {
    /// Carries frames (attach or streaming exec) rather than request lines.
    pub fn framed(&self) -> bool {
        self.attach.is_some() || self.exec
    }
}

#[derive(Clone, Copy)]
enum Source {
    Listener,
    Signal,
    Conn(u64),
    Output(RawFd),
    Capture(RawFd),
    Console(i32),
    Stdin(RawFd),
    ExecOut(RawFd),
    ExecIn(RawFd),
}

pub struct Options {
    pub dir: PathBuf,
    /// `dir`, open: console sockets in it are named through it whatever its length.
    pub socket_dir: crius_monitor::socket::SocketDir,
    pub exit_when_empty: bool,
}

pub struct Monitor {
    pub opts: Options,
    listener: UnixListener,
    signals: OwnedFd,
    pub conns: Vec<Conn>,
    next_conn: u64,
    pub containers: Vec<Container>,
    pub jobs: Vec<Job>,
    /// Streaming execs in flight (see `stream_exec.rs`).
    pub execs: Vec<crate::stream_exec::StreamExec>,
    pub recent_exits: RecentExits,
    /// Shutdown requested: `Some(true)` = right away, `Some(false)` = once nothing is alive.
    pub shutdown: Option<bool>,
    pub had_container: bool,
    pub seq: u64,
    pub buf: Box<[u8]>,
    scratch: Vec<u8>,
}

impl Monitor {
    pub fn new(listener: UnixListener, signals: OwnedFd, opts: Options) -> io::Result<Monitor> {
        listener.set_nonblocking(true)?;
        Ok(Monitor {
            opts,
            listener,
            signals,
            conns: Vec::new(),
            next_conn: 0,
            containers: Vec::new(),
            jobs: Vec::new(),
            execs: Vec::new(),
            recent_exits: RecentExits::new(),
            shutdown: None,
            had_container: false,
            seq: 0,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            scratch: Vec::new(),
        })
    }

    pub fn run(&mut self) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut srcs: Vec<Source> = Vec::new();
        while !self.should_exit() {
            fds.clear();
            srcs.clear();
            self.poll_set(&mut fds, &mut srcs);
            let timeout = self.poll_timeout();
            match sys::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for (pfd, src) in fds.iter().zip(srcs.iter()) {
                if pfd.revents != 0 {
                    self.dispatch(*src, pfd.revents);
                }
            }
            self.expire_jobs();
            self.expire_execs();
            self.sweep_conns();
        }
        self.kill_all_execs();
        // Best effort: answer whoever is still waiting (e.g. the shutdown request itself).
        for c in &mut self.conns {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.write_all(&c.wbuf);
        }
        self.flush_outputs();
        Ok(())
    }

    fn should_exit(&self) -> bool {
        match self.shutdown {
            Some(true) => true,
            Some(false) => {
                self.jobs.is_empty()
                    && self.execs.is_empty()
                    && !self.containers.iter().any(|c| c.alive())
            }
            None => {
                self.opts.exit_when_empty
                    && self.had_container
                    && self.containers.is_empty()
                    && self.jobs.is_empty()
                    && self.execs.is_empty()
            }
        }
    }

    fn poll_set(&self, fds: &mut Vec<libc::pollfd>, srcs: &mut Vec<Source>) {
        let mut add = |fd: RawFd, events: i16, src: Source| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            srcs.push(src);
        };
        // Output first and the signalfd last, so a container's final output is logged before
        // its exit is recorded within one wakeup.
        for c in &self.containers {
            for p in [&c.stdout, &c.stderr].into_iter().flatten() {
                add(
                    p.fd.as_raw_fd(),
                    libc::POLLIN,
                    Source::Output(p.fd.as_raw_fd()),
                );
            }
        }
        for j in &self.jobs {
            for c in [&j.stdout, &j.stderr].into_iter().flatten() {
                if let Some(fd) = &c.fd {
                    add(
                        fd.as_raw_fd(),
                        libc::POLLIN,
                        Source::Capture(fd.as_raw_fd()),
                    );
                }
            }
            if let crate::jobs::JobKind::Create(p) = &j.kind
                && let Some((l, _)) = &p.console
                && p.console_master.is_none()
            {
                add(l.as_raw_fd(), libc::POLLIN, Source::Console(j.pid));
            }
        }
        for c in &self.containers {
            if !c.stdin_buf.is_empty()
                && let Some(fd) = crate::attach::stdin_fd(c)
            {
                add(fd.as_raw_fd(), libc::POLLOUT, Source::Stdin(fd.as_raw_fd()));
            }
        }
        for e in &self.execs {
            let lags = self
                .conns
                .iter()
                .find(|c| c.id == e.conn)
                .is_none_or(|c| c.wbuf.len() >= crate::stream_exec::MAX_OUT_QUEUE);
            e.poll_fds(lags, &mut |fd, input| {
                if input {
                    add(fd, libc::POLLOUT, Source::ExecIn(fd));
                } else {
                    add(fd, libc::POLLIN, Source::ExecOut(fd));
                }
            });
        }
        for c in &self.conns {
            let mut ev = libc::POLLIN;
            // A framed connection's input waits while the container or exec'd process does
            // not take it (bounded).
            if c.framed() && (c.closing || c.rbuf.len() >= crate::attach::MAX_RBUF) {
                ev = 0;
            }
            if !c.wbuf.is_empty() {
                ev |= libc::POLLOUT;
            }
            add(c.stream.as_raw_fd(), ev, Source::Conn(c.id));
        }
        add(self.listener.as_raw_fd(), libc::POLLIN, Source::Listener);
        add(self.signals.as_raw_fd(), libc::POLLIN, Source::Signal);
    }

    fn poll_timeout(&self) -> libc::c_int {
        if self.jobs.iter().any(crate::handlers::kill_pending) {
            return 20; // waiting for an exec's pid file to kill its process
        }
        let now = Instant::now();
        self.jobs
            .iter()
            .filter(|j| !j.timed_out)
            .filter_map(|j| j.deadline)
            .map(|d| d.saturating_duration_since(now).as_millis().min(60_000) as libc::c_int + 1)
            .chain(self.exec_timeout())
            .min()
            .unwrap_or(-1)
    }

    fn dispatch(&mut self, src: Source, revents: i16) {
        match src {
            Source::Listener => self.accept(),
            Source::Signal => self.on_signals(),
            Source::Conn(id) => self.on_conn(id, revents),
            Source::Output(fd) => self.on_output(fd),
            Source::Capture(fd) => {
                let buf = &mut self.buf;
                for j in &mut self.jobs {
                    for c in [&mut j.stdout, &mut j.stderr].into_iter().flatten() {
                        if c.fd.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
                            c.pump(buf);
                        }
                    }
                }
            }
            Source::Console(pid) => self.on_console(pid),
            Source::Stdin(fd) => self.on_stdin_writable(fd),
            Source::ExecOut(fd) => self.on_exec_output(fd),
            Source::ExecIn(fd) => self.on_exec_input_writable(fd),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.next_conn += 1;
                    self.conns.push(Conn {
                        id: self.next_conn,
                        stream,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        busy: false,
                        attach: None,
                        closing: false,
                        dead: false,
                        exec: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn on_signals(&mut self) {
        let sigs = sys::read_signals(self.signals.as_fd());
        if sigs.contains(&(libc::SIGTERM as u32)) || sigs.contains(&(libc::SIGINT as u32)) {
            // Containers keep running; criusd can start a new monitor only for new pods.
            self.shutdown = Some(true);
        }
        // Reap everything, whatever the signals said: SIGCHLD coalesces.
        while let Some((pid, status)) = sys::reap_one() {
            self.on_reaped(pid, sys::exit_code(status));
        }
    }

    fn on_reaped(&mut self, pid: i32, code: i32) {
        if let Some(i) = self.jobs.iter().position(|j| j.pid == pid) {
            let job = self.jobs.swap_remove(i);
            self.finish_job(job, code);
            return;
        }
        if let Some(i) = self
            .execs
            .iter()
            .position(|e| e.pid == pid && e.exit().is_none())
        {
            self.on_exec_reaped(i, code);
            return;
        }
        if let Some(i) = self
            .containers
            .iter()
            .position(|c| c.pid == pid && c.alive())
        {
            let at = now_unix_nanos();
            // Log what the container wrote before dying ahead of recording the exit.
            self.pump_container(i, true);
            self.containers[i].record_exit(code, at);
            let id = self.containers[i].id.clone();
            self.end_attachers(&id, Some(code));
            self.delete_after_exit(i);
            return;
        }
        // An orphan re-parented to us (subreaper), or a container init we have not
        // registered yet; reaping it is all that is needed, but remember the status.
        self.recent_exits.push(pid, code);
    }

    fn on_output(&mut self, fd: RawFd) {
        if let Some(i) = self.containers.iter().position(|c| {
            [&c.stdout, &c.stderr]
                .into_iter()
                .flatten()
                .any(|p| p.fd.as_raw_fd() == fd)
        }) {
            self.pump_container(i, false);
        }
    }

    /// Drains a container's output pipes; closes those at EOF.
    pub fn pump_container(&mut self, i: usize, all: bool) {
        let c = &mut self.containers[i];
        let conns = &mut self.conns;
        let id = &c.id;
        let mut tee = |stream, data: &[u8]| crate::attach::fan_out(conns, id, stream, data);
        for p in [&mut c.stdout, &mut c.stderr] {
            if let Some(pipe) = p
                && pipe.pump(&mut c.log, &mut self.buf, &mut self.scratch, all, &mut tee)
            {
                *p = None;
            }
        }
    }

    fn flush_outputs(&mut self) {
        for i in 0..self.containers.len() {
            self.pump_container(i, true);
        }
    }

    pub fn pump_job(&mut self, job: &mut Job) {
        job.pump(&mut self.buf);
    }

    fn on_conn(&mut self, id: u64, revents: i16) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        if revents & libc::POLLOUT != 0 && !self.flush_conn(i) {
            return;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
            return;
        }
        let c = &mut self.conns[i];
        if c.framed() && (c.closing || c.rbuf.len() >= crate::attach::MAX_RBUF) {
            // Not reading (see poll_set); a hangup still ends the attacher.
            if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                c.dead = true;
            }
            return;
        }
        loop {
            if c.framed() && c.rbuf.len() >= crate::attach::MAX_RBUF {
                break;
            }
            match c.stream.read(&mut self.buf) {
                Ok(0) if c.exec => {
                    // The exec's client is gone: the sweep kills its process.
                    c.dead = true;
                    return;
                }
                Ok(0) if c.attach.is_some() => {
                    // What the attacher sent before leaving still goes to the container.
                    self.process_frames(id, true);
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                        c.dead = true;
                    }
                    return;
                }
                Ok(0) => {
                    // Client gone (closed or killed). A job it started still completes, but
                    // an exec nobody waits for any more is killed (ExecSync cancelled).
                    self.conns.swap_remove(i);
                    self.cancel_execs_of(id);
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.buf[..n]);
                    if c.rbuf.len() > MAX_REQUEST_LINE && !c.rbuf.contains(&b'\n') {
                        self.conns.swap_remove(i);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if c.framed() => {
                    c.dead = true;
                    return;
                }
                Err(_) => {
                    self.conns.swap_remove(i);
                    self.cancel_execs_of(id);
                    return;
                }
            }
        }
        if self.conns[i].exec {
            self.process_exec_frames(id);
        } else if self.conns[i].attach.is_some() {
            self.process_frames(id, false);
        } else {
            self.process_lines(id);
        }
    }

    /// Kills the exec jobs connection `id` started; each still completes as a job.
    fn cancel_execs_of(&mut self, id: u64) {
        for j in &mut self.jobs {
            if j.conn == Some(id) && matches!(j.kind, crate::jobs::JobKind::Exec { .. }) {
                j.conn = None;
                crate::handlers::kill_job(j);
            }
        }
    }

    /// Serves buffered request lines of connection `id` until one needs a job.
    pub fn process_lines(&mut self, id: u64) {
        loop {
            let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
                return;
            };
            if c.busy {
                return;
            }
            let Some(nl) = c.rbuf.iter().position(|&b| b == b'\n') else {
                if c.rbuf.is_empty() && c.rbuf.capacity() > 4096 {
                    c.rbuf = Vec::new();
                }
                return;
            };
            let line: Vec<u8> = c.rbuf.drain(..=nl).collect();
            match self.handle_line(&line, id) {
                Some(resp) => {
                    self.respond(id, &resp);
                    // The rest of the connection is frames.
                    if self.conns.iter().any(|c| c.id == id && c.exec) {
                        self.process_exec_frames(id);
                        return;
                    }
                    if self.conns.iter().any(|c| c.id == id && c.attach.is_some()) {
                        self.process_frames(id, false);
                        return;
                    }
                }
                None => {
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                        c.busy = true;
                    }
                }
            }
        }
    }

    /// Queues a response on connection `id` (dropped if it is gone) and tries to send it.
    pub fn respond(&mut self, id: u64, resp: &Response) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let c = &mut self.conns[i];
        c.busy = false;
        c.wbuf = resp.encode_into(std::mem::take(&mut c.wbuf));
        self.flush_conn(i);
    }

    /// Writes what the socket takes; false if the connection was dropped.
    fn flush_conn(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        while !c.wbuf.is_empty() {
            match c.stream.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) if c.framed() => {
                    // Removed by the sweep, which also ends the attacher's stdin (or kills
                    // the exec).
                    c.dead = true;
                    c.wbuf.clear();
                    return false;
                }
                Err(_) => {
                    self.conns.swap_remove(i);
                    return false;
                }
            }
        }
        // A large exec result must not pin its buffer for the connection's lifetime.
        if c.wbuf.capacity() > 64 * 1024 {
            c.wbuf = Vec::new();
        }
        true
    }

    fn expire_jobs(&mut self) {
        let now = Instant::now();
        for j in &mut self.jobs {
            if !j.timed_out && j.deadline.is_some_and(|d| d <= now) {
                j.timed_out = true;
                crate::handlers::kill_job(j);
            } else if crate::handlers::kill_pending(j) {
                crate::handlers::kill_job(j);
            }
        }
    }

    fn on_console(&mut self, pid: i32) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.pid == pid) else {
            return;
        };
        crate::handlers::receive_console(job);
    }
}
