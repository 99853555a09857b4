//! Pinning a pod's namespaces to files.
//!
//! `crius-pinns ns` creates and configures the namespaces and waits; meanwhile we bind-mount
//! `/proc/<helper>/ns/<type>` onto empty files and then let the helper exit. Every file and
//! mount is made here, through [`Mounter`], so a failure anywhere is rolled back here.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, invalid, io_err, sys_err};
use crate::helper::{self, Helpers};
use crate::mounter::{HostMounter, Mounter, unmount_quiet};
use crate::pid::{self, PodInit};
use crate::pindir::{ensure_pin_dir, release_pin_dir};
use crate::sysctl::{normalize_sysctl_key, validate_sysctls};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsType {
    Net,
    Ipc,
    Uts,
    Pid,
}

impl NsType {
    /// The name under /proc/<pid>/ns and of the pin file.
    pub fn as_str(self) -> &'static str {
        match self {
            NsType::Net => "net",
            NsType::Ipc => "ipc",
            NsType::Uts => "uts",
            NsType::Pid => "pid",
        }
    }
}

impl fmt::Display for NsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct PinRequest {
    pub pod_id: String,
    /// Namespaces the pod gets of its own; the others are the host's. `Pid` starts crius-init.
    pub types: Vec<NsType>,
    /// Holds the net pin, named after the pod id (`<state>/netns/<pod_id>`), so `ip netns`-style
    /// tools find it when this is a /run/netns-like directory.
    pub net_dir: PathBuf,
    /// The pod's own directory for the `ipc`, `uts` and `pid` pins (`<state>/pods/<id>/ns`).
    pub ns_dir: PathBuf,
    /// Set inside the new UTS namespace.
    pub hostname: Option<String>,
    /// Applied inside the new net/ipc namespaces; see [`validate_sysctls`].
    pub sysctls: BTreeMap<String, String>,
    /// Bring `lo` up in the new net namespace.
    pub loopback_up: bool,
}

/// The pinned files (None: the host's namespace) and, with a PID namespace, its init.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedNamespaces {
    pub pod_id: String,
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    pub init: Option<PodInit>,
    /// The pod-owned pin directory, released by [`unpin`].
    pub ns_dir: Option<PathBuf>,
}

/// [`pin_namespaces_with`] using the installed helpers and the real mount syscalls.
pub fn pin_namespaces(req: &PinRequest) -> Result<PinnedNamespaces, SandboxError> {
    pin_namespaces_with(req, &Helpers::locate()?, &HostMounter)
}

pub fn pin_namespaces_with(
    req: &PinRequest,
    helpers: &Helpers,
    m: &dyn Mounter,
) -> Result<PinnedNamespaces, SandboxError> {
    let args = validate(req)?;
    let mut pinned = PinnedNamespaces {
        pod_id: req.pod_id.clone(),
        ..Default::default()
    };
    match pin_into(req, helpers, m, &args, &mut pinned) {
        Ok(()) => {
            let uses_ns_dir = [NsType::Ipc, NsType::Uts, NsType::Pid]
                .iter()
                .any(|t| req.types.contains(t));
            if uses_ns_dir {
                pinned.ns_dir = Some(req.ns_dir.clone());
            }
            Ok(pinned)
        }
        Err(err) => {
            tracing::warn!(pod_id = %req.pod_id, %err, "pinning namespaces failed, rolling back");
            if let Err(undo) = unpin_with(&pinned, m) {
                tracing::error!(pod_id = %req.pod_id, %undo, "rollback of pinned namespaces failed");
            }
            Err(err)
        }
    }
}

/// Checks the request and builds the helper's arguments.
fn validate(req: &PinRequest) -> Result<Vec<String>, SandboxError> {
    let id = &req.pod_id;
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) || id.len() > 255 {
        return Err(invalid("pod_id", format!("{id:?} cannot name a file")));
    }
    validate_sysctls(&req.sysctls, &req.types)?;
    let mut args = vec!["ns".to_string()];
    for t in [NsType::Net, NsType::Ipc, NsType::Uts] {
        if req.types.contains(&t) {
            args.push(format!("--{t}"));
        }
    }
    if let Some(name) = &req.hostname {
        if !req.types.contains(&NsType::Uts) {
            return Err(invalid(
                "hostname",
                "setting it needs a pod-owned UTS namespace",
            ));
        }
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(invalid(
                "hostname",
                format!("{name:?} is not a valid hostname"),
            ));
        }
        args.extend(["--hostname".to_string(), name.clone()]);
    }
    if req.loopback_up && req.types.contains(&NsType::Net) {
        args.push("--loopback".into());
    }
    for (key, value) in &req.sysctls {
        args.extend([
            "--sysctl".to_string(),
            format!("{}={value}", normalize_sysctl_key(key)),
        ]);
    }
    Ok(args)
}

fn pin_into(
    req: &PinRequest,
    helpers: &Helpers,
    m: &dyn Mounter,
    args: &[String],
    pinned: &mut PinnedNamespaces,
) -> Result<(), SandboxError> {
    let wants = |t| req.types.contains(&t);
    let mut targets = Vec::new();
    if wants(NsType::Net) {
        ensure_pin_dir(&req.net_dir, m)?;
        targets.push((NsType::Net, req.net_dir.join(&req.pod_id)));
    }
    if wants(NsType::Ipc) || wants(NsType::Uts) || wants(NsType::Pid) {
        // Rollback may release the dir only if this call mounted it: a pre-existing mount may
        // hold another attempt's pins.
        if ensure_pin_dir(&req.ns_dir, m)? {
            pinned.ns_dir = Some(req.ns_dir.clone());
        }
    }
    for t in [NsType::Ipc, NsType::Uts] {
        if wants(t) {
            targets.push((t, req.ns_dir.join(t.as_str())));
        }
    }

    if !targets.is_empty() {
        // Files first: O_EXCL refuses to clobber a pin that already exists (another pod or a
        // retry), before anything is unshared.
        for (t, path) in &targets {
            create_pin_file(path)?;
            set(pinned, *t, path.clone());
        }
        let running = helper::run(&helpers.pinns, &req.pod_id, args)?;
        if running.line != "ready" {
            let line = running.line.clone();
            running.abort();
            return Err(SandboxError::Helper {
                pod_id: req.pod_id.clone(),
                helper: helpers.pinns.clone(),
                message: format!("unexpected output {line:?}"),
            });
        }
        let helper_pid = running.child.id();
        for (t, path) in &targets {
            let source = PathBuf::from(format!("/proc/{helper_pid}/ns/{t}"));
            if let Err(e) = m.bind(&source, path) {
                running.abort();
                return Err(sys_err("bind-mounting namespace", path.clone())(e));
            }
        }
        running.finish();
    }

    if wants(NsType::Pid) {
        let init = pid::start_pod_init_with(&req.pod_id, helpers, &req.ns_dir, m)?;
        pinned.pid = Some(init.pid_ns_path.clone());
        pinned.init = Some(init);
    }
    Ok(())
}

fn set(pinned: &mut PinnedNamespaces, t: NsType, path: PathBuf) {
    match t {
        NsType::Net => pinned.net = Some(path),
        NsType::Ipc => pinned.ipc = Some(path),
        NsType::Uts => pinned.uts = Some(path),
        NsType::Pid => pinned.pid = Some(path),
    }
}

/// An empty regular file to mount onto; fails if it exists.
pub(crate) fn create_pin_file(path: &Path) -> Result<(), SandboxError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(drop)
        .map_err(io_err("creating pin file", path))
}

/// Stops the pod's init (if any), unmounts and deletes every pin file and releases the pod's
/// pin dir. Idempotent: missing files and unmounted files are fine.
pub fn unpin(pinned: &PinnedNamespaces) -> Result<(), SandboxError> {
    unpin_with(pinned, &HostMounter)
}

/// Keeps going after an error so that as much as possible is released; returns the first.
pub(crate) fn unpin_with(pinned: &PinnedNamespaces, m: &dyn Mounter) -> Result<(), SandboxError> {
    let mut first = None;
    if let Some(init) = &pinned.init {
        first = pid::stop_pod_init(init, pid::DEFAULT_STOP_GRACE).err();
    }
    for path in [&pinned.net, &pinned.ipc, &pinned.uts, &pinned.pid]
        .into_iter()
        .flatten()
    {
        if let Err(e) = remove_pin(path, m) {
            first.get_or_insert(e);
        }
    }
    if let Some(Err(e)) = pinned.ns_dir.as_deref().map(|dir| release_pin_dir(dir, m)) {
        first.get_or_insert(e);
    }
    first.map_or(Ok(()), Err)
}

pub(crate) fn remove_pin(path: &Path, m: &dyn Mounter) -> Result<(), SandboxError> {
    unmount_quiet(m, path).map_err(sys_err("unmounting namespace", path))?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err("removing pin file", path)(e))
        }
        _ => Ok(()),
    }
}
