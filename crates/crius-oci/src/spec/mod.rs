//! OCI runtime spec (`config.json`) generation for a CRI container, following kubelet's
//! contract and containerd's choices where the CRI leaves room.

mod devices;
mod image;
mod lsm;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod security;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crius_error::{ErrorKind, HasKind};
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder};

pub use image::ImageConfig;
pub use lsm::HostLsm;
pub use process::exec_process;
pub use resources::linux_resources;

/// Where one of the container's namespaces comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsSource {
    /// Join the namespace pinned at this path (the pod's).
    Path(PathBuf),
    /// Share the host's namespace (CRI `NODE` mode).
    Host,
    /// A namespace of the container's own (CRI `CONTAINER` mode for pid).
    New,
}

/// The pod's namespaces as the container should see them. A mount namespace of its own is
/// always created; user namespaces are not supported yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    pub network: NsSource,
    pub ipc: NsSource,
    pub uts: NsSource,
    pub pid: NsSource,
    /// cgroup v2 hosts want `New` (what containerd does); on v1 `Host` keeps the host view.
    pub cgroup: NsSource,
}

/// Files the pod shares with its containers. `None` leaves the image's own file in place
/// (or, for `shm`, gives the container a private tmpfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// Host and runtime capabilities that change the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecFeatures {
    /// The runtime understands the `rro` mount option.
    pub recursive_read_only: bool,
    /// The host accounts swap (cgroup v1 `memory.memsw.*`, v2 `memory.swap.max`); without it a
    /// swap limit makes the runtime fail, so none is set.
    pub memory_swap: bool,
}

impl SpecFeatures {
    /// Probes the host's cgroups. Recursive read-only mounts are not used yet.
    pub fn detect() -> Self {
        SpecFeatures {
            recursive_read_only: false,
            memory_swap: resources::host_has_swap_accounting(),
        }
    }
}

/// Everything [`container_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container: &'a ContainerConfig,
    pub sandbox: &'a PodSandboxConfig,
    /// Only used for the `io.kubernetes.cri.sandbox-id` annotation.
    pub sandbox_id: &'a str,
    pub image: &'a ImageConfig,
    /// The mounted container rootfs; `/etc/passwd` and `/etc/group` are read from it.
    pub rootfs: &'a Path,
    pub namespaces: PodNamespaces,
    pub cgroups_path: String,
    pub pod_files: PodFiles,
    pub hostname: String,
    /// The daemon's own `oom_score_adj` when it cannot lower it (no `CAP_SYS_RESOURCE`): lower
    /// requested values are raised to it, as the kernel would refuse them.
    pub oom_score_adj_floor: Option<i64>,
    pub features: SpecFeatures,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A request field is wrong; `field` is its CRI path, e.g. `config.mounts[0].host_path`.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error(
        "no command specified: neither config.command/config.args nor the image's Entrypoint/Cmd give one"
    )]
    NoCommand,
    /// The request asks for something crius does not implement yet.
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
    /// The request is valid but the runtime or host cannot honour it.
    #[error("{field}: {message}")]
    NotAvailable { field: String, message: String },
    #[error("image config: {message}")]
    ImageConfig { message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl HasKind for SpecError {
    fn kind(&self) -> ErrorKind {
        match self {
            SpecError::InvalidArgument { .. } | SpecError::NoCommand => ErrorKind::InvalidArgument,
            SpecError::Unsupported { .. } => ErrorKind::Unimplemented,
            SpecError::NotAvailable { .. } | SpecError::ImageConfig { .. } => {
                ErrorKind::FailedPrecondition
            }
            SpecError::Io { .. } | SpecError::Oci(_) => ErrorKind::Internal,
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::InvalidArgument {
        field: field.into(),
        message: message.into(),
    }
}

// Annotations containerd sets, which tools (and runtimes like gVisor/Kata) key on.
const ANN_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const ANN_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const ANN_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANN_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const ANN_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const ANN_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const ANN_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// The OCI runtime spec of a CRI container.
pub fn container_spec(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.container;
    let linux_cfg = c.linux.as_ref();
    let sc = linux_cfg.and_then(|l| l.security_context.as_ref());

    let args = process::args(c, input.image)?;
    let env = process::env(c, input.image, &input.hostname);
    let cwd = process::cwd(c, input.image)?;
    let user = user::resolve(input.rootfs, sc, &input.image.user)?;
    let security = security::container_security(sc, input.sandbox, HostLsm::detect())?;
    let mut res = resources::container_resources(
        linux_cfg.and_then(|l| l.resources.as_ref()),
        input.features,
    )?;
    let oom_score_adj = resources::oom_score_adj(
        linux_cfg.and_then(|l| l.resources.as_ref()),
        input.oom_score_adj_floor,
    )?;
    let mut devs = devices::container_devices(c)?;
    if security.privileged {
        devs = devices::with_host_devices(devs)?;
    }
    let mounts = mounts::container_mounts(input, security.readonly_rootfs, security.privileged)?;

    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(user.to_oci()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(security.capabilities)
        .no_new_privileges(security.no_new_privileges)
        .build()?;
    process.set_apparmor_profile(security.apparmor_profile);
    process.set_oom_score_adj(oom_score_adj);
    // ProcessBuilder's default has none, but be explicit: the runtime's defaults apply.
    process.set_rlimits(None);

    res.set_devices(Some(if security.privileged {
        devices::allow_all_rules()
    } else {
        devices::cgroup_rules(&devs)
    }));

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces::oci_namespaces(&input.namespaces))
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .resources(res)
        .devices(devs.into_iter().map(|d| d.device).collect::<Vec<_>>())
        .masked_paths(security.masked_paths)
        .readonly_paths(security.readonly_paths)
        .build()?;
    linux.set_seccomp(security.seccomp);
    if let Some(p) = mounts.rootfs_propagation {
        linux.set_rootfs_propagation(Some(p.to_string()));
    }
    let sysctls: HashMap<String, String> = input
        .sandbox
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux.set_sysctl(Some(sysctls));
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(security.readonly_rootfs)
                .build()?,
        )
        .process(process)
        .mounts(mounts.mounts)
        .annotations(annotations(input))
        .linux(linux)
        .build()?;
    // SpecBuilder starts from Spec::default(), which names the host "youki". The hostname can
    // only be set in a UTS namespace of the container's own; a joined pod namespace already
    // carries it.
    spec.set_hostname(None);
    if input.namespaces.uts == NsSource::New && !input.hostname.is_empty() {
        spec.set_hostname(Some(input.hostname.clone()));
    }
    Ok(spec)
}

fn annotations(input: &SpecInput<'_>) -> HashMap<String, String> {
    let c = input.container;
    let mut a: HashMap<String, String> = c.annotations.clone().into_iter().collect();
    let meta = input.sandbox.metadata.clone().unwrap_or_default();
    let image = c
        .image
        .as_ref()
        .map(|i| {
            if i.user_specified_image.is_empty() {
                i.image.clone()
            } else {
                i.user_specified_image.clone()
            }
        })
        .unwrap_or_default();
    let ours = [
        (ANN_CONTAINER_TYPE, "container".to_string()),
        (
            ANN_CONTAINER_NAME,
            c.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        ),
        (ANN_SANDBOX_ID, input.sandbox_id.to_string()),
        (ANN_SANDBOX_NAME, meta.name),
        (ANN_SANDBOX_NAMESPACE, meta.namespace),
        (ANN_SANDBOX_UID, meta.uid),
        (ANN_IMAGE_NAME, image),
    ];
    for (k, v) in ours {
        a.insert(k.to_string(), v);
    }
    a
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
