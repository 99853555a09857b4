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
//!
//! Every container of the pod sees this process as PID 1, and one with `SYS_PTRACE` may walk
//! into `/proc/1/root` or attach to it. So before anything else it confines itself: a mount
//! namespace of its own whose root is an empty read-only tmpfs (pivot_root, the host's root
//! detached), no capabilities in any set, no_new_privs, uid and gid 65535 (the pause image's).
//! Forwarded signals then reach only what an unprivileged process may signal; criusd stops
//! the containers itself, and SIGKILL of this process ends whatever is left.

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

/// The unprivileged user and group PID 1 runs as (the pause image's 65535).
const INIT_ID: libc::uid_t = 65535;

fn main() -> ExitCode {
    if let Err(e) = confine() {
        // stderr is /dev/null under crius-pinns; the missing ready byte reports the failure.
        eprintln!("crius-init: {e}");
        return ExitCode::FAILURE;
    }
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

/// An empty root, no capabilities, no_new_privs, uid/gid [`INIT_ID`]; see the module docs.
fn confine() -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let root = c"/";
    let dot = c".";
    let tmpfs = c"tmpfs";
    let spot = c"/proc";
    // SAFETY: plain syscalls with NUL-terminated constant strings; no memory is shared.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(os("unshare mount namespace"));
        }
        // Nothing done below may propagate back to the host.
        if libc::mount(
            ptr::null(),
            root.as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        ) != 0
        {
            return Err(os("making mounts private"));
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // Any existing directory serves as the mount point (pivot_root refuses one stacked on
        // the current root); /proc exists on every Linux host, and is not needed any more.
        if libc::mount(
            tmpfs.as_ptr(),
            spot.as_ptr(),
            tmpfs.as_ptr(),
            flags,
            c"size=4k,nr_inodes=4,mode=0555".as_ptr().cast(),
        ) != 0
        {
            return Err(os("mounting the empty root"));
        }
        // Step onto the tmpfs and swap it with the root, then detach the old root, which
        // pivot_root stacked on top of it (runc's pivot_root(".", ".")).
        if libc::chdir(spot.as_ptr()) != 0 {
            return Err(os("chdir to the empty root"));
        }
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(os("pivot_root"));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(os("detaching the old root"));
        }
        if libc::chdir(root.as_ptr()) != 0 {
            return Err(os("chdir"));
        }
        if libc::mount(
            ptr::null(),
            root.as_ptr(),
            ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY | flags,
            ptr::null(),
        ) != 0
        {
            return Err(os("remounting the empty root read-only"));
        }
        // The bounding set needs CAP_SETPCAP, so it goes before the uid change.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(os("dropping the capability bounding set"));
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("no_new_privs"));
        }
        if libc::setgroups(0, ptr::null()) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setresgid(INIT_ID, INIT_ID, INIT_ID) != 0 {
            return Err(os("setresgid"));
        }
        // Leaving uid 0 (without SECBIT_KEEP_CAPS) clears the permitted and effective sets.
        if libc::setresuid(INIT_ID, INIT_ID, INIT_ID) != 0 {
            return Err(os("setresuid"));
        }
    }
    Ok(())
}
