//! Locating and running the helper binaries (`crius-pinns`, `crius-init`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::error::{SandboxError, io_err};

const SYSTEM_DIRS: [&str; 2] = ["/usr/local/libexec/crius", "/usr/libexec/crius"];

fn candidates(name: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CRIUS_HELPER_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        // The parent covers cargo's layout, where tests run from target/<profile>/deps.
        if let Some(parent) = dir.parent() {
            dirs.extend([dir.clone(), parent.to_path_buf()]);
        } else {
            dirs.push(dir);
        }
    }
    dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).collect()
}

/// Where helper `name` is: `$CRIUS_HELPER_DIR`, the directory of the current executable, its
/// parent, /usr/local/libexec/crius, /usr/libexec/crius — the first that has the file. If none
/// has it, the last candidate is returned so that the eventual error names a real location.
pub fn helper_path(name: &str) -> PathBuf {
    let all = candidates(name);
    all.iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| all.last().cloned().unwrap_or_else(|| PathBuf::from(name)))
}

/// Like [`helper_path`], but an error listing the searched places if the helper is missing.
pub fn find_helper(name: &str) -> Result<PathBuf, SandboxError> {
    let all = candidates(name);
    match all.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(SandboxError::HelperNotFound {
            name: name.to_string(),
            searched: all
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Paths of the two helper binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helpers {
    pub pinns: PathBuf,
    pub init: PathBuf,
}

impl Helpers {
    /// Finds both helpers with [`find_helper`].
    pub fn locate() -> Result<Helpers, SandboxError> {
        Ok(Helpers {
            pinns: find_helper("crius-pinns")?,
            init: find_helper("crius-init")?,
        })
    }
}

/// A running `crius-pinns` that has reported a result line on stdout.
pub(crate) struct Running {
    pub child: Child,
    /// Closing this lets an `ns` helper exit.
    pub stdin: Option<ChildStdin>,
    pub line: String,
}

/// Spawns the helper and reads its first stdout line. If there is none, the helper failed:
/// it is reaped and its stderr becomes the error.
/// Set in the environment of the helper and so of the pod's crius-init: a daemon restarted
/// after a crash finds the init of a pod it never recorded by it (the init runs before its
/// namespace is pinned, so nothing else leads to it).
pub const POD_ID_ENV: &str = "CRIUS_POD_ID";

pub(crate) fn run(pinns: &Path, pod_id: &str, args: &[String]) -> Result<Running, SandboxError> {
    let mut child = Command::new(pinns)
        .args(args)
        .env(POD_ID_ENV, pod_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("spawning", pinns))?;
    let stdin = child.stdin.take();
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line));
    if matches!(read, Some(Ok(n)) if n > 0) {
        return Ok(Running {
            child,
            stdin,
            line: line.trim_end().to_string(),
        });
    }
    drop(stdin);
    let _ = child.kill();
    let status = child.wait();
    let mut message = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut message);
    }
    if message.trim().is_empty() {
        message = format!("exited without output ({status:?})");
    }
    Err(SandboxError::Helper {
        pod_id: pod_id.to_string(),
        helper: pinns.to_path_buf(),
        message: message.trim().to_string(),
    })
}

impl Running {
    /// Lets the helper exit and reaps it; its failure after this point is only logged since
    /// the namespaces are already pinned.
    pub(crate) fn finish(mut self) {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(status) if status.success() => {}
            other => tracing::warn!(?other, "crius-pinns exited badly after pinning"),
        }
    }

    /// Kills and reaps the helper (rollback path).
    pub(crate) fn abort(mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
