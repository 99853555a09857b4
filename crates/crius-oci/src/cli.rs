//! [`OciRuntime`] implemented by running an OCI runtime binary (runc or crun; both share the
//! runc command line for everything used here).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;
use serde::Deserialize;
use tracing::debug;

use crate::runtime::{
    ContainerIo, OciRuntime, RuntimeError, RuntimeFeatures, RuntimeState, RuntimeStatus,
};

/// Every runtime command gets this long before it is killed, so a wedged runtime (e.g. stuck
/// on a frozen cgroup) cannot hang an RPC forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct CliRuntime {
    name: String,
    path: PathBuf,
    root: PathBuf,
    systemd_cgroup: bool,
    timeout: Duration,
}

struct Output {
    stdout: Vec<u8>,
    stderr: String,
}

impl CliRuntime {
    /// `root` is the runtime's `--root` state directory; it must not be shared with
    /// containers that crius does not own.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        systemd_cgroup: bool,
    ) -> Self {
        CliRuntime {
            name: name.into(),
            path: path.into(),
            root: root.into(),
            systemd_cgroup,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Global flags; both runc and crun take `--root` and `--systemd-cgroup` before the
    /// subcommand.
    fn global_args(&self) -> Vec<String> {
        let mut args = vec!["--root".to_string(), self.root.display().to_string()];
        if self.systemd_cgroup {
            args.push("--systemd-cgroup".to_string());
        }
        args
    }

    /// A complete argv, binary first, for a process that execs the runtime itself.
    fn argv(&self, sub: &[String]) -> Vec<String> {
        let mut argv = vec![self.path.display().to_string()];
        argv.extend(self.command_args(sub));
        argv
    }

    fn command_args(&self, sub: &[String]) -> Vec<String> {
        let mut args = self.global_args();
        args.extend_from_slice(sub);
        args
    }

    /// Runs the runtime with piped stdio and a deadline. Only for commands that leave no
    /// process behind holding the pipes (everything but `create`).
    fn run(&self, sub: &[String], input: Option<&[u8]>) -> Result<Output, RuntimeError> {
        let args = self.command_args(sub);
        debug!(runtime = %self.name, ?args, "running OCI runtime");
        let mut child = Command::new(&self.path)
            .args(&args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;

        // Readers on threads: a runtime writing more than a pipe buffer must not block on us.
        let stdout = spawn_reader(child.stdout.take());
        let stderr = spawn_reader(child.stderr.take());
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // A runtime that exits early closes the pipe; its exit status tells why.
            let _ = stdin.write_all(input);
        }
        let status = self.wait(&mut child, &args)?;
        // Bounded, in case a stray grandchild inherited the pipes.
        let stdout = stdout
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        let stderr = stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        if !status.success() {
            return Err(RuntimeError::Command {
                runtime: self.name.clone(),
                args,
                status,
                stderr,
            });
        }
        Ok(Output { stdout, stderr })
    }

    /// Waits for `child` until the deadline, killing it past that. `args` only name the
    /// command in the error.
    fn wait(
        &self,
        child: &mut std::process::Child,
        args: &[String],
    ) -> Result<std::process::ExitStatus, RuntimeError> {
        match crius_proc::wait_timeout(child, self.timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(RuntimeError::Timeout {
                runtime: self.name.clone(),
                args: args.to_vec(),
                timeout: self.timeout,
            }),
            Err(source) => Err(RuntimeError::Io {
                op: "wait for",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn spawn_error(&self, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            runtime: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }

    /// Whether a failed command failed because the runtime does not know `id`. runc says
    /// "container does not exist", crun "... status`: No such file or directory"; the missing
    /// state directory settles it for any other wording.
    fn is_unknown(&self, err: &RuntimeError, id: &str) -> bool {
        match err {
            RuntimeError::Command { stderr, .. } => {
                stderr.contains("does not exist")
                    || stderr.contains("No such file or directory")
                    || !self.root.join(id).exists()
            }
            _ => false,
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(source: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut source) = source {
            let _ = source.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// The messages of a runtime's JSON log (`--log-format json`, one object a line).
fn log_messages(log: &str) -> String {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let errors: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| matches!(l.level.as_str(), "error" | "fatal" | "panic"))
        .map(|l| l.msg)
        .collect();
    if errors.is_empty() {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    } else {
        errors.join("; ")
    }
}

fn open_null(write: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
}

fn stdio_from(fd: Option<std::os::fd::OwnedFd>, write: bool) -> std::io::Result<Stdio> {
    Ok(match fd {
        Some(fd) => Stdio::from(fd),
        None => Stdio::from(open_null(write)?),
    })
}

#[derive(Deserialize)]
struct StateJson {
    id: String,
    #[serde(default)]
    pid: i32,
    status: String,
    #[serde(default)]
    bundle: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeaturesJson {
    #[serde(default)]
    mount_options: Vec<String>,
}

impl OciRuntime for CliRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn features(&self) -> Result<RuntimeFeatures, RuntimeError> {
        let sub = ["features".to_string()];
        match self.run(&sub, None) {
            Ok(out) => {
                let f: FeaturesJson =
                    serde_json::from_slice(&out.stdout).map_err(|e| RuntimeError::BadOutput {
                        runtime: self.name.clone(),
                        args: self.command_args(&sub),
                        message: e.to_string(),
                    })?;
                Ok(RuntimeFeatures {
                    mount_options: f.mount_options,
                })
            }
            // Older runtimes lack the command: advertise nothing.
            Err(RuntimeError::Command { stderr, .. }) => {
                debug!(runtime = %self.name, %stderr, "runtime has no usable features command");
                Ok(RuntimeFeatures::default())
            }
            Err(e) => Err(e),
        }
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        io: ContainerIo,
    ) -> Result<(), RuntimeError> {
        // The container inherits the runtime's stdio, so the runtime's own stderr cannot be a
        // pipe we wait on (the container would hold it open): its errors go to a JSON log.
        let log = bundle.join(format!("{}-create.log", self.name));
        let _ = std::fs::remove_file(&log);
        // Global flags: right after the binary, before the subcommand.
        let mut args = self.create_args(id, bundle, pid_file, console_socket);
        args.remove(0);
        args.splice(
            0..0,
            [
                "--log".to_string(),
                log.display().to_string(),
                "--log-format".to_string(),
                "json".to_string(),
            ],
        );
        let io_err = |source| RuntimeError::Io {
            op: "open stdio for",
            path: bundle.to_path_buf(),
            source,
        };
        debug!(runtime = %self.name, ?args, "running OCI runtime");
        let mut child = Command::new(&self.path)
            .args(&args)
            .stdin(stdio_from(io.stdin, false).map_err(io_err)?)
            .stdout(stdio_from(io.stdout, true).map_err(io_err)?)
            .stderr(stdio_from(io.stderr, true).map_err(io_err)?)
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        let status = self.wait(&mut child, &args)?;
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if !status.success() {
            return Err(RuntimeError::Command {
                runtime: self.name.clone(),
                args,
                status,
                stderr: log_messages(&log_text),
            });
        }
        Ok(())
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run(&["start".to_string(), id.to_string()], None)
            .map(drop)
            .map_err(|e| {
                if self.is_unknown(&e, id) {
                    RuntimeError::NotFound {
                        runtime: self.name.clone(),
                        id: id.to_string(),
                    }
                } else {
                    e
                }
            })
    }

    fn state(&self, id: &str) -> Result<Option<RuntimeState>, RuntimeError> {
        let sub = ["state".to_string(), id.to_string()];
        let out = match self.run(&sub, None) {
            Ok(out) => out,
            Err(e) if self.is_unknown(&e, id) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |message: String| RuntimeError::BadOutput {
            runtime: self.name.clone(),
            args: self.command_args(&sub),
            message,
        };
        let s: StateJson = serde_json::from_slice(&out.stdout).map_err(|e| bad(e.to_string()))?;
        let status = match s.status.as_str() {
            // "creating" is only seen while a create is still running.
            "created" | "creating" => RuntimeStatus::Created,
            "running" => RuntimeStatus::Running,
            "stopped" => RuntimeStatus::Stopped,
            "paused" | "pausing" => RuntimeStatus::Paused,
            other => return Err(bad(format!("unknown status {other:?}"))),
        };
        Ok(Some(RuntimeState {
            id: s.id,
            pid: s.pid,
            status,
            bundle: s.bundle,
        }))
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let mut sub = vec!["kill".to_string()];
        if all {
            sub.push("--all".to_string());
        }
        // Numeric: both runtimes parse it, and names differ in accepted spelling.
        sub.extend([id.to_string(), (signal as i32).to_string()]);
        match self.run(&sub, None) {
            Ok(out) => {
                if !out.stderr.is_empty() {
                    debug!(runtime = %self.name, id, stderr = %out.stderr, "kill");
                }
                Ok(())
            }
            // The process is already gone: the signal's purpose is met.
            Err(RuntimeError::Command { ref stderr, .. })
                if stderr.contains("not running")
                    || stderr.contains("process already finished")
                    || stderr.contains("No such process") =>
            {
                debug!(runtime = %self.name, id, "kill: container already stopped");
                Ok(())
            }
            Err(e) if self.is_unknown(&e, id) => Err(RuntimeError::NotFound {
                runtime: self.name.clone(),
                id: id.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut sub = vec!["delete".to_string()];
        if force {
            sub.push("--force".to_string());
        }
        sub.push(id.to_string());
        match self.run(&sub, None) {
            Ok(_) => Ok(()),
            Err(e) if self.is_unknown(&e, id) => {
                debug!(runtime = %self.name, id, "delete: container already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn update_resources(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        let json = serde_json::to_vec(resources).map_err(|e| RuntimeError::BadOutput {
            runtime: self.name.clone(),
            args: vec!["update".to_string()],
            message: format!("cannot serialise resources: {e}"),
        })?;
        let sub = [
            "update".to_string(),
            "--resources".to_string(),
            "-".to_string(),
            id.to_string(),
        ];
        self.run(&sub, Some(&json)).map(drop).map_err(|e| {
            if self.is_unknown(&e, id) {
                RuntimeError::NotFound {
                    runtime: self.name.clone(),
                    id: id.to_string(),
                }
            } else {
                e
            }
        })
    }

    fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
    ) -> Vec<String> {
        let mut sub = vec![
            "create".to_string(),
            "--bundle".to_string(),
            bundle.display().to_string(),
            "--pid-file".to_string(),
            pid_file.display().to_string(),
        ];
        if let Some(socket) = console_socket {
            sub.extend(["--console-socket".to_string(), socket.display().to_string()]);
        }
        sub.push(id.to_string());
        self.argv(&sub)
    }

    fn exec_args(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: Option<&Path>,
        console_socket: Option<&Path>,
        detach: bool,
    ) -> Vec<String> {
        let mut sub = vec![
            "exec".to_string(),
            "--process".to_string(),
            process_json.display().to_string(),
        ];
        if let Some(pid_file) = pid_file {
            sub.extend(["--pid-file".to_string(), pid_file.display().to_string()]);
        }
        if let Some(socket) = console_socket {
            sub.extend(["--console-socket".to_string(), socket.display().to_string()]);
        }
        if detach {
            sub.push("--detach".to_string());
        }
        sub.push(id.to_string());
        self.argv(&sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_error::{ErrorKind, HasKind};
    use std::time::Instant;

    #[test]
    fn args_have_global_flags_first() {
        let rt = CliRuntime::new("crun", "/usr/bin/crun", "/run/x", true);
        let args = rt.exec_args(
            "c1",
            Path::new("/b/p.json"),
            Some(Path::new("/b/pid")),
            None,
            true,
        );
        assert_eq!(
            args,
            [
                "/usr/bin/crun",
                "--root",
                "/run/x",
                "--systemd-cgroup",
                "exec",
                "--process",
                "/b/p.json",
                "--pid-file",
                "/b/pid",
                "--detach",
                "c1"
            ]
        );
        let args = rt.create_args(
            "c1",
            Path::new("/b"),
            Path::new("/b/pid"),
            Some(Path::new("/s")),
        );
        assert_eq!(&args[4..6], ["create", "--bundle"]);
        assert_eq!(args.last().unwrap(), "c1");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--console-socket" && w[1] == "/s")
        );
    }

    #[test]
    fn timeout_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow");
        // exec: the kill must reach the sleeping process itself, leaving nothing behind.
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = CliRuntime::new("slow", &script, dir.path(), false)
            .with_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let err = rt.start("c1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stderr_is_captured_and_unknown_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("failing");
        std::fs::write(&script, "#!/bin/sh\necho \"boom: $*\" >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = CliRuntime::new("failing", &script, dir.path(), false);
        // The state dir of "c1" exists, so the failure is not "unknown container".
        std::fs::create_dir(dir.path().join("c1")).unwrap();
        match rt.start("c1").unwrap_err() {
            RuntimeError::Command { stderr, status, .. } => {
                assert!(
                    stderr.contains("boom:") && stderr.contains("start c1"),
                    "{stderr}"
                );
                assert_eq!(status.code(), Some(3));
            }
            other => panic!("unexpected {other:?}"),
        }
        // No state dir: unknown container, so state is None and delete succeeds.
        assert_eq!(rt.state("c2").unwrap(), None);
        rt.delete("c2", true).unwrap();
        assert_eq!(
            rt.kill("c2", Signal::SIGKILL, false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let rt = CliRuntime::new("nope", "/nonexistent/runc", "/tmp", false);
        assert!(matches!(rt.start("x"), Err(RuntimeError::Spawn { .. })));
    }

    #[test]
    fn log_messages_prefers_errors() {
        let log =
            "{\"level\":\"info\",\"msg\":\"hi\"}\n{\"level\":\"error\",\"msg\":\"bad thing\"}\n";
        assert_eq!(log_messages(log), "bad thing");
        assert_eq!(log_messages("plain text\n"), "plain text");
    }
}
