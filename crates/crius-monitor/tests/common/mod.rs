//! Test harness: a busybox OCI bundle, a foreground monitor child and cleanup of everything
//! the test created (containers, runtime state, cgroups, temp dirs). Needs root.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crius_monitor::{CreateRequest, ExitRecord, MonitorClient, MonitorConn, read_exit_file};
use tempfile::TempDir;

pub const CGROUP_PARENT: &str = "crius-monitor-test";
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "yes", "true", "false", "head", "tr", "printf",
];

static SEQ: AtomicU32 = AtomicU32::new(0);
static HUGETLB: Mutex<Option<Result<(), String>>> = Mutex::new(None);

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// crun 1.8 refuses a hybrid cgroup v1 layout without a hugetlb hierarchy; mount it once if it
/// is missing (left mounted on purpose: other users of the machine may rely on it by then).
fn ensure_hugetlb() -> Result<(), String> {
    let mut g = HUGETLB.lock().unwrap();
    if let Some(r) = &*g {
        return r.clone();
    }
    let r = (|| {
        let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        if mounts.contains(" /sys/fs/cgroup/hugetlb ") || !Path::new("/sys/fs/cgroup/cpu").exists()
        {
            return Ok(());
        }
        fs::create_dir_all("/sys/fs/cgroup/hugetlb").map_err(|e| e.to_string())?;
        let st = Command::new("mount")
            .args([
                "-t",
                "cgroup",
                "-o",
                "hugetlb",
                "cgroup",
                "/sys/fs/cgroup/hugetlb",
            ])
            .status()
            .map_err(|e| e.to_string())?;
        if st.success() {
            eprintln!(
                "note: mounted hugetlb cgroup v1 hierarchy at /sys/fs/cgroup/hugetlb for crun"
            );
            Ok(())
        } else {
            Err(format!("mount hugetlb: {st}"))
        }
    })();
    *g = Some(r.clone());
    r
}

pub struct Env {
    pub tmp: TempDir,
    pub runtime: PathBuf,
    pub runtime_name: &'static str,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub exit_dir: PathBuf,
    pub rootfs: PathBuf,
    spec: serde_json::Value,
    pub monitor: Option<Child>,
    ids: Vec<String>,
    tag: String,
}

impl Env {
    /// Each Env has a cgroup parent of its own: tests running in parallel must not remove a
    /// parent another one is creating a child in.
    pub fn cgroup_parent(&self) -> String {
        format!("{CGROUP_PARENT}-{}", self.tag)
    }

    /// `None` (with the reason printed) when the test cannot run here.
    pub fn new(runtime: &'static str, tag: &str) -> Option<Env> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let runtime_path = PathBuf::from(format!("/usr/bin/{runtime}"));
        if !runtime_path.exists() {
            eprintln!("skipping: {} not installed", runtime_path.display());
            return None;
        }
        if runtime == "crun"
            && let Err(e) = ensure_hugetlb()
        {
            eprintln!("skipping crun: {e}");
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("crius-mon-")
            .tempdir()
            .unwrap();
        let base = tmp.path().to_path_buf();
        let rootfs = base.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in BUSYBOX_APPLETS {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let specdir = base.join("spec");
        fs::create_dir_all(&specdir).unwrap();
        let st = Command::new(&runtime_path)
            .args(["spec", "--bundle"])
            .arg(&specdir)
            .status()
            .unwrap();
        assert!(st.success(), "{runtime} spec failed");
        let spec: serde_json::Value =
            serde_json::from_slice(&fs::read(specdir.join("config.json")).unwrap()).unwrap();
        let env = Env {
            runtime: runtime_path,
            runtime_name: runtime,
            root: base.join("runtime-root"),
            dir: base.join("monitor"),
            socket: base.join("monitor.sock"),
            exit_dir: base.join("exits"),
            rootfs,
            spec,
            monitor: None,
            ids: Vec::new(),
            tag: format!("{tag}-{runtime}-{}", std::process::id()),
            tmp,
        };
        fs::create_dir_all(&env.root).unwrap();
        Some(env)
    }

    /// Starts the monitor as a foreground child.
    pub fn start_monitor(&mut self, extra: &[&str]) {
        let child = Command::new(env!("CARGO_BIN_EXE_crius-monitor"))
            .arg("--pod-id")
            .arg(&self.tag)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.monitor = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while MonitorClient::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "monitor did not start");
            sleep(Duration::from_millis(10));
        }
    }

    pub fn monitor_pid(&self) -> u32 {
        self.monitor.as_ref().unwrap().id()
    }

    pub fn client(&self) -> MonitorClient {
        let c = MonitorClient::connect(&self.socket).unwrap();
        c.set_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// A fresh container id (also registered for cleanup).
    pub fn new_id(&mut self, name: &str) -> String {
        let id = format!(
            "{}-{name}-{}",
            self.tag,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.ids.push(id.clone());
        id
    }

    /// Writes a bundle for `id` running `args`; returns the bundle dir.
    pub fn bundle(&self, id: &str, args: &[&str], tty: bool) -> PathBuf {
        let bundle = self.tmp.path().join("bundles").join(id);
        fs::create_dir_all(&bundle).unwrap();
        let mut spec = self.spec.clone();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = serde_json::json!(tty);
        spec["root"]["path"] = serde_json::json!(self.rootfs);
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{id}", self.cgroup_parent()));
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        bundle
    }

    pub fn create_request(&self, id: &str, bundle: &Path, log: Option<&Path>) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            bundle: bundle.into(),
            runtime: self.runtime.clone(),
            runtime_root: self.root.clone(),
            log_path: log.map(Path::to_path_buf).unwrap_or_default(),
            stdin: false,
            stdin_once: false,
            tty: false,
            exit_dir: self.exit_dir.clone(),
            systemd_cgroup: false,
        }
    }

    /// Creates and starts a container running `args`, logging to `<tmp>/<id>.log`.
    pub fn run(&mut self, name: &str, args: &[&str]) -> (String, PathBuf, u32) {
        let id = self.new_id(name);
        let bundle = self.bundle(&id, args, false);
        let log = self.tmp.path().join(format!("{id}.log"));
        let mut c = self.client();
        let pid = c
            .create(&self.create_request(&id, &bundle, Some(&log)))
            .unwrap();
        c.start(&id).unwrap();
        (id, log, pid)
    }

    pub fn wait_exit(&self, id: &str) -> ExitRecord {
        let path = self.exit_dir.join(id);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(r) = read_exit_file(&path).unwrap() {
                return r;
            }
            assert!(Instant::now() < deadline, "no exit file for {id}");
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the monitor child to exit by itself.
    pub fn wait_monitor_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let child = self.monitor.as_mut().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn cleanup(&mut self) {
        if let Some(mut child) = self.monitor.take() {
            if let Ok(mut c) = MonitorClient::connect(&self.socket) {
                let _ = c.set_timeout(Some(Duration::from_secs(5)));
                let _ = c.shutdown(true);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for id in &self.ids {
            let _ = Command::new(&self.runtime)
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            remove_cgroups(&self.cgroup_parent(), id);
        }
        remove_cgroups(&self.cgroup_parent(), "");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn remove_cgroups(parent: &str, id: &str) {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for e in entries.flatten() {
        let mut p = e.path().join(parent);
        if !id.is_empty() {
            p = p.join(id);
        }
        if p.exists() {
            // Processes may take a moment to leave after SIGKILL.
            for _ in 0..50 {
                if fs::remove_dir(&p).is_ok() || !p.exists() {
                    break;
                }
                if id.is_empty() {
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Parsed lines of a CRI log file: (stream, tag, content). Panics on a malformed line.
pub fn read_log(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    let data = fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").expect("unterminated log line");
        let mut parts = line.splitn(4, |&b| b == b' ');
        let ts = std::str::from_utf8(parts.next().unwrap()).unwrap();
        assert!(valid_timestamp(ts), "bad timestamp {ts:?}");
        let stream = std::str::from_utf8(parts.next().unwrap())
            .unwrap()
            .to_string();
        assert!(
            stream == "stdout" || stream == "stderr",
            "bad stream {stream}"
        );
        let tag = std::str::from_utf8(parts.next().unwrap())
            .unwrap()
            .to_string();
        assert!(tag == "P" || tag == "F", "bad tag {tag}");
        out.push((stream, tag, parts.next().unwrap_or_default().to_vec()));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, checked by shape (no regex crate needed).
fn valid_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 30
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            29 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Zombie processes whose parent is `ppid`.
pub fn zombie_children(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split(' ');
        let state = f.next().unwrap_or("");
        let parent: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent == ppid && state == "Z" {
            out.push(pid);
        }
    }
    out
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; look at its state too.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}
