//! Building OCI runtime (runc/crun) command lines. Processes are spawned here and reaped by
//! the event loop's `waitpid(-1)`, never through `Child::wait`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use crius_monitor::ExecRequest;

/// Where a spawned runtime's stdio goes.
pub struct Stdio3 {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

/// Runs `<runtime> --root <root> <args...>`; returns its pid. The parent's copies of the
/// stdio fds are closed when this returns, so pipes see EOF once the child side is gone.
pub fn spawn(runtime: &Path, root: &Path, args: &[&OsStr], io: Stdio3) -> io::Result<i32> {
    let mut cmd = Command::new(runtime);
    cmd.arg("--root").arg(root).args(args);
    cmd.stdin(stdio(io.stdin))
        .stdout(stdio(io.stdout))
        .stderr(stdio(io.stderr));
    let child = cmd.spawn()?;
    // Dropping `child` neither waits nor kills; the event loop reaps the pid.
    Ok(child.id() as i32)
}

/// The OCI `process` object for `<runtime> exec --process`. Fields that are not given
/// (capabilities, rlimits, apparmor, ...) are inherited from the container by runc and crun.
pub fn exec_process_json(req: &ExecRequest) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("{\"terminal\":");
    s.push_str(if req.tty { "true" } else { "false" });
    let _ = write!(
        s,
        ",\"user\":{{\"uid\":{},\"gid\":{}",
        req.user.uid, req.user.gid
    );
    if !req.user.additional_gids.is_empty() {
        s.push_str(",\"additionalGids\":[");
        for (i, g) in req.user.additional_gids.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{g}");
        }
        s.push(']');
    }
    s.push_str("},\"args\":");
    json_strings(&mut s, &req.argv);
    s.push_str(",\"env\":");
    json_strings(&mut s, &req.env);
    s.push_str(",\"cwd\":");
    json_string(&mut s, if req.cwd.is_empty() { "/" } else { &req.cwd });
    if req.no_new_privileges {
        s.push_str(",\"noNewPrivileges\":true");
    }
    s.push('}');
    s
}

fn json_strings(out: &mut String, list: &[String]) {
    out.push('[');
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, v);
    }
    out.push(']');
}

fn json_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_monitor::User;

    #[test]
    fn process_json() {
        let req = ExecRequest {
            id: "c".into(),
            argv: vec!["sh".into(), "-c".into(), "echo \"a\\b\"\n\u{1}".into()],
            env: vec!["PATH=/bin".into()],
            cwd: String::new(),
            user: User {
                uid: 1,
                gid: 2,
                additional_gids: vec![3, 4],
            },
            tty: false,
            timeout_ms: 0,
            no_new_privileges: false,
        };
        assert_eq!(
            exec_process_json(&req),
            r#"{"terminal":false,"user":{"uid":1,"gid":2,"additionalGids":[3,4]},"args":["sh","-c","echo \"a\\b\"\n\u0001"],"env":["PATH=/bin"],"cwd":"/"}"#
        );
        let nnp = ExecRequest {
            no_new_privileges: true,
            argv: vec!["id".into()],
            ..req
        };
        assert!(exec_process_json(&nnp).ends_with(r#""cwd":"/","noNewPrivileges":true}"#));
    }
}
