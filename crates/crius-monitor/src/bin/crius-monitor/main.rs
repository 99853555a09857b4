//! `crius-monitor --pod-id <id> --dir <state dir> --socket <path> [--detach]
//!  [--exit-when-empty] [--log-file <path>]`
//!
//! One per pod: child subreaper for the pod's containers, owner of their stdio and logs,
//! recorder of their exit codes; serves criusd over a Unix socket (see
//! `crius_monitor::protocol`). Single-threaded and allocation-light to stay under 1 MiB RSS.

mod attach;
mod container;
mod handlers;
mod jobs;
mod log_writer;
mod runtime;
mod server;
mod stream_exec;
mod sys;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use crius_monitor::PID_FILE;

struct Args {
    pod_id: String,
    dir: PathBuf,
    socket: PathBuf,
    detach: bool,
    exit_when_empty: bool,
    log_file: Option<PathBuf>,
}

const USAGE: &str = "usage: crius-monitor --pod-id <id> --dir <dir> --socket <path> \
                     [--detach] [--exit-when-empty] [--log-file <path>]";

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let (mut pod_id, mut dir, mut socket, mut log_file) = (None, None, None, None);
    let (mut detach, mut exit_when_empty) = (false, false);
    let value = |it: &mut dyn Iterator<Item = OsString>, name: &str| {
        it.next().ok_or_else(|| format!("{name} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--pod-id") => {
                pod_id = Some(
                    value(&mut it, "--pod-id")?
                        .into_string()
                        .map_err(|_| "bad --pod-id")?,
                )
            }
            Some("--dir") => dir = Some(PathBuf::from(value(&mut it, "--dir")?)),
            Some("--socket") => socket = Some(PathBuf::from(value(&mut it, "--socket")?)),
            Some("--log-file") => log_file = Some(PathBuf::from(value(&mut it, "--log-file")?)),
            Some("--detach") => detach = true,
            Some("--exit-when-empty") => exit_when_empty = true,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    match (pod_id, dir, socket) {
        (Some(pod_id), Some(dir), Some(socket)) => Ok(Args {
            pod_id,
            dir,
            socket,
            detach,
            exit_when_empty,
            log_file,
        }),
        _ => Err(USAGE.to_string()),
    }
}

fn setup_stdio(args: &Args) -> io::Result<()> {
    let null = fs::File::open("/dev/null")?;
    sys::dup_onto(null.as_fd(), 0)?;
    sys::dup_onto(null.as_fd(), 1)?;
    let log = args
        .log_file
        .clone()
        .unwrap_or_else(|| args.dir.join("monitor.log"));
    let err = OpenOptions::new().create(true).append(true).open(log)?;
    sys::dup_onto(err.as_fd(), 2)
}

fn run(args: Args) -> io::Result<()> {
    fs::create_dir_all(&args.dir)?;
    if args.detach {
        sys::detach()?;
        // Not in criusd's way: no inherited cwd, terminal or stdio.
        std::env::set_current_dir("/")?;
        setup_stdio(&args)?;
    } else if let Some(log) = &args.log_file {
        let err = OpenOptions::new().create(true).append(true).open(log)?;
        sys::dup_onto(err.as_fd(), 2)?;
    }
    sys::tune_malloc();
    sys::ignore_sigpipe();
    sys::set_child_subreaper()?;
    let signals = sys::signalfd(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT])?;

    // The pid file goes first: spawn_detached treats a connectable socket as "ready" and
    // then reads it.
    let pid_path = args.dir.join(PID_FILE);
    let tmp = args.dir.join(".monitor.pid.tmp");
    fs::write(&tmp, format!("{}\n", std::process::id()))?;
    fs::rename(&tmp, &pid_path)?;
    match fs::remove_file(&args.socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = crius_monitor::socket::bind(&args.socket)?;
    eprintln!(
        "crius-monitor: pod {} pid {} listening on {}",
        args.pod_id,
        std::process::id(),
        args.socket.display()
    );

    let opts = server::Options {
        dir: args.dir.clone(),
        socket_dir: crius_monitor::socket::SocketDir::open(&args.dir)?,
        exit_when_empty: args.exit_when_empty,
    };
    let mut monitor = server::Monitor::new(listener, signals, opts)?;
    let result = monitor.run();
    let _ = fs::remove_file(&args.socket);
    let _ = fs::remove_file(&pid_path);
    eprintln!("crius-monitor: pod {} exiting", args.pod_id);
    result
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crius-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crius-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}
