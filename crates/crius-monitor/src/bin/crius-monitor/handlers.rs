//! One function per request, plus turning a finished runtime command into its response.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use crius_monitor::cri_log::{Stream, now_unix_nanos};
use crius_monitor::{
    ContainerStatus, CreateRequest, ErrorCode, ExecRequest, ExecResult, ForeignRuntime,
    MonitorError, OomCounter, Request, Response,
};

use crate::container::Container;
use crate::jobs::{Capture, Job, JobKind, PendingCreate};
use crate::log_writer::{LogFile, OutputPipe};
use crate::runtime::{self, Stdio3};
use crate::server::Monitor;
use crate::sys;

use crius_monitor::EXEC_OUTPUT_LIMIT;
/// Runtime error output kept for error messages.
const RUNTIME_OUTPUT_LIMIT: usize = 64 * 1024;
/// create/start/kill/delete that take longer than this are killed.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(120);

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(MonitorError {
        code,
        message: message.into(),
    })
}

fn internal(what: &str, e: io::Error) -> Response {
    let code = match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorCode::ResourceExhausted,
        _ => ErrorCode::Internal,
    };
    error(code, format!("{what}: {e}"))
}

/// A failed runtime command: its output decides the code when it ran out of space.
fn runtime_failed(timed_out: bool, message: String) -> Response {
    let lower = message.to_ascii_lowercase();
    let code = if timed_out {
        ErrorCode::DeadlineExceeded
    } else if lower.contains("no space left on device") || lower.contains("disk quota exceeded") {
        ErrorCode::ResourceExhausted
    } else {
        ErrorCode::Runtime
    };
    error(code, message)
}

/// A container id the runtime's state directory can hold (it becomes a directory name).
fn valid_id(id: &str) -> bool {
    !(id.is_empty() || id.contains('/') || id.starts_with('.') || id.starts_with('-'))
}

fn not_found(id: &str) -> Response {
    error(ErrorCode::NotFound, format!("no such container: {id}"))
}

impl Monitor {
    /// Serves one request line. `None` means a job was started and answers later.
    pub fn handle_line(&mut self, line: &[u8], conn: u64) -> Option<Response> {
        let req = match Request::decode(line) {
            Ok(r) => r,
            Err(e) => return Some(error(ErrorCode::Invalid, e.to_string())),
        };
        let started = match req {
            Request::Create(r) => self.create(r, conn),
            Request::Start { id } => {
                self.simple_job(&id, conn, JobKind::Start { id: id.clone() }, &["start"])
            }
            Request::Exec(r) => self.exec(r, conn),
            Request::Kill {
                id,
                signal,
                all,
                foreign,
            } => {
                let sig = signal.to_string();
                let mut args: Vec<&str> = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.push(&id);
                args.push(&sig);
                self.runtime_job(&id, foreign.as_ref(), conn, JobKind::Kill, &args)
            }
            Request::Delete { id, force, foreign } => {
                if let Some(i) = self.find(&id) {
                    if self.containers[i].runtime_deleted {
                        self.forget(i);
                        return Some(Response::Ok);
                    }
                    // The delete after its exit is running: its end answers this request.
                    if let Some(job) = self.jobs.iter_mut().find(|j| {
                        j.conn.is_none()
                            && matches!(&j.kind, JobKind::Delete { id: d, after_exit: true } if *d == id)
                    }) {
                        job.conn = Some(conn);
                        return None;
                    }
                }
                let mut args: Vec<&str> = vec!["delete"];
                if force {
                    args.push("--force");
                }
                args.push(&id);
                let kind = JobKind::Delete {
                    id: id.clone(),
                    after_exit: false,
                };
                self.runtime_job(&id, foreign.as_ref(), conn, kind, &args)
            }
            Request::Update { id, resources } => {
                let resources = resources.as_os_str().to_string_lossy().into_owned();
                let systemd = self
                    .find(&id)
                    .is_some_and(|i| self.containers[i].systemd_cgroup);
                let mut args = vec!["update", "--resources", resources.as_str(), id.as_str()];
                if systemd {
                    // A global flag: before the subcommand.
                    args.insert(0, "--systemd-cgroup");
                }
                self.runtime_job(&id, None, conn, JobKind::Update, &args)
            }
            Request::ReopenLog { id } => Err(self.reopen_log(&id)),
            Request::Attach {
                id,
                stdin,
                stdout,
                stderr,
            } => Err(self.attach(conn, &id, stdin, stdout, stderr)),
            Request::StreamExec(r) => Err(self.stream_exec(conn, r)),
            Request::State => Err(Response::State(
                self.containers.iter().map(Container::state).collect(),
            )),
            Request::Shutdown { force } => {
                self.shutdown = Some(force || self.shutdown == Some(true));
                Err(Response::Ok)
            }
        };
        match started {
            Ok(job) => {
                self.jobs.push(job);
                None
            }
            Err(resp) => Some(resp),
        }
    }

    /// Drops a container the runtime no longer has: its last output is logged and its
    /// attachers are told.
    fn forget(&mut self, i: usize) {
        let id = self.containers[i].id.clone();
        self.pump_container(i, true);
        self.end_attachers(&id, None);
        self.containers.swap_remove(i);
    }

    /// After container `i` exited: the runtime's `delete`, answered to nobody unless a Delete
    /// request comes while it runs. A failure leaves it to that request's own delete.
    pub fn delete_after_exit(&mut self, i: usize) {
        let c = &self.containers[i];
        // A Delete already running (a forced one killed it) does the work; a second delete
        // would race it and make it fail on the vanished state.
        if self
            .jobs
            .iter()
            .any(|j| matches!(&j.kind, JobKind::Delete { id, .. } if *id == c.id))
        {
            return;
        }
        let (id, systemd) = (c.id.clone(), c.systemd_cgroup);
        let mut args = vec!["delete", id.as_str()];
        if systemd {
            // A global flag: before the subcommand.
            args.insert(0, "--systemd-cgroup");
        }
        let kind = JobKind::Delete {
            id: id.clone(),
            after_exit: true,
        };
        match self.runtime_job(&id, None, 0, kind, &args) {
            Ok(mut job) => {
                job.conn = None;
                self.jobs.push(job);
            }
            Err(_) => eprintln!("crius-monitor: could not run the runtime's delete for {id}"),
        }
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.containers.iter().position(|c| c.id == id)
    }

    fn pending_create(&self, id: &str) -> bool {
        self.jobs
            .iter()
            .any(|j| matches!(&j.kind, JobKind::Create(p) if p.container.id == id))
    }

    fn create(&mut self, req: CreateRequest, conn: u64) -> Result<Job, Response> {
        if !valid_id(&req.id) {
            return Err(error(ErrorCode::Invalid, "invalid container id"));
        }
        if req.runtime.as_os_str().is_empty() || req.bundle.as_os_str().is_empty() {
            return Err(error(ErrorCode::Invalid, "runtime and bundle are required"));
        }
        if self.find(&req.id).is_some() || self.pending_create(&req.id) {
            return Err(error(
                ErrorCode::AlreadyExists,
                format!("container {} already exists", req.id),
            ));
        }
        let log = LogFile::open(&req.log_path)
            .map_err(|e| internal(&format!("opening log {}", req.log_path.display()), e))?;
        let mut container = Container {
            id: req.id.clone(),
            pid: 0,
            status: ContainerStatus::Created,
            exit_code: None,
            exited_at: None,
            runtime: req.runtime.clone(),
            runtime_root: req.runtime_root.clone(),
            systemd_cgroup: req.systemd_cgroup,
            exit_dir: req.exit_dir.clone(),
            log,
            stdout: None,
            stderr: None,
            stdin: None,
            tty: req.tty,
            stdin_once: req.stdin_once,
            stdin_buf: Vec::new(),
            stdin_close_pending: false,
            oom: None,
            runtime_deleted: false,
        };
        let pid_file = req.bundle.join("pid");
        let _ = fs::remove_file(&pid_file);
        let mut args: Vec<&OsStr> = Vec::new();
        // A global flag: before the subcommand (runc and crun both read it there).
        if req.systemd_cgroup {
            args.push("--systemd-cgroup".as_ref());
        }
        args.extend::<[&OsStr; 5]>([
            "create".as_ref(),
            "--bundle".as_ref(),
            req.bundle.as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
        ]);
        let fail = |e| internal("creating stdio", e);
        let (stdio, console, runtime_err) = if req.tty {
            self.seq += 1;
            let name = format!("console-{}.sock", self.seq);
            let path = self.opts.dir.join(&name);
            let _ = fs::remove_file(&path);
            let listener =
                UnixListener::bind(self.opts.socket_dir.local_path(&name)).map_err(fail)?;
            // The runtime dials it by a path that fits sockaddr_un whatever the state dir.
            let dial = self.opts.socket_dir.shared_path(&name);
            listener.set_nonblocking(true).map_err(fail)?;
            // The pty carries the container's stdio; the runtime's own stderr is captured.
            let (r, w) = sys::pipe().map_err(fail)?;
            let io = Stdio3 {
                stdin: None,
                stdout: None,
                stderr: Some(w),
            };
            (
                io,
                Some((listener, path, dial)),
                Some(Capture::new(r, RUNTIME_OUTPUT_LIMIT).map_err(fail)?),
            )
        } else {
            let stdin = if req.stdin {
                let (r, w) = sys::pipe().map_err(fail)?;
                container.stdin = Some(w);
                Some(r)
            } else {
                None
            };
            let (out_r, out_w) = sys::pipe().map_err(fail)?;
            let (err_r, err_w) = sys::pipe().map_err(fail)?;
            container.stdout = Some(OutputPipe::new(out_r, Stream::Stdout).map_err(fail)?);
            container.stderr = Some(OutputPipe::new(err_r, Stream::Stderr).map_err(fail)?);
            // The runtime shares the container's stdio, so its error text lands in the stderr
            // pipe; on failure it is read from there (nothing else can write to it yet).
            let io = Stdio3 {
                stdin,
                stdout: Some(out_w),
                stderr: Some(err_w),
            };
            (io, None, None)
        };
        if let Some((_, _, dial)) = &console {
            args.push("--console-socket".as_ref());
            args.push(dial.as_os_str());
        }
        args.push(req.id.as_ref());
        let spawned = runtime::spawn(&req.runtime, &req.runtime_root, &args, stdio);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                if let Some((_, path, _)) = &console {
                    let _ = fs::remove_file(path);
                }
                return Err(internal(&format!("running {}", req.runtime.display()), e));
            }
        };
        self.had_container = true;
        Ok(Job {
            pid,
            conn: Some(conn),
            kind: JobKind::Create(Box::new(PendingCreate {
                container,
                bundle: req.bundle,
                console: console.map(|(listener, path, _)| (listener, path)),
                console_master: None,
            })),
            stdout: None,
            stderr: runtime_err,
            deadline: Some(Instant::now() + RUNTIME_TIMEOUT),
            timed_out: false,
        })
    }

    fn simple_job(
        &mut self,
        id: &str,
        conn: u64,
        kind: JobKind,
        args: &[&str],
    ) -> Result<Job, Response> {
        let mut all: Vec<&str> = args.to_vec();
        all.push(id);
        self.job_with_args(id, conn, kind, &all)
    }

    /// Runs `<runtime> --root <root> <args>` for a known container, capturing its output.
    fn job_with_args(
        &mut self,
        id: &str,
        conn: u64,
        kind: JobKind,
        args: &[&str],
    ) -> Result<Job, Response> {
        self.runtime_job(id, None, conn, kind, args)
    }

    /// [`Monitor::job_with_args`], also for a container this monitor does not own when the
    /// request names its runtime (`foreign`). A container the monitor owns always uses its
    /// own runtime.
    fn runtime_job(
        &mut self,
        id: &str,
        foreign: Option<&ForeignRuntime>,
        conn: u64,
        kind: JobKind,
        args: &[&str],
    ) -> Result<Job, Response> {
        let (runtime, runtime_root) = match (self.find(id), foreign) {
            (Some(i), _) => {
                let c = &self.containers[i];
                (c.runtime.clone(), c.runtime_root.clone())
            }
            (None, Some(f)) if valid_id(id) => (f.runtime.clone(), f.root.clone()),
            _ => return Err(not_found(id)),
        };
        let fail = |e| internal("creating pipes", e);
        let (out_r, out_w) = sys::pipe().map_err(fail)?;
        let (err_r, err_w) = sys::pipe().map_err(fail)?;
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let io = Stdio3 {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        };
        let pid = runtime::spawn(&runtime, &runtime_root, &args, io)
            .map_err(|e| internal(&format!("running {}", runtime.display()), e))?;
        Ok(Job {
            pid,
            conn: Some(conn),
            kind,
            stdout: Some(Capture::new(out_r, RUNTIME_OUTPUT_LIMIT).map_err(fail)?),
            stderr: Some(Capture::new(err_r, RUNTIME_OUTPUT_LIMIT).map_err(fail)?),
            deadline: Some(Instant::now() + RUNTIME_TIMEOUT),
            timed_out: false,
        })
    }

    fn exec(&mut self, req: ExecRequest, conn: u64) -> Result<Job, Response> {
        let Some(i) = self.find(&req.id) else {
            return Err(not_found(&req.id));
        };
        if self.containers[i].status != ContainerStatus::Running {
            return Err(error(
                ErrorCode::FailedPrecondition,
                format!("container {} is not running", req.id),
            ));
        }
        if req.tty {
            return Err(error(
                ErrorCode::Invalid,
                "exec with a tty is not supported",
            ));
        }
        if req.argv.is_empty() {
            return Err(error(ErrorCode::Invalid, "exec needs a command"));
        }
        self.seq += 1;
        let process_file = self.opts.dir.join(format!("exec-{}.json", self.seq));
        let pid_file = self.opts.dir.join(format!("exec-{}.pid", self.seq));
        fs::write(&process_file, runtime::exec_process_json(&req))
            .map_err(|e| internal("writing exec process file", e))?;
        let cleanup = |r: Response| {
            let _ = fs::remove_file(&process_file);
            r
        };
        let fail = |e| internal("creating pipes", e);
        let (out_r, out_w) = sys::pipe().map_err(fail).map_err(cleanup)?;
        let (err_r, err_w) = sys::pipe().map_err(fail).map_err(cleanup)?;
        let c = &self.containers[i];
        let args: [&OsStr; 6] = [
            "exec".as_ref(),
            "--process".as_ref(),
            process_file.as_os_str(),
            "--pid-file".as_ref(),
            pid_file.as_os_str(),
            req.id.as_ref(),
        ];
        let io = Stdio3 {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        };
        let pid = runtime::spawn(&c.runtime, &c.runtime_root, &args, io)
            .map_err(|e| cleanup(internal("running runtime exec", e)))?;
        Ok(Job {
            pid,
            conn: Some(conn),
            kind: JobKind::Exec {
                process_file,
                pid_file,
                kill_pending_since: None,
            },
            stdout: Some(Capture::new(out_r, EXEC_OUTPUT_LIMIT).map_err(fail)?),
            stderr: Some(Capture::new(err_r, EXEC_OUTPUT_LIMIT).map_err(fail)?),
            deadline: (req.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(req.timeout_ms)),
            timed_out: false,
        })
    }

    fn reopen_log(&mut self, id: &str) -> Response {
        let Some(i) = self.find(id) else {
            return not_found(id);
        };
        let c = &mut self.containers[i];
        if c.status != ContainerStatus::Running {
            return error(
                ErrorCode::FailedPrecondition,
                format!("container {id} is not running"),
            );
        }
        match c.log.reopen() {
            Ok(()) => Response::Ok,
            Err(e) => internal("reopening log", e),
        }
    }

    /// A runtime command was reaped: build and send its response.
    pub fn finish_job(&mut self, mut job: Job, code: i32) {
        self.pump_job(&mut job);
        let failed = |job: &Job, what: &str| {
            let how = if job.timed_out {
                "timed out".to_string()
            } else {
                format!("exited with {code}")
            };
            runtime_failed(
                job.timed_out,
                format!("runtime {what} {how}: {}", job.output_text()),
            )
        };
        let ok = code == 0 && !job.timed_out;
        let resp = match std::mem::replace(&mut job.kind, JobKind::Start { id: String::new() }) {
            JobKind::Create(pending) => self.finish_create(&job, *pending, ok, code),
            JobKind::Start { id } => {
                if ok {
                    let at = now_unix_nanos();
                    if let Some(i) = self.find(&id) {
                        let c = &mut self.containers[i];
                        // It may already have run and exited; never resurrect it.
                        if c.status == ContainerStatus::Created {
                            c.status = ContainerStatus::Running;
                        }
                    }
                    Response::Started {
                        started_at_unix_nanos: at,
                    }
                } else {
                    failed(&job, "start")
                }
            }
            JobKind::Kill => {
                if ok {
                    Response::Ok
                } else {
                    failed(&job, "kill")
                }
            }
            JobKind::Update => {
                if ok {
                    Response::Ok
                } else {
                    failed(&job, "update")
                }
            }
            JobKind::Delete { id, after_exit } => {
                if ok {
                    if let Some(i) = self.find(&id) {
                        // The monitor's own delete keeps the container (its state and exit
                        // stay known) until criusd removes it, unless that was asked meanwhile.
                        if after_exit && job.conn.is_none() {
                            self.containers[i].runtime_deleted = true;
                        } else {
                            self.forget(i);
                        }
                    }
                    Response::Ok
                } else {
                    failed(&job, "delete")
                }
            }
            JobKind::Exec {
                process_file,
                pid_file,
                ..
            } => {
                if job.timed_out {
                    // The runtime is gone; make sure the process it started is too.
                    kill_exec_process(&pid_file);
                }
                let _ = fs::remove_file(&process_file);
                let _ = fs::remove_file(&pid_file);
                let take = |c: &mut Option<Capture>| c.take().map(|c| c.data).unwrap_or_default();
                Response::ExecResult(ExecResult {
                    exit_code: code,
                    stdout: take(&mut job.stdout),
                    stderr: take(&mut job.stderr),
                    timed_out: job.timed_out,
                })
            }
        };
        if let Some(conn) = job.conn {
            self.respond(conn, &resp);
            self.process_lines(conn);
        }
    }

    fn finish_create(&mut self, job: &Job, mut p: PendingCreate, ok: bool, code: i32) -> Response {
        if let Some((listener, path)) = p.console.take() {
            if ok && p.console_master.is_none() {
                p.console_master = accept_console(&listener).ok();
            }
            let _ = fs::remove_file(path);
        }
        let pid_file = p.bundle.join("pid");
        let pid = if ok {
            fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        } else {
            None
        };
        let mut c = p.container;
        let Some(pid) = pid.filter(|&pid| pid > 0) else {
            // The runtime's error text is in the capture (tty) or the container pipes.
            let mut msg = job.output_text();
            let mut buf = vec![0u8; 4096];
            for pipe in [&c.stderr, &c.stdout].into_iter().flatten() {
                while let Ok(n @ 1..) = sys::read(pipe.fd.as_fd(), &mut buf) {
                    msg.push_str(String::from_utf8_lossy(&buf[..n]).trim());
                    if msg.len() > RUNTIME_OUTPUT_LIMIT {
                        break;
                    }
                }
            }
            let what = if job.timed_out {
                "timed out".to_string()
            } else if ok {
                format!(
                    "succeeded but left no valid pid file {}",
                    pid_file.display()
                )
            } else {
                format!("exited with {code}")
            };
            return runtime_failed(job.timed_out, format!("runtime create {what}: {msg}"));
        };
        if let Some(master) = p.console_master.take() {
            match OutputPipe::new(master, Stream::Stdout) {
                Ok(pipe) => c.stdout = Some(pipe),
                Err(e) => eprintln!("crius-monitor: console for {}: {e}", c.id),
            }
        }
        c.pid = pid;
        c.oom = OomCounter::of_pid(pid);
        self.containers.push(c);
        if let Some((code, at)) = self.recent_exits.take(pid) {
            let last = self.containers.len() - 1;
            self.containers[last].record_exit(code, at);
            self.delete_after_exit(last);
        }
        Response::Created { pid: pid as u32 }
    }
}

/// How long a kill waits for the runtime to write an exec's pid file before it kills the
/// runtime anyway.
const EXEC_PID_WAIT: Duration = Duration::from_secs(5);

/// Timeout or cancel: kill the runtime command (and, for exec, the process it started). An
/// exec whose process has no pid file yet is left to [`retry_kill`].
pub fn kill_job(job: &mut Job) {
    if let JobKind::Exec {
        pid_file,
        kill_pending_since,
        ..
    } = &mut job.kind
    {
        if !kill_exec_process(pid_file) {
            let since = *kill_pending_since.get_or_insert_with(Instant::now);
            if since.elapsed() < EXEC_PID_WAIT {
                return;
            }
        }
        *kill_pending_since = None;
    }
    sys::kill(job.pid, libc::SIGKILL);
}

/// Whether a kill of this job waits for its exec's pid file.
pub fn kill_pending(job: &Job) -> bool {
    matches!(
        job.kind,
        JobKind::Exec {
            kill_pending_since: Some(_),
            ..
        }
    )
}

/// True when the exec's process was found and signalled.
fn kill_exec_process(pid_file: &Path) -> bool {
    if let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    {
        sys::kill(pid, libc::SIGKILL);
        return true;
    }
    false
}

/// The console socket became readable: take the pty master the runtime sends.
pub fn receive_console(job: &mut Job) {
    if let JobKind::Create(p) = &mut job.kind
        && let Some((listener, _)) = &p.console
        && let Ok(fd) = accept_console(listener)
    {
        p.console_master = Some(fd);
    }
}

fn accept_console(listener: &UnixListener) -> io::Result<OwnedFd> {
    let (stream, _) = listener.accept()?;
    // The runtime sends right after connecting; don't let a broken one hang the loop.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    sys::recv_fd(stream.as_fd())
}
