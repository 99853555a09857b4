//! What a streaming exec (CRI `Exec`) needs: the monitor request for the process (the
//! container's user, environment, working directory and no-new-privileges, with the requested
//! command and terminal) and a connection to the pod's monitor, which runs `<runtime> exec`
//! and relays its stdio. The session itself (the request and its frames) is criusd's.

use std::os::unix::net::UnixStream;

use crius_monitor::StreamExecRequest;

use super::ContainerManager;
use super::exec::container_process;
use crate::error::RuntimeError;

/// The streams a streaming exec's client has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecStreams {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl ContainerManager {
    /// The request to exec `cmd` in running container `id` and a fresh connection to its
    /// pod's monitor to send it on; also returns the pod's id. The terminal size is the
    /// caller's to fill in.
    pub fn stream_exec_connection(
        &self,
        id: &str,
        cmd: &[String],
        streams: ExecStreams,
    ) -> Result<(StreamExecRequest, String, UnixStream), RuntimeError> {
        let (c, spec) = self.exec_target(id, cmd)?;
        let p = container_process(&spec);
        let mut env = p.env;
        // A shell in a terminal needs TERM, as the kubelet's other runtimes set it.
        if streams.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let req = StreamExecRequest {
            id: c.id.clone(),
            argv: cmd.to_vec(),
            env,
            cwd: p.cwd,
            user: p.user,
            tty: streams.tty,
            no_new_privileges: p.no_new_privileges,
            // A terminal carries all three; stderr is part of it.
            stdin: streams.stdin,
            stdout: streams.stdout,
            stderr: streams.stderr && !streams.tty,
            width: 0,
            height: 0,
        };
        let stream = self.session_connection(&c.pod_id)?;
        Ok((req, c.pod_id, stream))
    }
}
