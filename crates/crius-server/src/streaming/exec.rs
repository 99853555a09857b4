//! A streaming exec: `<runtime> exec` run by criusd with the session's streams as its stdio.
//!
//! The process is killed when the client goes away, so a dropped connection leaves nothing
//! running. Exit codes: the process's own, 128+n when killed by signal n, and 127/126 when
//! the command is missing or not executable (what a shell and kubectl report).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crius_runtime::{ContainerManager, ExecPlan};
use crius_streaming::{ExecIo, ExecParams, ExitStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::tty;
use tokio::process::Command;
use tokio::sync::mpsc;

/// How long output may keep flowing after the process exited (a background child may still
/// hold the pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 32 * 1024;
/// How long a TTY exec waits for the client's terminal size before starting. Clients that
/// speak a resize stream send the size right after the streams are up; on a loaded node that
/// took more than 500 ms, and the process started with a 0x0 terminal.
const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(2);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Per-exec files in the container's bundle, removed when the exec ends.
struct ExecFiles {
    process: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl ExecFiles {
    fn new(bundle: &Path) -> ExecFiles {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("stream-exec-{}-{n}", std::process::id());
        ExecFiles {
            process: bundle.join(format!("{base}.json")),
            pid: bundle.join(format!("{base}.pid")),
            log: bundle.join(format!("{base}.log")),
        }
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for p in [&self.process, &self.pid, &self.log] {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub async fn run(containers: Arc<ContainerManager>, p: ExecParams, io: ExecIo) -> ExitStatus {
    let id = p.container_id.clone();
    let cmd = p.cmd.clone();
    let plan = crate::status::spawn_blocking(move || containers.exec_plan(&id, &cmd, p.tty)).await;
    let plan = match plan {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return ExitStatus::Error(e.to_string()),
        Err(e) => return ExitStatus::Error(format!("exec worker failed: {e}")),
    };
    tracing::info!(container_id = %plan.container_id, pod_id = %plan.pod_id, cmd = ?p.cmd, tty = p.tty, "streaming exec");
    if p.tty {
        return run_tty(plan, io).await;
    }
    run_pipes(plan, io).await
}

fn runtime_command(plan: &ExecPlan, files: &ExecFiles, extra: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new(&plan.runtime);
    c.arg("--root")
        .arg(&plan.runtime_root)
        .arg("--log")
        .arg(&files.log)
        .arg("--log-format")
        .arg("json")
        .arg("exec")
        .arg("--process")
        .arg(&files.process)
        .arg("--pid-file")
        .arg(&files.pid)
        .args(extra)
        .arg(&plan.container_id)
        .kill_on_drop(true);
    c
}

async fn run_pipes(plan: ExecPlan, mut io: ExecIo) -> ExitStatus {
    let files = ExecFiles::new(&plan.bundle);
    if let Err(e) = std::fs::write(&files.process, plan.process.to_string()) {
        return ExitStatus::Error(format!("writing {}: {e}", files.process.display()));
    }
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut child = match runtime_command(&plan, &files, &[])
        .stdin(piped(io.stdin.is_some()))
        .stdout(piped(io.stdout.is_some()))
        .stderr(piped(io.stderr.is_some()))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return ExitStatus::Error(format!("running {}: {e}", plan.runtime.display()));
        }
    };
    let mut tasks = Vec::new();
    if let (Some(mut rx), Some(mut w)) = (io.stdin.take(), child.stdin.take()) {
        // Not awaited at the end: a process that never reads stdin must not hold us up.
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            // Dropping `w` closes the process's stdin: the client's EOF.
        });
    }
    if let (Some(tx), Some(r)) = (io.stdout.take(), child.stdout.take()) {
        tasks.push(tokio::spawn(pump(r, tx)));
    }
    if let (Some(tx), Some(r)) = (io.stderr.take(), child.stderr.take()) {
        tasks.push(tokio::spawn(pump(r, tx)));
    }
    let mut gone = io.client_gone.clone();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = client_gone(&mut gone) => {
            tracing::info!(container_id = %plan.container_id, "exec client gone: killing the process");
            kill_exec(&files.pid).await;
            child.wait().await
        }
    };
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let drain = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        tracing::debug!(container_id = %plan.container_id, "exec output still open after exit; cut");
        aborts.iter().for_each(|a| a.abort());
    }
    match status {
        Ok(s) => exit_status(s, &files.log),
        Err(e) => ExitStatus::Error(format!("waiting for {}: {e}", plan.runtime.display())),
    }
}

async fn run_tty(plan: ExecPlan, mut io: ExecIo) -> ExitStatus {
    let files = ExecFiles::new(&plan.bundle);
    if let Err(e) = std::fs::write(&files.process, plan.process.to_string()) {
        return ExitStatus::Error(format!("writing {}: {e}", files.process.display()));
    }
    let (master, slave) = match tty::open_pair() {
        Ok(p) => p,
        Err(e) => return ExitStatus::Error(format!("opening a pty: {e}")),
    };
    let master = match tty::Master::new(master) {
        Ok(m) => Arc::new(m),
        Err(e) => return ExitStatus::Error(format!("setting up the pty: {e}")),
    };
    // The client sends its size right after opening its streams: apply it before the
    // runtime starts, which reads our size once at start (a SIGWINCH before its handler
    // is installed would be lost).
    if let Some(resize) = io.resize.as_mut()
        && let Ok(Some(size)) = tokio::time::timeout(FIRST_RESIZE_WAIT, resize.recv()).await
    {
        let _ = master.resize(size);
    }
    let stdio = || slave.try_clone().map(Stdio::from);
    let (Ok(i), Ok(o), Ok(e)) = (stdio(), stdio(), stdio()) else {
        return ExitStatus::Error("duplicating the pty".into());
    };
    let spawned = runtime_command(&plan, &files, &["--tty".as_ref()])
        .stdin(i)
        .stdout(o)
        .stderr(e)
        .spawn();
    // Only the runtime holds the slave now: the master reads EOF once it is gone.
    drop(slave);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return ExitStatus::Error(format!("running {}: {e}", plan.runtime.display())),
    };
    let runtime_pid = child.id();
    if let Some(mut resize) = io.resize.take() {
        let m = master.clone();
        tokio::spawn(async move {
            while let Some(size) = resize.recv().await {
                if m.resize(size).is_ok()
                    && let Some(pid) = runtime_pid
                {
                    // The runtime copies our size onto the container's pty on SIGWINCH.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGWINCH,
                    );
                }
            }
        });
    }
    if let Some(mut rx) = io.stdin.take() {
        let m = master.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if m.write_all(&b).await.is_err() {
                    return;
                }
            }
        });
    }
    let out = io.stdout.take().map(|tx| {
        let m = master.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match m.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    });
    let mut gone = io.client_gone.clone();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = client_gone(&mut gone) => {
            tracing::info!(container_id = %plan.container_id, "exec client gone: killing the process");
            kill_exec(&files.pid).await;
            child.wait().await
        }
    };
    if let Some(mut t) = out {
        // The master reads EIO once the runtime, the last holder of the slave, is gone.
        if tokio::time::timeout(DRAIN_GRACE, &mut t).await.is_err() {
            t.abort();
        }
    }
    match status {
        Ok(s) => exit_status(s, &files.log),
        Err(e) => ExitStatus::Error(format!("waiting for {}: {e}", plan.runtime.display())),
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Resolves once the client is gone (holding no watch guard across the wait).
async fn client_gone(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|g| *g).await;
}

/// Kills the exec'd process (not the runtime, which would leave it behind).
async fn kill_exec(pid_file: &Path) {
    // The runtime writes the pid once the process started: wait for it briefly.
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn exit_status(s: std::process::ExitStatus, log: &Path) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = s.signal() {
        return ExitStatus::Exited(128 + sig);
    }
    let code = s.code().unwrap_or(255);
    if code == 255 {
        // The runtime failed before the command ran: tell "not found" and "not executable"
        // apart as a shell would.
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let lower = log.to_ascii_lowercase();
        if lower.contains("executable file not found") || lower.contains("no such file") {
            return ExitStatus::Exited(127);
        }
        if lower.contains("permission denied") {
            return ExitStatus::Exited(126);
        }
    }
    ExitStatus::Exited(code)
}
