//! Smoke tests of the two binaries. They also make `cargo test -p crius-init` build the
//! binaries into target/<profile>/, where crius-sandbox's tests look for them.

use std::process::Command;
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_crius-init");
const PINNS: &str = env!("CARGO_BIN_EXE_crius-pinns");

#[test]
fn pinns_rejects_bad_usage() {
    let out = Command::new(PINNS).arg("bogus").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    let out = Command::new(PINNS)
        .args(["ns", "--frobnicate"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}

/// Needs root: starts crius-init as PID 1 of a new PID namespace and stops it with SIGTERM.
#[test]
fn pid_init_starts_ready_and_stops_on_sigterm() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Become the reaper of the orphaned init so that the test can wait for it.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let out = Command::new(PINNS)
        .args(["pid-init", INIT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // Ready means the handlers are installed: SIGTERM (bit 14) is caught.
    let caught = status.lines().find(|l| l.starts_with("SigCgt:")).unwrap();
    let mask = u64::from_str_radix(caught.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(mask & (1 << (libc::SIGTERM - 1)), 0, "{caught}");
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    eprintln!("crius-init {rss}");

    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let waited = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert!(
        matches!(waited, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{waited:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn pid_init_reports_exec_failure() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let out = Command::new(PINNS)
        .args(["pid-init", "/nonexistent/init"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/init") && err.contains("ENOENT"),
        "{err}"
    );
}
