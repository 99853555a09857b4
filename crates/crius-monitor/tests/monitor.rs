//! End-to-end tests of the monitor with real runc and crun (root required; skipped otherwise).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, pid_alive, read_log, wait_until, zombie_children};
use crius_monitor::attach as frame;
use crius_monitor::{
    ContainerStatus, ErrorCode, ExecRequest, MAX_STREAM_EXECS, MonitorClient, MonitorConn, Request,
    StreamExecRequest, User, monitor_error, spawn_detached,
};

/// Runs each scenario once with runc and once with crun.
macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod runc {
            $(#[test] fn $name() { if let Some(env) = super::Env::new("runc", stringify!($name)) { super::$name(env) } })*
        }
        mod crun {
            $(#[test] fn $name() { if let Some(env) = super::Env::new("crun", stringify!($name)) { super::$name(env) } })*
        }
    };
}

both_runtimes!(
    logs_and_exit_code,
    sigkill_exit_code,
    exec_sync,
    reopen_log,
    orphans_are_reaped,
    client_gone_mid_request,
    shutdown_waits_for_containers,
    tty_container,
    create_error_reports_runtime_output,
    exit_when_empty,
    attach_is_bounded,
    exited_containers_leave_the_runtime,
    stream_exec_relays_stdio_and_exit_codes,
    stream_exec_with_a_terminal,
    stream_exec_dies_with_its_client,
    stream_execs_are_bounded,
);

fn exec_req(id: &str, argv: &[&str], timeout_ms: u64) -> ExecRequest {
    ExecRequest {
        id: id.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: User::default(),
        tty: false,
        timeout_ms,
        no_new_privileges: false,
    }
}

fn logs_and_exit_code(mut env: Env) {
    env.start_monitor(&[]);
    let script = "echo out1; echo err1 >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; \
                  echo out2; printf tail; exit 3";
    let (id, log, pid) = env.run("logs", &["sh", "-c", script]);
    assert!(pid > 0);
    let rec = env.wait_exit(&id);
    assert_eq!(rec.exit_code, 3);
    assert!(rec.exited_at_unix_nanos > 0);

    let mut c = env.client();
    let st = c.state().unwrap();
    let me = st.iter().find(|s| s.id == id).unwrap();
    assert_eq!(me.status, ContainerStatus::Exited);
    assert_eq!(me.exit_code, Some(3));
    assert_eq!(me.pid, pid);

    // The pipes may still be open for a moment after the exit; wait for the final P record.
    assert!(wait_until(Duration::from_secs(5), || read_log(&log)
        .iter()
        .any(|l| l.2 == b"tail")));
    let lines = read_log(&log);
    let out: Vec<(&str, usize)> = lines
        .iter()
        .filter(|l| l.0 == "stdout")
        .map(|l| (l.1.as_str(), l.2.len()))
        .collect();
    assert_eq!(
        out,
        vec![
            ("F", 4),
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 4),
            ("P", 4)
        ]
    );
    let so: Vec<&[u8]> = lines
        .iter()
        .filter(|l| l.0 == "stdout")
        .map(|l| &l.2[..])
        .collect();
    assert_eq!(so[0], b"out1");
    assert!(so[1].iter().all(|&b| b == b'x'));
    assert_eq!(so[4], b"out2");
    let se: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").collect();
    assert_eq!(se.len(), 1);
    assert_eq!((se[0].1.as_str(), &se[0].2[..]), ("F", &b"err1"[..]));

    c.delete(&id, false).unwrap();
    assert!(c.state().unwrap().is_empty());
}

fn sigkill_exit_code(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, pid) = env.run("kill", &["sleep", "100"]);
    let mut c = env.client();
    let st = c.state().unwrap();
    assert_eq!(st[0].status, ContainerStatus::Running);
    c.kill(&id, 9, false).unwrap();
    assert_eq!(env.wait_exit(&id).exit_code, 137);
    assert!(!pid_alive(pid));
    c.delete(&id, false).unwrap();
    let err = c.delete(&id, false).unwrap_err();
    assert_eq!(monitor_error(&err).unwrap().code, ErrorCode::NotFound);
}

/// The monitor runs the runtime's `delete` once a container exits (as containerd deletes a
/// task on its exit): the container keeps its state and exit in the monitor, and a later
/// Delete has no runtime work left.
fn exited_containers_leave_the_runtime(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _pid) = env.run("gone", &["sleep", "100"]);
    let (runtime, root) = (env.runtime.clone(), env.root.clone());
    let in_runtime = |id: &str| {
        std::process::Command::new(&runtime)
            .arg("--root")
            .arg(&root)
            .args(["state", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(in_runtime(&id));
    let mut c = env.client();
    c.kill(&id, 9, false).unwrap();
    assert_eq!(env.wait_exit(&id).exit_code, 137);
    assert!(
        wait_until(Duration::from_secs(10), || !in_runtime(&id)),
        "the runtime still has the exited container"
    );
    let st = c.state().unwrap();
    let me = st.iter().find(|s| s.id == id).unwrap();
    assert_eq!(
        (me.status, me.exit_code),
        (ContainerStatus::Exited, Some(137))
    );
    c.delete(&id, false).unwrap();
    assert!(c.state().unwrap().is_empty());
    // A Delete that races the monitor's own delete is answered when that one ends.
    let (id, _log, _pid) = env.run("race", &["sleep", "100"]);
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    c.delete(&id, true).unwrap();
    assert!(c.state().unwrap().is_empty());
    assert!(!in_runtime(&id));
}

fn exec_sync(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("exec", &["sleep", "100"]);
    let mut c = env.client();
    let r = c
        .exec(&exec_req(
            &id,
            &["sh", "-c", "echo hi; echo oops >&2; exit 5"],
            5000,
        ))
        .unwrap();
    assert_eq!(
        (r.exit_code, &r.stdout[..], &r.stderr[..], r.timed_out),
        (5, &b"hi\n"[..], &b"oops\n"[..], false)
    );

    // Binary-safe and larger than a pipe buffer.
    let r = c
        .exec(&exec_req(
            &id,
            &["head", "-c", "300000", "/dev/urandom"],
            5000,
        ))
        .unwrap();
    assert_eq!((r.exit_code, r.stdout.len()), (0, 300000));

    // A long exec on one connection does not hold up another connection.
    let socket = env.socket.clone();
    let id2 = id.clone();
    let slow = std::thread::spawn(move || {
        let mut c = MonitorClient::connect(&socket).unwrap();
        let t = Instant::now();
        let r = c.exec(&exec_req(&id2, &["sleep", "10"], 500)).unwrap();
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(c.state().unwrap().len(), 1);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "state was blocked by exec"
    );
    let (r, elapsed) = slow.join().unwrap();
    assert!(r.timed_out, "{r:?}");
    assert!(elapsed < Duration::from_secs(5), "timeout took {elapsed:?}");
    // The timed-out `sleep 10` is gone, not left running in the container.
    assert!(wait_until(Duration::from_secs(3), || !has_process_cmdline(
        b"sleep\x0010\x00"
    )));

    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    let err = c.exec(&exec_req(&id, &["true"], 0)).unwrap_err();
    assert_eq!(
        monitor_error(&err).unwrap().code,
        ErrorCode::FailedPrecondition
    );
    c.delete(&id, false).unwrap();
}

fn has_process_cmdline(needle: &[u8]) -> bool {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == needle))
}

fn reopen_log(mut env: Env) {
    env.start_monitor(&[]);
    let (id, log, _) = env.run(
        "reopen",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || read_log(&log).len() >= 3));
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    let mut c = env.client();
    c.reopen_log(&id).unwrap();
    assert!(wait_until(Duration::from_secs(5), || read_log(&log).len() >= 3));
    let old = read_log(&rotated);
    let new = read_log(&log);
    let num = |l: &(String, String, Vec<u8>)| -> u32 {
        std::str::from_utf8(&l.2[4..]).unwrap().parse().unwrap()
    };
    // The new file continues where the old one stopped.
    assert!(num(&new[0]) > num(old.last().unwrap()));
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    let err = c.reopen_log(&id).unwrap_err();
    assert_eq!(
        monitor_error(&err).unwrap().code,
        ErrorCode::FailedPrecondition
    );
    c.delete(&id, false).unwrap();
}

fn orphans_are_reaped(mut env: Env) {
    env.start_monitor(&[]);
    // The init exits while its child lives; the kernel kills the child with the pid
    // namespace, and everything that ends up re-parented to the monitor must be reaped.
    let (id, _log, pid) = env.run(
        "orphan",
        &["sh", "-c", "sleep 100 & sleep 100 & sleep 0.2; exit 0"],
    );
    assert_eq!(env.wait_exit(&id).exit_code, 0);
    let mpid = env.monitor_pid();
    assert!(wait_until(Duration::from_secs(3), || zombie_children(mpid).is_empty()));
    assert!(!pid_alive(pid));
    // Exec'd processes leave runc's helpers behind too.
    let (id2, _log, _) = env.run("orphan2", &["sleep", "100"]);
    let mut c = env.client();
    let r = c
        .exec(&exec_req(
            &id2,
            &["sh", "-c", "sleep 100 >/dev/null 2>&1 & exit 0"],
            5000,
        ))
        .unwrap();
    assert_eq!(r.exit_code, 0);
    c.kill(&id2, 9, false).unwrap();
    assert_eq!(env.wait_exit(&id2).exit_code, 137);
    assert!(wait_until(Duration::from_secs(3), || zombie_children(mpid).is_empty()));
    c.delete(&id, false).unwrap();
    c.delete(&id2, false).unwrap();
}

fn client_gone_mid_request(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("client", &["sleep", "100"]);
    // Half a request, then the client vanishes (a kill -9 closes the socket the same way).
    {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        s.write_all(b"v1 exec id=").unwrap();
    }
    // A full request whose answer nobody reads.
    {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        s.write_all(&Request::Exec(exec_req(&id, &["sleep", "0.3"], 0)).encode())
            .unwrap();
    }
    // A client process killed with SIGKILL while waiting for an exec answer.
    kill_client_process(
        &env.socket,
        &Request::Exec(exec_req(&id, &["sleep", "0.2"], 0)).encode(),
    );
    // Garbage is answered with an error, not a crash.
    {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        s.write_all(b"v9 bogus\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut line).unwrap();
        assert!(line.starts_with("v1 error code=invalid"), "{line}");
    }
    std::thread::sleep(Duration::from_millis(600));
    let mut c = env.client();
    assert_eq!(c.state().unwrap().len(), 1);
    assert!(env.monitor.as_mut().unwrap().try_wait().unwrap().is_none());
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    c.delete(&id, false).unwrap();
}

/// Forks a client that connects, sends `request` and waits; then SIGKILLs it.
fn kill_client_process(socket: &Path, request: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is prepared before fork: it only makes raw syscalls.
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(socket.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let (r, w) = {
        let mut fds = [0; 2];
        // SAFETY: valid array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    // SAFETY: the child only calls async-signal-safe functions and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: raw syscalls on prepared data.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            libc::connect(fd, (&raw const addr).cast(), len);
            libc::write(fd, request.as_ptr().cast(), request.len());
            libc::write(w, b"x".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: plain syscalls on our own fds and child.
    unsafe {
        libc::close(w);
        libc::read(r, b.as_mut_ptr().cast(), 1);
        libc::close(r);
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

fn shutdown_waits_for_containers(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("shutdown", &["sleep", "100"]);
    let mut c = env.client();
    c.shutdown(false).unwrap();
    assert!(!env.wait_monitor_exit(Duration::from_millis(300)));
    // Runtime commands still work while the shutdown is pending.
    c.kill(&id, 9, false).unwrap();
    assert!(env.wait_monitor_exit(Duration::from_secs(5)));
    assert_eq!(env.wait_exit(&id).exit_code, 137);
    assert!(!env.socket.exists());

    // Forced shutdown with a live container: the monitor goes, the container stays.
    env.start_monitor(&[]);
    let (id2, _log, pid2) = env.run("shutdown2", &["sleep", "100"]);
    let mut c = env.client();
    c.shutdown(true).unwrap();
    assert!(env.wait_monitor_exit(Duration::from_secs(5)));
    assert!(pid_alive(pid2), "container must survive its monitor");
    let _ = id2; // cleaned up through the runtime by Env::drop
}

fn exit_when_empty(mut env: Env) {
    env.start_monitor(&["--exit-when-empty"]);
    // Empty from the start does not count: the monitor waits for its first container.
    assert!(!env.wait_monitor_exit(Duration::from_millis(200)));
    let (id, _log, _) = env.run("empty", &["true"]);
    assert_eq!(env.wait_exit(&id).exit_code, 0);
    assert!(!env.wait_monitor_exit(Duration::from_millis(200)));
    env.client().delete(&id, false).unwrap();
    assert!(env.wait_monitor_exit(Duration::from_secs(5)));
}

fn tty_container(mut env: Env) {
    env.start_monitor(&[]);
    let id = env.new_id("tty");
    let bundle = env.bundle(&id, &["sh", "-c", "echo ttyout; tty"], true);
    let log = env.tmp.path().join("tty.log");
    let mut req = env.create_request(&id, &bundle, Some(&log));
    req.tty = true;
    let mut c = env.client();
    c.create(&req).unwrap();
    c.start(&id).unwrap();
    assert_eq!(env.wait_exit(&id).exit_code, 0);
    assert!(wait_until(Duration::from_secs(5), || read_log(&log).len() >= 2));
    let lines = read_log(&log);
    assert_eq!(lines[0], ("stdout".into(), "F".into(), b"ttyout".to_vec()));
    assert!(lines[1].2.starts_with(b"/dev/pts/"), "{:?}", lines[1]);
    c.delete(&id, false).unwrap();
    // No console socket left behind.
    assert!(
        fs::read_dir(&env.dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("console-"))
    );
}

fn create_error_reports_runtime_output(mut env: Env) {
    env.start_monitor(&[]);
    let id = env.new_id("bad");
    let bundle = env.bundle(&id, &["/no/such/binary"], false);
    let mut c = env.client();
    // runc fails at create (exec lookup), crun possibly only at start: accept either.
    let res = c
        .create(&env.create_request(&id, &bundle, None))
        .and_then(|_| c.start(&id).map(|_| 0));
    let err = res.unwrap_err();
    let me = monitor_error(&err).unwrap();
    assert_eq!(me.code, ErrorCode::Runtime);
    assert!(
        me.message.contains("no such") || me.message.contains("No such"),
        "{me:?}"
    );
    // Duplicate ids are refused without running anything.
    let _ = c.delete(&id, true);
    let id2 = env.new_id("dup");
    let bundle2 = env.bundle(&id2, &["sleep", "100"], false);
    c.create(&env.create_request(&id2, &bundle2, None)).unwrap();
    let err = c
        .create(&env.create_request(&id2, &bundle2, None))
        .unwrap_err();
    assert_eq!(monitor_error(&err).unwrap().code, ErrorCode::AlreadyExists);
    c.delete(&id2, true).unwrap();
}

#[test]
fn spawn_detached_survives_parent() {
    if !common::is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mon");
    let socket = tmp.path().join("m.sock");
    let pid = spawn_detached(
        Path::new(env!("CARGO_BIN_EXE_crius-monitor")),
        "detached",
        &dir,
        &socket,
    )
    .unwrap();
    // Kills the detached monitor should an assertion fail before it is shut down.
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            if pid_alive(self.0) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            }
        }
    }
    let _guard = Guard(pid);
    // The intermediate processes were reaped, not left as zombies for init.
    assert!(zombie_children(1).iter().all(|&z| {
        !fs::read_to_string(format!("/proc/{z}/comm")).is_ok_and(|c| c.starts_with("crius-monitor"))
    }));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // Own session and process group (led by the exited intermediate, so the monitor can
    // never acquire a controlling terminal), not our child.
    // SAFETY: getsid(0) has no preconditions.
    let our_sid = unsafe { libc::getsid(0) };
    assert_eq!(fields[2], fields[3], "pgrp == session");
    assert_ne!(fields[3], our_sid.to_string(), "session");
    assert_ne!(fields[1], std::process::id().to_string(), "ppid");
    let mut c = MonitorClient::connect(&socket).unwrap();
    assert!(c.state().unwrap().is_empty());
    c.shutdown(false).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)));
    assert!(!socket.exists());
}

/// Prints the monitor's memory with three running containers (one of them chatty).
/// `cargo test -p crius-monitor --release --test monitor rss -- --ignored --nocapture`
#[test]
#[ignore = "measurement, not a check"]
fn rss_with_three_containers() {
    let Some(mut env) = Env::new("runc", "rss") else {
        return;
    };
    env.start_monitor(&[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let args: &[&str] = if i == 0 {
            &[
                "sh",
                "-c",
                "while true; do echo some log line; sleep 0.01; done",
            ]
        } else {
            &["sleep", "100"]
        };
        ids.push(env.run("rss", args).0);
    }
    let mut c = env.client();
    let r = c.exec(&exec_req(&ids[1], &["echo", "hi"], 2000)).unwrap();
    assert_eq!(r.exit_code, 0);
    std::thread::sleep(Duration::from_secs(2));
    let pid = env.monitor_pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    for l in status
        .lines()
        .filter(|l| l.starts_with("Vm") || l.starts_with("Rss"))
    {
        eprintln!("{l}");
    }
    for l in rollup
        .lines()
        .filter(|l| l.starts_with("Rss") || l.starts_with("Pss") || l.starts_with("Private"))
    {
        eprintln!("{l}");
    }
    if std::env::var_os("RSS_DETAIL").is_some() {
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut name = String::new();
        for l in smaps.lines() {
            if l.contains('-') && !l.contains(':')
                || l.split_whitespace().count() >= 5 && !l.ends_with("kB")
            {
                name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
                name = format!("{} {}", l.split_whitespace().nth(1).unwrap_or(""), name);
            } else if (l.starts_with("Rss:")
                || l.starts_with("Private_")
                || l.starts_with("Shared_"))
                && !l.ends_with(" 0 kB")
            {
                eprintln!("{name:50} {l}");
            }
        }
    }
    for id in &ids {
        c.kill(id, 9, false).unwrap();
        env.wait_exit(id);
        c.delete(id, false).unwrap();
    }
}

/// Sends `v1 attach ...` on a new connection; returns it once answered, or the error.
fn attach_conn(env: &Env, id: &str, stdin: bool) -> Result<UnixStream, String> {
    framed_conn(
        env,
        &Request::Attach {
            id: id.into(),
            stdin,
            stdout: true,
            stderr: true,
        },
    )
}

/// Sends a request answered `ok` then frames on a new connection; returns the connection, or
/// the error the monitor answered.
fn framed_conn(env: &Env, req: &Request) -> Result<UnixStream, String> {
    use std::io::Read;
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.write_all(&req.encode()).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "monitor closed: {line:?}");
        line.push(b[0]);
    }
    match crius_monitor::Response::decode(&line).unwrap() {
        crius_monitor::Response::Ok => Ok(s),
        r => Err(format!("{r:?}")),
    }
}

/// Attachers per container are bounded; attachers that do not read are dropped while the
/// container runs on at full speed, its log complete, and a reading attacher gets it all.
fn attach_is_bounded(mut env: Env) {
    use std::io::Read;
    env.start_monitor(&[]);
    let id = env.new_id("attach");
    // 20 MB of output once a line arrives on stdin.
    let script = "read go; i=0; while [ $i -lt 2000 ]; do head -c 9999 /dev/zero | tr '\\0' y; \
                  echo; i=$((i+1)); done; echo end; exit 4";
    let bundle = env.bundle(&id, &["sh", "-c", script], false);
    let log = env.tmp.path().join("attach.log");
    let mut req = env.create_request(&id, &bundle, Some(&log));
    req.stdin = true;
    let mut c = env.client();
    c.create(&req).unwrap();
    c.start(&id).unwrap();

    let mut feeder = attach_conn(&env, &id, true).unwrap();
    let idle: Vec<UnixStream> = (1..16)
        .map(|_| attach_conn(&env, &id, false).unwrap())
        .collect();
    let refused = attach_conn(&env, &id, false).unwrap_err();
    assert!(refused.contains("16 attachers"), "{refused}");

    let mut f = Vec::new();
    frame::encode(&mut f, frame::STDIN, b"go\n");
    feeder.write_all(&f).unwrap();
    feeder
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (mut out, mut exit) = (0usize, None);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while exit.is_none() {
        let n = feeder.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the exit frame");
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((kind, p, n)) = frame::decode(&buf[used..]).unwrap() {
            match kind {
                frame::STDOUT => out += p.len(),
                frame::EXIT => exit = Some(i32::from_be_bytes(p.try_into().unwrap())),
                _ => {}
            }
            used += n;
        }
        buf.drain(..used);
    }
    assert_eq!(exit, Some(4));
    assert_eq!(out, 2000 * 10000 + 4);
    assert_eq!(env.wait_exit(&id).exit_code, 4);
    assert!(wait_until(Duration::from_secs(5), || read_log(&log)
        .iter()
        .any(|l| l.2 == b"end")));
    // The idle attachers were dropped (or ended) without holding anything up: each reads to
    // EOF having received far less than the whole output.
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert!(all.len() < 12 * 1024 * 1024, "{} bytes", all.len());
    }
    c.delete(&id, false).unwrap();
}

fn stream_exec_req(id: &str, argv: &[&str], stdin: bool, tty: bool) -> StreamExecRequest {
    StreamExecRequest {
        id: id.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
        ..Default::default()
    }
}

fn stream_exec_conn(env: &Env, req: StreamExecRequest) -> Result<UnixStream, String> {
    framed_conn(env, &Request::StreamExec(req))
}

fn send_frame(s: &mut UnixStream, kind: u8, payload: &[u8]) {
    let mut f = Vec::new();
    frame::encode(&mut f, kind, payload);
    s.write_all(&f).unwrap();
}

/// What a streaming exec's connection carried.
#[derive(Default)]
struct Relayed {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<i32>,
    /// The monitor closed the connection (after the exit frame, or without one).
    closed: bool,
}

/// Reads frames until `done` holds for what was read, the exit frame arrives or the monitor
/// closes the connection (a read times out after 30 s: the test fails).
fn read_frames(s: &mut UnixStream, r: &mut Relayed, done: impl Fn(&Relayed) -> bool) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !done(r) && r.exit.is_none() {
        let n = s.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "no frame within 30 s ({e}); stdout so far {:?}, stderr {:?}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            )
        });
        if n == 0 {
            r.closed = true;
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((kind, p, n)) = frame::decode(&buf[used..]).unwrap() {
            match kind {
                frame::STDOUT => r.stdout.extend_from_slice(p),
                frame::STDERR => r.stderr.extend_from_slice(p),
                frame::EXIT => r.exit = Some(i32::from_be_bytes(p.try_into().unwrap())),
                k => panic!("unexpected frame kind {k}"),
            }
            used += n;
        }
        buf.drain(..used);
    }
    if r.exit.is_some() {
        // The exit frame is the last thing on the connection.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty() && buf.is_empty(),
            "data after the exit frame"
        );
        r.closed = true;
    }
}

fn run_to_exit(env: &Env, req: StreamExecRequest, stdin: Option<&[u8]>) -> Relayed {
    let mut s = stream_exec_conn(env, req).unwrap();
    if let Some(data) = stdin {
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            send_frame(&mut s, frame::STDIN, chunk);
        }
        send_frame(&mut s, frame::STDIN_EOF, &[]);
    }
    let mut r = Relayed::default();
    read_frames(&mut s, &mut r, |_| false);
    r
}

fn vm_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Pipes: stdin through to EOF, stdout and stderr apart, exit codes as a shell reports them,
/// and output held back (not buffered without bound) while the client does not read.
fn stream_exec_relays_stdio_and_exit_codes(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("sx", &["sleep", "100"]);
    let script = "cat; echo err >&2; exit 3";
    let r = run_to_exit(
        &env,
        stream_exec_req(&id, &["sh", "-c", script], true, false),
        Some(b"hello\nworld\n"),
    );
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit),
        (&b"hello\nworld\n"[..], &b"err\n"[..], Some(3))
    );
    let r = run_to_exit(&env, stream_exec_req(&id, &["true"], false, false), None);
    assert_eq!((r.stdout.len(), r.exit), (0, Some(0)));
    let r = run_to_exit(
        &env,
        stream_exec_req(&id, &["sh", "-c", "kill -9 $$"], false, false),
        None,
    );
    assert_eq!(r.exit, Some(137));
    let r = run_to_exit(
        &env,
        stream_exec_req(&id, &["/no/such/command"], false, false),
        None,
    );
    assert_eq!(r.exit, Some(127), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run_to_exit(&env, stream_exec_req(&id, &["/etc"], false, false), None);
    // crun 1.8 words it "Operation not permitted", left as its 255.
    let want = if env.runtime_name == "runc" { 126 } else { 255 };
    assert_eq!(r.exit, Some(want), "{}", String::from_utf8_lossy(&r.stderr));

    // 40 MB the client does not read at first: the monitor holds back, its memory bounded.
    let mpid = env.monitor_pid();
    let rss_before = vm_rss_kib(mpid);
    let mut s = stream_exec_conn(
        &env,
        stream_exec_req(
            &id,
            &["sh", "-c", "head -c 40000000 /dev/zero"],
            false,
            false,
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let rss = vm_rss_kib(mpid);
    assert!(
        rss < rss_before + 4096,
        "monitor RSS {rss_before} KiB -> {rss} KiB"
    );
    let mut r = Relayed::default();
    read_frames(&mut s, &mut r, |_| false);
    assert_eq!((r.stdout.len(), r.exit), (40_000_000, Some(0)));
    assert!(r.stdout.iter().all(|&b| b == 0));

    let mut c = env.client();
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    // Not on a container that is not running.
    let err = stream_exec_conn(&env, stream_exec_req(&id, &["true"], false, false)).unwrap_err();
    assert!(err.contains("FailedPrecondition"), "{err}");
    let err =
        stream_exec_conn(&env, stream_exec_req("nosuch", &["true"], false, false)).unwrap_err();
    assert!(err.contains("NotFound"), "{err}");
    c.delete(&id, false).unwrap();
    assert_no_exec_files(&env);
}

/// A terminal the monitor allocates: the size given with the request before the process
/// starts, a resize later, input through the terminal, the exit code.
fn stream_exec_with_a_terminal(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("sxtty", &["sleep", "100"]);
    // The runtime copies the size onto the process's terminal just after it starts: wait for
    // it rather than read it once.
    // crun resizes on SIGWINCH only from 1.9 (Debian 12 ships 1.8): the size at start only.
    let wait_resize = if env.runtime_name == "runc" {
        "until [ \"$(stty size)\" = \"30 100\" ]; do sleep 0.05; done;"
    } else {
        ""
    };
    let script = format!(
        "tty; until [ \"$(stty size)\" = \"45 123\" ]; do sleep 0.05; done; echo sized; \
         {wait_resize} echo resized; read line; echo \"got $line\"; exit 5"
    );
    let mut req = stream_exec_req(&id, &["sh", "-c", &script], true, true);
    (req.width, req.height) = (123, 45);
    let mut s = stream_exec_conn(&env, req).unwrap();
    let mut r = Relayed::default();
    let has = |r: &Relayed, what: &str| String::from_utf8_lossy(&r.stdout).contains(what);
    read_frames(&mut s, &mut r, |r| has(r, "sized"));
    assert!(
        has(&r, "/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    send_frame(&mut s, frame::RESIZE, &frame::resize_payload(100, 30));
    read_frames(&mut s, &mut r, |r| has(r, "resized"));
    send_frame(&mut s, frame::STDIN, b"hi there\n");
    read_frames(&mut s, &mut r, |_| false);
    assert!(
        has(&r, "got hi there"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert_eq!(r.exit, Some(5));
    let mut c = env.client();
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    c.delete(&id, false).unwrap();
    assert_no_exec_files(&env);
}

/// Processes whose command line is exactly `argv`.
fn processes_with_cmdline(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).ok().as_deref() == Some(&want[..]))
        .collect()
}

/// Live children of `ppid` running `exe` (the OCI runtime), zombies excluded.
fn children_running(ppid: u32, exe: &Path) -> Vec<u32> {
    use std::os::unix::ffi::OsStrExt;
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let rest = stat.rsplit(')').next().unwrap_or("");
            let mut f = rest.split_whitespace();
            let (state, parent) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent == Some(ppid)
                && state != Some("Z")
                && cmd.split(|&b| b == 0).next() == Some(exe.as_os_str().as_bytes())
        })
        .collect()
}

fn assert_no_exec_files(env: &Env) {
    let left: Vec<String> = fs::read_dir(&env.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stream-exec-"))
        .collect();
    assert!(left.is_empty(), "per-exec files left: {left:?}");
}

/// A number no other test run uses, for a `sleep` whose process the test looks for.
fn marker(env: &Env, n: u32) -> String {
    let runtime = u32::from(env.runtime_name == "crun");
    (10_000_000 + std::process::id() * 16 + runtime * 8 + n).to_string()
}

/// A streaming exec lives as long as its client: a connection that closes (criusd's session
/// ended, criusd died) or breaks the framing leaves no exec'd process, runtime or file.
fn stream_exec_dies_with_its_client(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("sxdrop", &["sleep", "100"]);
    let mpid = env.monitor_pid();
    for (n, tty, hostile) in [(0, false, false), (1, true, false), (2, false, true)] {
        let m = marker(&env, n);
        let argv = ["sleep", m.as_str()];
        let mut s = stream_exec_conn(&env, stream_exec_req(&id, &argv, true, tty)).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || !processes_with_cmdline(&argv)
                .is_empty()),
            "the exec never started"
        );
        if hostile {
            // A frame over the size limit: the monitor drops the connection, and the exec.
            let big = ((frame::MAX_PAYLOAD + 1) as u32).to_be_bytes();
            s.write_all(&[frame::STDIN, big[0], big[1], big[2], big[3]])
                .unwrap();
            let mut r = Relayed::default();
            read_frames(&mut s, &mut r, |_| false);
            assert!(r.closed && r.exit.is_none());
        }
        drop(s);
        assert!(
            wait_until(Duration::from_secs(10), || processes_with_cmdline(&argv)
                .is_empty()),
            "the exec'd process outlived its client (tty {tty})"
        );
        assert!(
            wait_until(Duration::from_secs(10), || children_running(
                mpid,
                &env.runtime
            )
            .is_empty()),
            "the runtime outlived the exec's client"
        );
        assert!(wait_until(Duration::from_secs(5), || zombie_children(mpid).is_empty()));
        assert_no_exec_files(&env);
    }
    // The monitor and the container are fine.
    let mut c = env.client();
    assert_eq!(c.state().unwrap()[0].status, ContainerStatus::Running);
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    c.delete(&id, false).unwrap();
}

/// At most MAX_STREAM_EXECS at once per monitor; the next is refused, and a slot frees up
/// when a client leaves.
fn stream_execs_are_bounded(mut env: Env) {
    env.start_monitor(&[]);
    let (id, _log, _) = env.run("sxmax", &["sleep", "1000"]);
    let m = marker(&env, 0);
    let argv = ["sleep", m.as_str()];
    let mut held: Vec<UnixStream> = (0..MAX_STREAM_EXECS)
        .map(|_| stream_exec_conn(&env, stream_exec_req(&id, &argv, false, false)).unwrap())
        .collect();
    let refused =
        stream_exec_conn(&env, stream_exec_req(&id, &["true"], false, false)).unwrap_err();
    assert!(
        refused.contains("ResourceExhausted") && refused.contains("64 streaming execs"),
        "{refused}"
    );
    // ExecSync is not held up by them.
    let mut c = env.client();
    assert_eq!(
        c.exec(&exec_req(&id, &["true"], 10_000)).unwrap().exit_code,
        0
    );
    drop(held.pop());
    // The slot is free once the exec it held is reaped.
    let mut r = None;
    assert!(wait_until(Duration::from_secs(20), || {
        r = stream_exec_conn(&env, stream_exec_req(&id, &["true"], false, false)).ok();
        r.is_some()
    }));
    let mut relayed = Relayed::default();
    read_frames(r.as_mut().unwrap(), &mut relayed, |_| false);
    assert_eq!(relayed.exit, Some(0));
    drop(held);
    assert!(
        wait_until(Duration::from_secs(30), || processes_with_cmdline(&argv)
            .is_empty()),
        "exec'd processes outlived their clients"
    );
    c.kill(&id, 9, false).unwrap();
    env.wait_exit(&id);
    c.delete(&id, false).unwrap();
    assert_no_exec_files(&env);
}
