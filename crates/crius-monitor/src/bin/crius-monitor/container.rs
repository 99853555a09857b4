//! A container the monitor owns, and recording its exit.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crius_monitor::cri_log::now_unix_nanos;
use crius_monitor::{ContainerState, ContainerStatus, ExitRecord, OomCounter, write_exit_file};

use crate::log_writer::{LogFile, OutputPipe};

pub struct Container {
    pub id: String,
    pub pid: i32,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub exited_at: Option<i64>,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// Created with `--systemd-cgroup`: `update` needs the flag too (it sets the scope's
    /// unit properties).
    pub systemd_cgroup: bool,
    pub exit_dir: PathBuf,
    pub log: LogFile,
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    /// Write end of the container's stdin, held open so the container does not see EOF until
    /// a `stdin_once` attacher's stdin ends (with a tty this is `None`: the master is `stdout`).
    pub stdin: Option<OwnedFd>,
    pub tty: bool,
    pub stdin_once: bool,
    /// Attachers' input not yet taken by the container (bounded: see `attach.rs`).
    pub stdin_buf: Vec<u8>,
    /// Close `stdin` once `stdin_buf` is written (a `stdin_once` attacher's stdin ended).
    pub stdin_close_pending: bool,
    /// The OOM kill counter of the container's memory cgroup, read once it was created.
    pub oom: Option<OomCounter>,
    /// The runtime's `delete` ran after the exit: a Delete request only forgets it.
    pub runtime_deleted: bool,
}

impl Container {
    /// Whether the init process may still be alive.
    pub fn alive(&self) -> bool {
        self.status != ContainerStatus::Exited
    }

    /// Records the init process's exit in memory and in `<exit_dir>/<id>`.
    pub fn record_exit(&mut self, code: i32, at: i64) {
        if !self.alive() {
            return;
        }
        self.status = ContainerStatus::Exited;
        self.exit_code = Some(code);
        self.exited_at = Some(at);
        let rec = ExitRecord {
            exit_code: code,
            exited_at_unix_nanos: at,
            oom: self.oom.as_ref().is_some_and(OomCounter::fired),
        };
        if let Err(e) = write_exit_file(&self.exit_dir, &self.id, &rec) {
            eprintln!(
                "crius-monitor: writing exit file for {} in {}: {e}",
                self.id,
                self.exit_dir.display()
            );
        }
    }

    pub fn state(&self) -> ContainerState {
        ContainerState {
            id: self.id.clone(),
            pid: self.pid as u32,
            status: self.status,
            exit_code: self.exit_code,
            exited_at_unix_nanos: self.exited_at,
        }
    }
}

/// Exits of pids we did not know yet, kept briefly: a container's init could die between
/// `runtime create` exiting and us reading its pid file.
pub struct RecentExits {
    items: Vec<(i32, i32, i64)>,
}

impl RecentExits {
    const CAP: usize = 32;

    pub fn new() -> Self {
        RecentExits { items: Vec::new() }
    }

    pub fn push(&mut self, pid: i32, code: i32) {
        if self.items.len() == Self::CAP {
            self.items.remove(0);
        }
        self.items.push((pid, code, now_unix_nanos()));
    }

    pub fn take(&mut self, pid: i32) -> Option<(i32, i64)> {
        let i = self.items.iter().position(|e| e.0 == pid)?;
        let (_, code, at) = self.items.remove(i);
        Some((code, at))
    }
}
