//! The cgroup manager: one interface, a cgroupfs and a systemd driver, each on cgroup v1, v2
//! and hybrid hosts. Containers' own cgroups are made by the OCI runtime from the
//! `cgroupsPath` named here (runc/crun with `--systemd-cgroup` under systemd); the manager
//! makes the pod's: the parent when the kubelet gave none, and the leaf holding the pod's own
//! processes (crius-init, the monitor), with the sandbox's `resources` and `overhead`.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::Hierarchy;
use crate::error::{CgroupError, io_err};
use crate::naming::{CRIUS_CGROUP, Driver, PodCgroup};
use crate::resources::{Property, PropertyValue, Resources};
use crate::systemd::SystemdBus;

/// How long removal waits for the last processes of a pod's leaf cgroup to go.
const REMOVE_WAIT: Duration = Duration::from_secs(2);
/// Controllers a pod cgroup's children may use on cgroup v2.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

/// The seam between crius and the host's cgroups (a test can inject failures behind it).
pub trait CgroupManager: Send + Sync + Debug {
    fn driver(&self) -> Driver;
    /// The hierarchies this manager works on (where stats are read).
    fn hierarchy(&self) -> &Hierarchy;
    /// The pod's cgroup names from its `cgroup_parent` (empty: crius's default); a parent in
    /// the other driver's form is InvalidArgument.
    fn pod_cgroup(&self, cgroup_parent: &str, pod_id: &str) -> Result<PodCgroup, CgroupError> {
        self.driver().pod_cgroup(cgroup_parent, pod_id)
    }
    /// Makes the pod's cgroups: its parent when crius owns it (with `resources`), and the
    /// leaf of its own processes (with `overhead`). `pid`, when given, starts in the leaf
    /// (systemd cannot start a scope without one; without a pid the scope waits for the
    /// first [`CgroupManager::join_pod`]).
    fn create_pod(
        &self,
        pod: &PodCgroup,
        resources: &Resources,
        overhead: &Resources,
        pid: Option<i32>,
    ) -> Result<(), CgroupError>;
    /// Moves `pid` (the pod's init, its monitor) into the pod's leaf.
    fn join_pod(&self, pod: &PodCgroup, pid: i32, overhead: &Resources) -> Result<(), CgroupError>;
    /// Removes what [`CgroupManager::create_pod`] made; gone already is fine.
    fn remove_pod(&self, pod: &PodCgroup) -> Result<(), CgroupError>;
    /// New limits for the pod's parent cgroup, applied live.
    fn update_pod(&self, pod: &PodCgroup, resources: &Resources) -> Result<(), CgroupError>;
}

/// crius writes the cgroup directories itself.
#[derive(Debug, Clone)]
pub struct CgroupfsManager {
    h: Hierarchy,
}

impl CgroupfsManager {
    pub fn new(h: Hierarchy) -> Self {
        CgroupfsManager { h }
    }

    /// Makes `rel` in every hierarchy, each missing level with what it needs to hold
    /// processes (v1 cpuset: the parent's cpus and mems) and, on v2, the controllers enabled
    /// for its children.
    fn make(&self, rel: &str) -> Result<(), CgroupError> {
        for (mount, v2) in self.h.mounts() {
            let mut dir = mount.clone();
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                if v2 {
                    enable_controllers(&dir);
                }
                let parent = dir.clone();
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("creating cgroup", &dir)(e)),
                }
                // Also for levels that existed: one made without a cpuset holds no process.
                if !v2 {
                    inherit_cpuset(&parent, &dir);
                }
            }
        }
        Ok(())
    }

    /// Writes the limits into `rel`'s controller directories.
    pub fn apply(&self, rel: &str, r: &Resources) -> Result<(), CgroupError> {
        if r.is_empty() {
            return Ok(());
        }
        let writes = r.file_writes(&self.h)?;
        let mut pending = writes.iter().peekable();
        while let Some(w) = pending.next() {
            let Some((dir, _)) = self.h.dir(w.controller, rel) else {
                continue;
            };
            let path = dir.join(&w.file);
            match std::fs::write(&path, &w.value) {
                Ok(()) => {}
                // v1 refuses a memory limit above memsw: raise memsw first, then retry.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && w.file == "memory.limit_in_bytes"
                        && pending
                            .peek()
                            .is_some_and(|n| n.file == "memory.memsw.limit_in_bytes") =>
                {
                    let memsw = pending.next().expect("peeked");
                    let memsw_path = dir.join(&memsw.file);
                    std::fs::write(&memsw_path, &memsw.value)
                        .map_err(io_err("writing", &memsw_path))?;
                    std::fs::write(&path, &w.value).map_err(io_err("writing", &path))?;
                }
                Err(e) => return Err(io_err("writing", &path)(e)),
            }
        }
        Ok(())
    }

    fn join(&self, rel: &str, pid: i32) -> Result<usize, CgroupError> {
        let mut joined = 0;
        for (mount, _) in self.h.mounts() {
            let procs = mount.join(rel.trim_start_matches('/')).join("cgroup.procs");
            if !procs.exists() {
                continue;
            }
            std::fs::write(&procs, pid.to_string()).map_err(io_err("joining", &procs))?;
            joined += 1;
        }
        Ok(joined)
    }

    /// Removes `rel` from every hierarchy, waiting briefly for exiting processes; `busy_ok`
    /// leaves a cgroup that still has children (the shared `/crius`).
    fn remove(&self, rel: &str, busy_ok: bool) -> Result<(), CgroupError> {
        for (mount, _) in self.h.mounts() {
            let dir = mount.join(rel.trim_start_matches('/'));
            let deadline = Instant::now() + REMOVE_WAIT;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // cgroupfs says EBUSY for a cgroup with children, other filesystems
                    // ENOTEMPTY.
                    Err(e)
                        if busy_ok
                            && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
                    {
                        break;
                    }
                    // A process that was just killed leaves its cgroup a moment later.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io_err("removing cgroup", &dir)(e)),
                }
            }
        }
        Ok(())
    }
}

/// Enables the resource controllers for `dir`'s children where it has them (cgroup v2 has
/// them off by default). A controller that cannot be enabled is left off: the limits that
/// need it fail with a clear error when written.
fn enable_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if V2_CONTROLLERS.contains(&c) && !enabled.split_whitespace().any(|e| e == c) {
            if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                debug!(dir = %dir.display(), controller = c, error = %e, "controller not enabled");
            }
        }
    }
}

/// A new v1 cpuset cgroup has no CPUs and no memory nodes, so no process could join it: it
/// gets its parent's (only where it has none).
fn inherit_cpuset(parent: &Path, dir: &Path) {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if std::fs::read_to_string(&own).is_ok_and(|v| v.trim().is_empty()) {
            if let Ok(v) = std::fs::read_to_string(parent.join(file)) {
                if let Err(e) = std::fs::write(&own, v.trim()) {
                    warn!(path = %own.display(), error = %e, "copying the parent's cpuset");
                }
            }
        }
    }
}

impl CgroupManager for CgroupfsManager {
    fn driver(&self) -> Driver {
        Driver::Cgroupfs
    }

    fn hierarchy(&self) -> &Hierarchy {
        &self.h
    }

    fn create_pod(
        &self,
        pod: &PodCgroup,
        resources: &Resources,
        overhead: &Resources,
        pid: Option<i32>,
    ) -> Result<(), CgroupError> {
        // Bad limits are refused before anything is made.
        resources.file_writes(&self.h)?;
        overhead.file_writes(&self.h)?;
        self.make(&pod.parent_dir)?;
        self.apply(&pod.parent_dir, resources)?;
        self.make(&pod.leaf_dir)?;
        self.apply(&pod.leaf_dir, overhead)?;
        if let Some(pid) = pid {
            self.join(&pod.leaf_dir, pid)?;
        }
        Ok(())
    }

    fn join_pod(&self, pod: &PodCgroup, pid: i32, overhead: &Resources) -> Result<(), CgroupError> {
        // Made again when missing: pods created before crius had leaves have none.
        self.make(&pod.leaf_dir)?;
        self.apply(&pod.leaf_dir, overhead)?;
        self.join(&pod.leaf_dir, pid).map(|_| ())
    }

    fn remove_pod(&self, pod: &PodCgroup) -> Result<(), CgroupError> {
        self.remove(&pod.leaf_dir, false)?;
        if pod.owned {
            self.remove(&pod.parent_dir, false)?;
            // /crius itself once no pod is left in it.
            self.remove(CRIUS_CGROUP, true)?;
        }
        Ok(())
    }

    fn update_pod(&self, pod: &PodCgroup, resources: &Resources) -> Result<(), CgroupError> {
        self.apply(&pod.parent_dir, resources)
    }
}

/// systemd owns the cgroup tree: crius asks it for slices and scopes over D-Bus.
#[derive(Debug, Clone)]
pub struct SystemdManager {
    h: Hierarchy,
    bus: Arc<dyn SystemdBus>,
    /// For limits systemd has no property for (hugepages, v1 cpusets, `unified`).
    files: CgroupfsManager,
}

impl SystemdManager {
    pub fn new(h: Hierarchy, bus: Arc<dyn SystemdBus>) -> Self {
        SystemdManager {
            files: CgroupfsManager::new(h.clone()),
            h,
            bus,
        }
    }

    fn v2(&self) -> bool {
        self.h.is_v2_only()
    }

    fn limits(&self, unit: &str, dir: &str, r: &Resources) -> Result<(), CgroupError> {
        if r.is_empty() {
            return Ok(());
        }
        let props = r.systemd_properties(self.v2())?;
        if !props.is_empty() {
            self.bus.set_unit_properties(unit, &props)?;
        }
        self.files.apply(dir, &r.beyond_systemd(self.v2()))
    }

    fn start_leaf(
        &self,
        pod: &PodCgroup,
        pid: i32,
        overhead: &Resources,
    ) -> Result<(), CgroupError> {
        let unit = pod.leaf_unit.as_deref().unwrap_or_default();
        let mut props = vec![
            Property::str(
                "Description",
                format!("crius pod processes of {}", pod.parent),
            ),
            Property::str("Slice", pod.parent.clone()),
            Property::bool("DefaultDependencies", false),
            // crius moves later processes of the pod (its monitor) in by itself.
            Property::bool("Delegate", true),
            Property {
                name: "PIDs",
                value: PropertyValue::Pids(vec![pid as u32]),
            },
        ];
        props.extend(overhead.systemd_properties(self.v2())?);
        self.bus.start_transient_unit(unit, &props)?;
        self.files
            .apply(&pod.leaf_dir, &overhead.beyond_systemd(self.v2()))
    }

    fn leaf_exists(&self, pod: &PodCgroup) -> bool {
        self.h
            .mounts()
            .iter()
            .any(|(m, _)| m.join(pod.leaf_dir.trim_start_matches('/')).is_dir())
    }
}

impl CgroupManager for SystemdManager {
    fn driver(&self) -> Driver {
        Driver::Systemd
    }

    fn hierarchy(&self) -> &Hierarchy {
        &self.h
    }

    fn create_pod(
        &self,
        pod: &PodCgroup,
        resources: &Resources,
        overhead: &Resources,
        pid: Option<i32>,
    ) -> Result<(), CgroupError> {
        let slice = pod.parent_unit.as_deref().unwrap_or_default();
        resources.systemd_properties(self.v2())?;
        overhead.systemd_properties(self.v2())?;
        if pod.owned {
            let mut props = vec![
                Property::str("Description", "crius pod"),
                Property::bool("DefaultDependencies", false),
            ];
            props.extend(resources.systemd_properties(self.v2())?);
            self.bus.start_transient_unit(slice, &props)?;
            self.files
                .apply(&pod.parent_dir, &resources.beyond_systemd(self.v2()))?;
        } else {
            // The kubelet made the slice; its limits are set anew (the same values).
            self.limits(slice, &pod.parent_dir, resources)?;
        }
        match pid {
            Some(pid) => self.start_leaf(pod, pid, overhead),
            None => Ok(()),
        }
    }

    fn join_pod(&self, pod: &PodCgroup, pid: i32, overhead: &Resources) -> Result<(), CgroupError> {
        if self.leaf_exists(pod) {
            // The scope is delegated to crius: joining it is a cgroupfs write.
            self.files.join(&pod.leaf_dir, pid).map(|_| ())
        } else {
            self.start_leaf(pod, pid, overhead)
        }
    }

    fn remove_pod(&self, pod: &PodCgroup) -> Result<(), CgroupError> {
        if let Some(leaf) = &pod.leaf_unit {
            self.bus.stop_unit(leaf)?;
        }
        if pod.owned {
            if let Some(slice) = &pod.parent_unit {
                self.bus.stop_unit(slice)?;
            }
        }
        Ok(())
    }

    fn update_pod(&self, pod: &PodCgroup, resources: &Resources) -> Result<(), CgroupError> {
        let slice = pod.parent_unit.as_deref().unwrap_or_default();
        self.limits(slice, &pod.parent_dir, resources)
    }
}

#[cfg(test)]
mod tests;
