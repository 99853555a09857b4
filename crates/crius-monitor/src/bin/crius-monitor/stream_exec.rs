//! Streaming exec (CRI `Exec`): `<runtime> exec` run in the foreground with stdio the monitor
//! owns (pipes, or a pty it allocates when the client wants a terminal), relayed as frames on
//! the client's connection (see `crius_monitor::attach`), then the exit code.
//!
//! The process lives as long as that connection: once the client is gone (its session ended,
//! or criusd died) the exec'd process is killed, then the runtime. Bounds: [`MAX_STREAM_EXECS`]
//! per monitor; the process's output is not read while its client has [`MAX_OUT_QUEUE`] bytes
//! unsent (back-pressure: the process waits, nothing is dropped); the client's input is
//! queued up to [`MAX_STDIN_BUF`], after which its connection is not read until the process
//! takes some.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_monitor::attach::{self as frame, FrameError};
use crius_monitor::{
    ContainerStatus, ErrorCode, MAX_STREAM_EXECS, MonitorError, Response, StreamExecRequest,
};

use crate::runtime::{self, Stdio3};
use crate::server::Monitor;
use crate::sys;

/// Output queued for a client before the process's output is left unread.
pub const MAX_OUT_QUEUE: usize = 256 * 1024;
/// Client input queued for the process.
const MAX_STDIN_BUF: usize = 256 * 1024;
/// How long output may keep flowing once the runtime exited (a background child of the
/// process may hold the pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long a kill waits for the runtime to write the process's pid file.
const PID_WAIT: Duration = Duration::from_secs(5);
/// Reads per stream and wakeup, so one busy exec cannot starve the rest of the pod.
const READS_PER_WAKEUP: usize = 8;
/// The runtime's log read to explain a failure.
const LOG_LIMIT: u64 = 64 * 1024;

pub struct StreamExec {
    /// The client's connection (it carries frames).
    pub conn: u64,
    /// The runtime (`<runtime> exec` in the foreground).
    pub pid: i32,
    tty: bool,
    /// Write end of the process's stdin pipe (no tty).
    stdin: Option<OwnedFd>,
    /// The stdout pipe's read end, or the pty master.
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    /// The client's stdin ended: close the process's once `stdin_buf` is written.
    stdin_eof: bool,
    process_file: PathBuf,
    pid_file: PathBuf,
    log_file: PathBuf,
    /// The runtime's exit code, once reaped.
    exit: Option<i32>,
    /// Set at exit: output still open then is cut.
    drain_until: Option<Instant>,
    client_gone: bool,
    /// A kill was asked for before the runtime wrote the pid file (retried each wakeup:
    /// killing the runtime then would orphan the process it is starting).
    kill_pending_since: Option<Instant>,
}

impl Drop for StreamExec {
    fn drop(&mut self) {
        for p in [&self.process_file, &self.pid_file, &self.log_file] {
            let _ = fs::remove_file(p);
        }
    }
}

impl StreamExec {
    /// Where the client's input goes: the pty master or the stdin pipe.
    fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.tty {
            self.stdout.as_ref().map(|f| f.as_fd())
        } else {
            self.stdin.as_ref().map(|f| f.as_fd())
        }
    }

    /// The runtime's exit code, once reaped.
    pub fn exit(&self) -> Option<i32> {
        self.exit
    }

    fn has_output(&self, fd: RawFd) -> bool {
        [&self.stdout, &self.stderr]
            .into_iter()
            .flatten()
            .any(|f| f.as_raw_fd() == fd)
    }

    /// The fds to poll: outputs (unless the client lags) and the input while input waits.
    pub fn poll_fds(&self, client_lags: bool, out: &mut dyn FnMut(RawFd, bool)) {
        if self.client_gone {
            return;
        }
        if !client_lags {
            for f in [&self.stdout, &self.stderr].into_iter().flatten() {
                out(f.as_raw_fd(), false);
            }
        }
        if !self.stdin_buf.is_empty()
            && let Some(fd) = self.input_fd()
        {
            out(fd.as_raw_fd(), true);
        }
    }

    /// Kills the exec'd process, then the runtime; waits (retried by the caller) while the
    /// runtime has not written the pid file yet.
    fn kill(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if !kill_process(&self.pid_file) {
            let since = *self.kill_pending_since.get_or_insert_with(Instant::now);
            if since.elapsed() < PID_WAIT {
                return;
            }
        }
        self.kill_pending_since = None;
        sys::kill(self.pid, libc::SIGKILL);
    }
}

/// True when the process was found (by its pid file) and signalled.
fn kill_process(pid_file: &Path) -> bool {
    match fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    {
        Some(pid) => {
            sys::kill(pid, libc::SIGKILL);
            true
        }
        None => false,
    }
}

/// The exit code the client sees: the runtime's (the process's own, 128+n for signal n), but
/// when the runtime failed before the command ran (255), 127 or 126 for a missing or not
/// executable command, as a shell reports them.
pub fn client_exit_code(runtime_code: i32, runtime_log: &str) -> i32 {
    if runtime_code != 255 {
        return runtime_code;
    }
    let lower = runtime_log.to_ascii_lowercase();
    if lower.contains("executable file not found") || lower.contains("no such file") {
        127
    } else if lower.contains("permission denied") {
        126
    } else {
        255
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(LOG_LIMIT).read_to_string(&mut s);
    }
    s
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(MonitorError {
        code,
        message: message.into(),
    })
}

impl Monitor {
    /// The `stream-exec` request: starts the process; connection `conn` then carries frames.
    pub fn stream_exec(&mut self, conn: u64, req: StreamExecRequest) -> Response {
        let Some(c) = self.containers.iter().find(|c| c.id == req.id) else {
            return error(
                ErrorCode::NotFound,
                format!("no such container: {}", req.id),
            );
        };
        if c.status != ContainerStatus::Running {
            return error(
                ErrorCode::FailedPrecondition,
                format!("container {} is not running", req.id),
            );
        }
        if req.argv.is_empty() {
            return error(ErrorCode::Invalid, "exec needs a command");
        }
        if self.execs.len() >= MAX_STREAM_EXECS {
            return error(
                ErrorCode::ResourceExhausted,
                format!("the pod already runs {MAX_STREAM_EXECS} streaming execs"),
            );
        }
        let (runtime, root, systemd) =
            (c.runtime.clone(), c.runtime_root.clone(), c.systemd_cgroup);
        self.seq += 1;
        let base = self.opts.dir.join(format!("stream-exec-{}", self.seq));
        let mut e = StreamExec {
            conn,
            pid: 0,
            tty: req.tty,
            stdin: None,
            stdout: None,
            stderr: None,
            stdin_buf: Vec::new(),
            stdin_eof: false,
            process_file: base.with_extension("json"),
            pid_file: base.with_extension("pid"),
            log_file: base.with_extension("log"),
            exit: None,
            drain_until: None,
            client_gone: false,
            kill_pending_since: None,
        };
        // From here on dropping `e` removes whatever files were written.
        if let Err(err) = fs::write(&e.process_file, runtime::exec_process_json(&req.process())) {
            return internal("writing the exec process file", err);
        }
        let stdio = match exec_stdio(&req, &mut e) {
            Ok(io) => io,
            Err(err) => return internal("creating the exec's stdio", err),
        };
        let mut args: Vec<&OsStr> = Vec::with_capacity(12);
        if systemd {
            // A global flag: before the subcommand, as for create and update.
            args.push("--systemd-cgroup".as_ref());
        }
        args.extend::<[&OsStr; 8]>([
            "--log".as_ref(),
            e.log_file.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
            "exec".as_ref(),
            "--process".as_ref(),
            e.process_file.as_os_str(),
            "--pid-file".as_ref(),
        ]);
        args.push(e.pid_file.as_os_str());
        if req.tty {
            args.push("--tty".as_ref());
        }
        args.push(req.id.as_ref());
        match runtime::spawn(&runtime, &root, &args, stdio) {
            Ok(pid) => e.pid = pid,
            Err(err) => return internal(&format!("running {}", runtime.display()), err),
        }
        self.execs.push(e);
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
            c.exec = true;
        }
        Response::Ok
    }

    /// Output of an exec is readable: relay it.
    pub fn on_exec_output(&mut self, fd: RawFd) {
        if let Some(i) = self.execs.iter().position(|e| e.has_output(fd)) {
            self.pump_exec(i);
            self.finish_exec_if_done(i);
        }
    }

    /// Reads the exec's output into its client's queue (up to [`MAX_OUT_QUEUE`]) and sends.
    fn pump_exec(&mut self, i: usize) {
        let e = &mut self.execs[i];
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == e.conn) else {
            return;
        };
        let buf = &mut self.buf;
        for (slot, kind) in [
            (&mut e.stdout, frame::STDOUT),
            (&mut e.stderr, frame::STDERR),
        ] {
            let mut reads = 0;
            while let Some(fd) = slot.as_ref() {
                if reads == READS_PER_WAKEUP || conn.wbuf.len() >= MAX_OUT_QUEUE {
                    break;
                }
                reads += 1;
                match sys::read(fd.as_fd(), buf) {
                    Ok(0) => *slot = None,
                    Ok(n) => {
                        for chunk in buf[..n].chunks(frame::MAX_PAYLOAD) {
                            frame::encode(&mut conn.wbuf, kind, chunk);
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    // EIO: a pty master whose slave every process closed.
                    Err(_) => *slot = None,
                }
            }
        }
        crate::attach::send(conn);
    }

    /// The runtime was reaped: the process ended (or never started).
    pub fn on_exec_reaped(&mut self, i: usize, code: i32) {
        let e = &mut self.execs[i];
        e.exit = Some(code);
        e.stdin = None;
        e.stdin_buf = Vec::new();
        if e.client_gone {
            // Started after the last kill attempt? Then it is still there: kill it too.
            kill_process(&e.pid_file);
            self.execs.swap_remove(i);
            return;
        }
        e.drain_until = Some(Instant::now() + DRAIN_GRACE);
        self.pump_exec(i);
        self.finish_exec_if_done(i);
    }

    /// Once the runtime exited and its output ended (or its grace ran out): the exit frame,
    /// then the connection closes.
    fn finish_exec_if_done(&mut self, i: usize) {
        let e = &self.execs[i];
        let Some(code) = e.exit else { return };
        let cut = e.drain_until.is_some_and(|d| d <= Instant::now());
        if !(cut || (e.stdout.is_none() && e.stderr.is_none())) {
            return;
        }
        let e = self.execs.swap_remove(i);
        let code = client_exit_code(
            code,
            &if code == 255 {
                read_log(&e.log_file)
            } else {
                String::new()
            },
        );
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == e.conn) {
            frame::encode(&mut c.wbuf, frame::EXIT, &code.to_be_bytes());
            c.closing = true;
            crate::attach::send(c);
        }
    }

    /// Kills pending and drains that ran out of time; called every wakeup.
    pub fn expire_execs(&mut self) {
        for e in &mut self.execs {
            if e.kill_pending_since.is_some() {
                e.kill();
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            let before = self.execs.len();
            if self.execs[i].drain_until.is_some_and(|d| d <= now) {
                self.finish_exec_if_done(i);
            }
            if self.execs.len() == before {
                i += 1;
            }
        }
    }

    /// When the loop must wake up next for the execs (kill retries, drain deadlines).
    pub fn exec_timeout(&self) -> Option<libc::c_int> {
        let now = Instant::now();
        self.execs
            .iter()
            .filter_map(|e| {
                if e.kill_pending_since.is_some() {
                    Some(20)
                } else {
                    e.drain_until
                        .map(|d| d.saturating_duration_since(now).as_millis() as libc::c_int + 1)
                }
            })
            .min()
    }

    /// The client of connection `conn` is gone: its exec's process is killed.
    pub fn exec_client_gone(&mut self, conn: u64) {
        let Some(i) = self
            .execs
            .iter()
            .position(|e| e.conn == conn && !e.client_gone)
        else {
            return;
        };
        let e = &mut self.execs[i];
        e.client_gone = true;
        e.stdin_buf = Vec::new();
        if e.exit.is_some() {
            self.execs.swap_remove(i);
            return;
        }
        eprintln!(
            "crius-monitor: streaming exec {} lost its client: killing it",
            e.pid
        );
        e.kill();
        // Nobody reads the output any more: a process still writing gets EPIPE.
        (e.stdin, e.stdout, e.stderr) = (None, None, None);
    }

    /// The monitor is exiting: no exec survives it (nothing would relay its stdio).
    pub fn kill_all_execs(&mut self) {
        for e in &mut self.execs {
            if e.exit.is_none() {
                kill_process(&e.pid_file);
                sys::kill(e.pid, libc::SIGKILL);
            }
        }
        self.execs.clear();
    }

    /// Takes the complete frames the exec's client sent.
    pub fn process_exec_frames(&mut self, conn: u64) {
        let Some(k) = self.conns.iter().position(|c| c.id == conn) else {
            return;
        };
        let Some(i) = self
            .execs
            .iter()
            .position(|e| e.conn == conn && !e.client_gone)
        else {
            // The exec ended; the connection is closing: its input has nowhere to go.
            self.conns[k].rbuf = Vec::new();
            return;
        };
        let (c, e) = (&mut self.conns[k], &mut self.execs[i]);
        let mut used = 0;
        let result: Result<(), FrameError> = loop {
            let (kind, payload, n) = match frame::decode(&c.rbuf[used..]) {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            };
            match kind {
                frame::STDIN => {
                    if e.stdin_buf.len() >= MAX_STDIN_BUF {
                        break Ok(()); // later, once the process has read
                    }
                    if !e.stdin_eof && e.input_fd().is_some() {
                        e.stdin_buf.extend_from_slice(payload);
                    }
                }
                frame::STDIN_EOF => e.stdin_eof = true,
                frame::RESIZE => {
                    if e.tty
                        && let (Some((w, h)), Some(m)) = (frame::parse_resize(payload), &e.stdout)
                    {
                        sys::set_winsize(m.as_fd(), w, h);
                        if e.exit.is_none() {
                            // The runtime copies our size onto the process's pty on SIGWINCH.
                            sys::kill(e.pid, libc::SIGWINCH);
                        }
                    }
                }
                k => break Err(FrameError(format!("frame kind {k} is not for the monitor"))),
            }
            used += n;
        };
        c.rbuf.drain(..used);
        if let Err(err) = result {
            eprintln!("crius-monitor: streaming exec {}: {err}", e.pid);
            c.dead = true;
        }
        self.flush_exec_stdin(i);
    }

    /// Writes queued input into the process; closes its stdin pipe at the client's EOF.
    fn flush_exec_stdin(&mut self, i: usize) {
        let e = &mut self.execs[i];
        while !e.stdin_buf.is_empty() {
            let Some(fd) = e.input_fd() else {
                e.stdin_buf = Vec::new();
                break;
            };
            // SAFETY: writing from a valid buffer of the given length.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    e.stdin_buf.as_ptr().cast(),
                    e.stdin_buf.len(),
                )
            };
            if n >= 0 {
                e.stdin_buf.drain(..n as usize);
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return,
                // The process closed its stdin (EPIPE): nobody will read this.
                _ => e.stdin_buf = Vec::new(),
            }
        }
        if e.stdin_buf.capacity() > MAX_STDIN_BUF {
            e.stdin_buf = Vec::new();
        }
        // A terminal has no EOF to give (as before: the client's EOF only stops the input).
        if e.stdin_eof && !e.tty {
            e.stdin = None;
        }
    }

    /// An exec's input took data: write more, then take its client's waiting frames.
    pub fn on_exec_input_writable(&mut self, fd: RawFd) {
        let Some(i) = self
            .execs
            .iter()
            .position(|e| e.input_fd().is_some_and(|f| f.as_raw_fd() == fd))
        else {
            return;
        };
        self.flush_exec_stdin(i);
        let conn = self.execs[i].conn;
        if self
            .conns
            .iter()
            .any(|c| c.id == conn && !c.rbuf.is_empty())
        {
            self.process_exec_frames(conn);
        }
    }
}

fn internal(what: &str, err: io::Error) -> Response {
    let code = match err.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorCode::ResourceExhausted,
        _ => ErrorCode::Internal,
    };
    error(code, format!("{what}: {err}"))
}

/// The runtime's stdio: three copies of a pty slave (the master kept as `e.stdout`), or
/// pipes for the streams the client has (`/dev/null` for the others).
fn exec_stdio(req: &StreamExecRequest, e: &mut StreamExec) -> io::Result<Stdio3> {
    if req.tty {
        let (master, slave) = sys::open_pty()?;
        if req.width > 0 && req.height > 0 {
            // Before the runtime starts: it reads our size once, at start.
            sys::set_winsize(master.as_fd(), req.width, req.height);
        }
        sys::set_nonblocking(master.as_fd())?;
        e.stdout = Some(master);
        return Ok(Stdio3 {
            stdin: Some(slave.try_clone()?),
            stdout: Some(slave.try_clone()?),
            stderr: Some(slave),
        });
    }
    let mut io = Stdio3 {
        stdin: None,
        stdout: None,
        stderr: None,
    };
    if req.stdin {
        let (r, w) = sys::pipe()?;
        sys::set_nonblocking(w.as_fd())?;
        e.stdin = Some(w);
        io.stdin = Some(r);
    }
    if req.stdout {
        let (r, w) = sys::pipe()?;
        sys::set_nonblocking(r.as_fd())?;
        e.stdout = Some(r);
        io.stdout = Some(w);
    }
    if req.stderr {
        let (r, w) = sys::pipe()?;
        sys::set_nonblocking(r.as_fd())?;
        e.stderr = Some(r);
        io.stderr = Some(w);
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        assert_eq!(client_exit_code(0, ""), 0);
        assert_eq!(client_exit_code(137, ""), 137);
        // The runtime's own failure, explained by its log.
        let missing = r#"{"level":"error","msg":"exec failed: unable to start container process: exec: \"/no/such\": stat /no/such: no such file or directory"}"#;
        assert_eq!(client_exit_code(255, missing), 127);
        let path = r#"{"msg":"exec: \"nope\": executable file not found in $PATH"}"#;
        assert_eq!(client_exit_code(255, path), 127);
        let denied = r#"{"msg":"exec: \"/etc/passwd\": permission denied"}"#;
        assert_eq!(client_exit_code(255, denied), 126);
        assert_eq!(client_exit_code(255, "something else"), 255);
        // A command that itself exits 255 with such words elsewhere keeps its code: the log
        // is only read for 255, and a process's output never goes to the log.
        assert_eq!(client_exit_code(1, missing), 1);
    }
}
