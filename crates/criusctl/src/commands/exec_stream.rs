//! `criusctl exec -i/-t`: the streaming Exec. The URL from the Exec RPC is upgraded to SPDY
//! (`v4.channel.k8s.io`); local stdin, stdout and stderr are copied over their streams, the
//! terminal is put in raw mode and its size sent with `-t`, and the exit code is read from
//! the JSON status on the error stream.

use std::os::fd::AsFd;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use crius_streaming::spdy::Headers;
use k8s_cri::v1::ExecRequest;
use tokio::io::AsyncWriteExt;

use super::Exit;
use crate::cli::ExecArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &ExecArgs) -> Result<()> {
    let request = ExecRequest {
        container_id: args.container.clone(),
        cmd: args.command.clone(),
        tty: args.tty,
        stdin: args.interactive,
        stdout: true,
        stderr: !args.tty,
    };
    ctx.trace("ExecRequest", &request);
    let url = ctx.runtime().await?.exec(request).await?.into_inner().url;
    ctx.trace("ExecResponse", &url);
    session(&url, args.interactive, args.tty).await
}

/// Runs a remote-command session (exec or attach) on `url` with the local stdio.
pub async fn session(url: &str, interactive: bool, tty: bool) -> Result<()> {
    let (session, protocol) = crius_streaming::client::connect(url, &["v4.channel.k8s.io"])
        .await
        .with_context(|| format!("connecting to {url}"))?;
    if protocol != "v4.channel.k8s.io" {
        bail!("the streaming server chose {protocol:?}, criusctl speaks v4.channel.k8s.io");
    }
    let open = |t: &str| session.open(Headers::new().with("streamType", t));
    let (mut error, _) = open("error").await?;
    let stdin = if interactive {
        Some(open("stdin").await?.1)
    } else {
        None
    };
    let (mut stdout, _) = open("stdout").await?;
    let stderr = if tty {
        None
    } else {
        Some(open("stderr").await?.0)
    };
    let resize = if tty {
        Some(open("resize").await?.1)
    } else {
        None
    };
    // Raw mode for the session's length, restored on every way out.
    let _raw = if tty { RawMode::enter() } else { None };
    if let Some(r) = resize {
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            loop {
                if let Some((w, h)) = terminal_size() {
                    let msg = format!("{{\"Width\":{w},\"Height\":{h}}}\n");
                    if r.write(Bytes::from(msg)).await.is_err() {
                        return;
                    }
                }
                if winch.recv().await.is_none() {
                    return;
                }
            }
        });
    }
    if let Some(w) = stdin {
        // A thread of its own, not tokio's stdin: a read that never returns (a terminal) must
        // not keep the runtime from shutting down when the command is done.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut input = std::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write(b).await.is_err() {
                    return;
                }
            }
            let _ = w.close().await;
        });
    }
    let out = tokio::spawn(async move {
        let mut o = tokio::io::stdout();
        while let Some(b) = stdout.read().await {
            if o.write_all(&b).await.is_err() || o.flush().await.is_err() {
                break;
            }
        }
    });
    let err_task = stderr.map(|mut r| {
        tokio::spawn(async move {
            let mut e = tokio::io::stderr();
            while let Some(b) = r.read().await {
                if e.write_all(&b).await.is_err() || e.flush().await.is_err() {
                    break;
                }
            }
        })
    });
    let mut status = Vec::new();
    while let Some(b) = error.read().await {
        if status.len() < 64 * 1024 {
            status.extend_from_slice(&b);
        }
    }
    let _ = out.await;
    if let Some(t) = err_task {
        let _ = t.await;
    }
    session.close().await;
    drop(_raw);
    match exit_code(&status)? {
        0 => Ok(()),
        code => Err(Exit(code).into()),
    }
}

/// The exit code in a v4 status (empty: the connection ended without one).
fn exit_code(status: &[u8]) -> Result<i32> {
    if status.is_empty() {
        bail!("the exec session ended without an exit status");
    }
    let v: serde_json::Value =
        serde_json::from_slice(status).context("reading the exec exit status")?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode"
        && let Some(code) = v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok())
    {
        return Ok(code);
    }
    bail!("{}", v["message"].as_str().unwrap_or("exec failed"))
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize the pointer refers to, which outlives the call.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The local terminal in raw mode until dropped (nothing when stdin is not a terminal).
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_v4_statuses() {
        assert_eq!(
            exit_code(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        let s = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
        assert_eq!(exit_code(s).unwrap(), 42);
        let e = exit_code(br#"{"status":"Failure","message":"boom"}"#).unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert!(exit_code(b"").is_err());
    }
}
