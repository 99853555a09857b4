//! `crius-monitor`: one monitor process per pod, and the blocking client criusd uses to talk
//! to it.
//!
//! The monitor (binary `crius-monitor`) is a child subreaper: it runs the OCI runtime
//! (`runc`/`crun`) for every container of its pod, becomes the parent of each container's init
//! process once `<runtime> create` has exited, owns the containers' stdio, writes their CRI
//! logs ([`cri_log`]) and records their exit codes in exit files ([`exit_file`]).
//!
//! Lifetime: criusd starts it with [`spawn_detached`]; it is in its own session and survives a
//! criusd restart, after which criusd reconnects and asks for [`protocol::Request::State`].
//! If the monitor itself dies, the containers keep running (re-parented to init), but nothing
//! reads their stdout/stderr any more, so their next write fails with EPIPE/SIGPIPE, and their
//! exit codes are no longer recorded: criusd must treat a running container whose monitor is
//! gone as unmanaged (kill it via the runtime and use the runtime's state). Exit files already
//! written stay valid.
//!
//! A detached monitor's eventual exit is reaped by init (or by criusd if criusd makes itself a
//! child subreaper); the short-lived intermediate processes of the double fork are reaped by
//! the monitor binary itself.
//!
//! Note for service managers: the monitor inherits criusd's cgroup; a systemd unit for criusd
//! needs `KillMode=process` (or criusd must move the monitor to another cgroup), otherwise
//! stopping criusd kills every monitor.

pub mod attach;
pub mod client;
pub mod cri_log;
pub mod exit_file;
pub mod oom;
pub mod protocol;
pub mod socket;
pub mod spawn;

pub use client::{MonitorClient, MonitorConn, monitor_error};
pub use exit_file::{ExitRecord, read_exit_file, write_exit_file};
pub use oom::OomCounter;
pub use protocol::{
    ContainerState, ContainerStatus, CreateRequest, EXEC_OUTPUT_LIMIT, ErrorCode, ExecRequest,
    ExecResult, ForeignRuntime, MAX_STREAM_EXECS, MonitorError, Request, Response,
    StreamExecRequest, User,
};
pub use spawn::{PID_FILE, spawn_detached};
