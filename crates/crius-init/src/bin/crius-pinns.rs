//! `crius-pinns`: creates namespaces for a pod on behalf of criusd.
//!
//! criusd is a multithreaded tokio process, so it must not fork and run arbitrary code in the
//! child; `unshare(CLONE_NEWNET)` on a daemon thread would also move that thread. Instead the
//! daemon spawns this single-threaded helper (fork+exec, which is safe) and talks to it over
//! pipes:
//!
//! `crius-pinns ns [--net] [--ipc] [--uts] [--hostname H] [--loopback] [--sysctl k=v]...`
//!   unshares the namespaces, configures them, prints `ready` on stdout and then waits for
//!   stdin to close. While it waits, the daemon bind-mounts `/proc/<pid>/ns/<type>` onto the pin
//!   files (the daemon owns every mount, so it can roll back); closing stdin lets us exit. If the
//!   daemon dies, stdin closes too and nothing is left behind.
//!
//! `crius-pinns pid-init <crius-init path>`
//!   unshares the PID namespace, forks a child that becomes PID 1 of it, starts a new session
//!   and execs crius-init, prints the child's pid and exits. The child is thereby orphaned and
//!   reparented to criusd's subreaper or the host init, so it outlives daemon restarts.
//!
//! Errors go to stderr as one line and the exit code is 1.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, fork, pipe2, sethostname, setsid};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ns") => pin_ns(&args[1..]),
        Some("pid-init") => pid_init(&args[1..]),
        _ => Err("usage: crius-pinns ns [...] | crius-pinns pid-init <init>".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "crius-pinns: {message}");
            ExitCode::FAILURE
        }
    }
}

struct NsArgs {
    flags: CloneFlags,
    hostname: Option<String>,
    loopback: bool,
    sysctls: Vec<(String, String)>,
}

fn parse_ns_args(args: &[String]) -> Result<NsArgs, String> {
    let mut out = NsArgs {
        flags: CloneFlags::empty(),
        hostname: None,
        loopback: false,
        sysctls: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--net" => out.flags |= CloneFlags::CLONE_NEWNET,
            "--ipc" => out.flags |= CloneFlags::CLONE_NEWIPC,
            "--uts" => out.flags |= CloneFlags::CLONE_NEWUTS,
            "--loopback" => out.loopback = true,
            "--hostname" => {
                out.hostname = Some(it.next().ok_or("--hostname needs a value")?.clone())
            }
            "--sysctl" => {
                let kv = it.next().ok_or("--sysctl needs key=value")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("bad sysctl {kv:?}"))?;
                out.sysctls.push((k.to_string(), v.to_string()));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

/// unshare(2) with the flags zero-extended explicitly. The kernel takes an unsigned long while
/// libc's wrapper takes an int, and an optimised build may leave garbage in the upper half of
/// the register (seen: a neighbouring bool field loaded along with the flags), which the kernel
/// rejects with EINVAL.
fn unshare_flags(flags: CloneFlags) -> nix::Result<()> {
    let bits = flags.bits() as u32 as libc::c_ulong;
    // SAFETY: unshare takes one integer argument and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_unshare, bits) };
    nix::errno::Errno::result(rc).map(drop)
}

fn pin_ns(args: &[String]) -> Result<(), String> {
    let args = parse_ns_args(args)?;
    unshare_flags(args.flags).map_err(|e| format!("unshare: {e}"))?;
    if let Some(name) = &args.hostname {
        if !args.flags.contains(CloneFlags::CLONE_NEWUTS) {
            return Err("--hostname needs --uts".into());
        }
        sethostname(name).map_err(|e| format!("sethostname {name:?}: {e}"))?;
    }
    if args.loopback {
        if !args.flags.contains(CloneFlags::CLONE_NEWNET) {
            return Err("--loopback needs --net".into());
        }
        loopback_up()?;
    }
    // /proc/sys/net and the IPC sysctls resolve against the namespaces of the process that
    // opens them, not of the process that mounted /proc, so writing here configures the new
    // namespaces only.
    for (key, value) in &args.sysctls {
        write_sysctl(key, value)?;
    }
    let mut stdout = std::io::stdout();
    stdout
        .write_all(b"ready\n")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing ready: {e}"))?;
    // Hold the namespaces until the daemon has bind-mounted them and closes our stdin.
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

/// Dotted key to /proc/sys path: `.` separates levels, `/` stands for a literal dot (as in
/// `net.ipv4.conf.eth0/100.forwarding`). The daemon has validated the key already.
fn write_sysctl(key: &str, value: &str) -> Result<(), String> {
    if key.split('.').any(|part| part.is_empty() || part == "..") {
        return Err(format!("bad sysctl key {key:?}"));
    }
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    let path = format!("/proc/sys/{rel}");
    std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value:?} ({path}): {e}"))
}

/// Sets IFF_UP on `lo` with SIOCSIFFLAGS; avoids a netlink dependency for one flag.
fn loopback_up() -> Result<(), String> {
    // SAFETY: socket() has no memory-safety preconditions; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ioctls with a properly initialised ifreq on a valid socket.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!(
                "SIOCSIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn pid_init(args: &[String]) -> Result<(), String> {
    let [init] = args else {
        return Err("usage: crius-pinns pid-init <init>".into());
    };
    // Everything the child needs is prepared before fork.
    let path = CString::new(init.as_str()).map_err(|_| "init path contains NUL".to_string())?;
    let devnull = c"/dev/null";
    let root = c"/";
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // The write end is inherited by crius-init (no CLOEXEC), which closes it once its signal
    // handling is set up; only then may the daemon rely on SIGTERM reaching it.
    let (ready_r, ready_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    nix::fcntl::fcntl(
        &ready_w,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| format!("fcntl: {e}"))?;
    let ready_fd = CString::new(ready_w.as_raw_fd().to_string()).unwrap_or_default();
    let argv = [path.clone(), CString::from(c"--ready-fd"), ready_fd];

    unshare_flags(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid: {e}"))?;
    // SAFETY: this helper is single-threaded, so the child may run ordinary code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_r);
            drop(ready_r);
            let _ = setsid();
            // SAFETY: plain libc calls; failures only lose stdio redirection / cwd change.
            unsafe {
                let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                }
                // Do not keep the daemon's working directory (and its mount) busy.
                libc::chdir(root.as_ptr());
            }
            let errno = nix::unistd::execv(&path, &argv).unwrap_err() as i32;
            // Report why exec failed through the CLOEXEC pipe (EOF there means success).
            // SAFETY: write of a local buffer to an owned fd; _exit never returns.
            unsafe {
                libc::write(err_w.as_raw_fd(), errno.to_ne_bytes().as_ptr().cast(), 4);
                libc::_exit(127)
            }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(ready_w);
            let mut buf = Vec::new();
            let _ = std::fs::File::from(err_r).read_to_end(&mut buf);
            if let Ok(bytes) = <[u8; 4]>::try_from(buf.as_slice()) {
                let errno = nix::errno::Errno::from_raw(i32::from_ne_bytes(bytes));
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(format!("exec {init}: {errno}"));
            }
            buf.clear();
            let _ = std::fs::File::from(ready_r).read_to_end(&mut buf);
            if buf != b"r" {
                let status = nix::sys::wait::waitpid(child, None);
                return Err(format!("{init} exited before it was ready: {status:?}"));
            }
            let mut stdout = std::io::stdout();
            writeln!(stdout, "{child}")
                .and_then(|()| stdout.flush())
                .map_err(|e| {
                    // Nobody would learn the pid: do not leave an unmanaged init behind.
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    format!("writing pid: {e}")
                })
        }
    }
}
