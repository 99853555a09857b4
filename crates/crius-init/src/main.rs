//! `crius-init`: PID 1 of a pod's shared PID namespace.
//!
//! - reaps every zombie reparented to it (orphans of container processes);
//! - forwards SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 to every other process in the namespace
//!   (`kill(-1, sig)`);
//! - after SIGTERM, SIGINT or SIGHUP it exits as soon as no other process is left in the
//!   namespace (immediately if there is none). SIGUSR1/SIGUSR2 are only forwarded.
//!
//! Signals are blocked and collected with `sigtimedwait`, so there is no async handler and no
//! allocation after start-up. No-op handlers are still installed: the kernel drops signals to a
//! namespace init that has no handler for them when they come from an ancestor namespace.

use std::process::ExitCode;
use std::ptr;

const FORWARDED: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// While draining, how often to re-check whether the namespace is empty. Processes that are
/// not our children (joined with setns) do not send us SIGCHLD when they exit.
const DRAIN_POLL_NS: libc::c_long = 100_000_000;

extern "C" fn noop(_: libc::c_int) {}

fn main() -> ExitCode {
    // SAFETY: plain libc calls on locally owned, initialised structures.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = noop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in FORWARDED.iter().copied().chain([libc::SIGCHLD]) {
            libc::sigaction(sig, &action, ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut());
        set
    };
    signal_ready();

    let mut draining = false;
    loop {
        reap();
        if draining && namespace_empty() {
            return ExitCode::SUCCESS;
        }
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: DRAIN_POLL_NS,
        };
        // SAFETY: `set` is initialised; a null siginfo is allowed.
        let sig = unsafe {
            if draining {
                libc::sigtimedwait(&set, ptr::null_mut(), &timeout)
            } else {
                libc::sigwaitinfo(&set, ptr::null_mut())
            }
        };
        if sig <= 0 || sig == libc::SIGCHLD {
            continue;
        }
        // SAFETY: kill(-1) signals every process in our PID namespace except ourselves.
        unsafe { libc::kill(-1, sig) };
        if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) {
            draining = true;
        }
    }
}

/// With `--ready-fd N`, writes one byte to fd N and closes it: whoever started us learns that
/// the signal set-up is done. Before that a SIGTERM from outside would be dropped by the
/// kernel (a namespace init only gets signals it handles).
fn signal_ready() {
    let args: Vec<String> = std::env::args().collect();
    let fd = args
        .windows(2)
        .find(|pair| pair[0] == "--ready-fd")
        .and_then(|pair| pair[1].parse::<libc::c_int>().ok());
    if let Some(fd) = fd {
        // SAFETY: fd was handed to us for exactly this; a bad fd just fails.
        unsafe {
            libc::write(fd, b"r".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// Reaps every exited child without blocking.
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// True when no process other than us is left in the namespace: `kill(-1, 0)` then fails with
/// ESRCH because there is nobody to signal.
fn namespace_empty() -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(-1, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
