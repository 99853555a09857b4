//! Where a pod's and a container's cgroups are, as each driver names them.
//!
//! cgroupfs: plain paths. A pod without a cgroup_parent gets `/crius/<pod>`; containers are
//! `<parent>/crius-<id>`; the pod's own processes (init, monitor) are in the leaf
//! `<parent>/crius-pod` (cgroup v2 allows no processes in a cgroup whose children have
//! controllers enabled, so they cannot sit in the parent itself).
//!
//! systemd: the parent is a slice (`kubepods-burstable-pod<uid>.slice`, found on disk at
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`), containers are
//! scopes that runc/crun create from `<slice>:crius:<id>`, and the pod's own processes are in
//! the scope `crius-pod-<pod>.scope`. A pod without a cgroup_parent gets
//! `crius-pod<pod>.slice` (under `crius.slice`).

use crate::error::{CgroupError, invalid};

/// Who creates cgroups: crius and the OCI runtime writing cgroupfs directly, or systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cgroupfs parent of pods the kubelet gave no cgroup_parent.
pub const CRIUS_CGROUP: &str = "/crius";
/// The field the kubelet fills; named in errors.
const PARENT_FIELD: &str = "config.linux.cgroup_parent";
/// Longer parents are refused: no real hierarchy is this deep, and the name is an outsider's.
const MAX_PARENT_LEN: usize = 1024;

/// A pod's cgroups as one driver names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub driver: Driver,
    /// As the kubelet gave it (or crius's default): `/kubepods/pod1` or `kubepods-pod1.slice`.
    pub parent: String,
    /// The parent's directory relative to the hierarchy roots, starting with `/`.
    pub parent_dir: String,
    /// crius made the parent (no cgroup_parent was given), so crius removes it with the pod.
    pub owned: bool,
    /// The leaf holding the pod's own processes, relative to the hierarchy roots.
    pub leaf_dir: String,
    /// systemd: the scope unit of that leaf.
    pub leaf_unit: Option<String>,
    /// systemd: the parent slice unit (`kubepods-pod1.slice`).
    pub parent_unit: Option<String>,
}

impl PodCgroup {
    /// The OCI `linux.cgroupsPath` of a container: a path for cgroupfs, `slice:crius:<id>`
    /// for runc's and crun's systemd driver.
    pub fn container_cgroups_path(&self, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/crius-{id}", self.parent_dir.trim_end_matches('/')),
            Driver::Systemd => format!("{}:crius:{id}", self.parent),
        }
    }

    /// The container's cgroup directory relative to the hierarchy roots (where stats are).
    pub fn container_dir(&self, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => self.container_cgroups_path(id),
            Driver::Systemd => {
                format!("{}/crius-{id}.scope", self.parent_dir.trim_end_matches('/'))
            }
        }
    }
}

impl Driver {
    /// The pod's cgroups from its cgroup_parent (empty: crius's default). A parent in the
    /// other driver's form is refused with the fix in the message.
    pub fn pod_cgroup(self, cgroup_parent: &str, pod_id: &str) -> Result<PodCgroup, CgroupError> {
        if pod_id.is_empty() || !pod_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid("pod id", format!("{pod_id:?} is not alphanumeric")));
        }
        let owned = cgroup_parent.is_empty();
        match self {
            Driver::Cgroupfs => {
                let parent = if owned {
                    format!("{CRIUS_CGROUP}/{pod_id}")
                } else {
                    validate_path(cgroup_parent)?
                };
                Ok(PodCgroup {
                    driver: self,
                    leaf_dir: format!("{}/crius-pod", parent.trim_end_matches('/')),
                    parent_dir: parent.clone(),
                    parent,
                    owned,
                    leaf_unit: None,
                    parent_unit: None,
                })
            }
            Driver::Systemd => {
                let parent = if owned {
                    format!("crius-pod{pod_id}.slice")
                } else {
                    validate_slice(cgroup_parent)?;
                    cgroup_parent.to_string()
                };
                let parent_dir = expand_slice(&parent)?;
                let leaf_unit = format!("crius-pod-{pod_id}.scope");
                Ok(PodCgroup {
                    driver: self,
                    leaf_dir: format!("{}/{leaf_unit}", parent_dir.trim_end_matches('/')),
                    parent_dir,
                    parent_unit: Some(parent.clone()),
                    parent,
                    owned,
                    leaf_unit: Some(leaf_unit),
                })
            }
        }
    }
}

fn mismatch(value: &str, form: &str, driver: Driver) -> CgroupError {
    let other = match driver {
        Driver::Cgroupfs => Driver::Systemd,
        Driver::Systemd => Driver::Cgroupfs,
    };
    invalid(
        PARENT_FIELD,
        format!(
            "{value:?} is a {form}, the form of the {other} cgroup driver, but crius uses the {} \
             driver; the kubelet's cgroupDriver and crius's cgroup_driver must match: set \
             cgroupDriver: {} in the kubelet configuration or cgroup_driver = \"{other}\" in \
             crius.toml",
            driver.as_str(),
            driver.as_str(),
        ),
    )
}

fn common_checks(value: &str) -> Result<(), CgroupError> {
    if value.len() > MAX_PARENT_LEN {
        return Err(invalid(
            PARENT_FIELD,
            format!("is {} bytes, more than {MAX_PARENT_LEN}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_control() || c == ':') {
        return Err(invalid(
            PARENT_FIELD,
            format!("{value:?} holds a control character or ':'"),
        ));
    }
    Ok(())
}

/// A cgroupfs parent: a path of plain components (no `.` or `..`), returned with one leading
/// `/` and no trailing one.
pub fn validate_path(value: &str) -> Result<String, CgroupError> {
    common_checks(value)?;
    if !value.contains('/') && value.ends_with(".slice") {
        return Err(mismatch(value, "systemd slice name", Driver::Cgroupfs));
    }
    let parts: Vec<&str> = value.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(invalid(
            PARENT_FIELD,
            format!("{value:?} names the root cgroup"),
        ));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(invalid(
            PARENT_FIELD,
            format!("{value:?} has a '.' or '..' component"),
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A systemd parent: one slice unit name (`kubepods-burstable-pod<uid>.slice`).
pub fn validate_slice(value: &str) -> Result<(), CgroupError> {
    common_checks(value)?;
    if value.contains('/') || !value.ends_with(".slice") {
        return Err(mismatch(value, "cgroupfs path", Driver::Systemd));
    }
    expand_slice(value).map(|_| ())
}

/// A slice's cgroup directory, as systemd lays it out: each `-` opens a level, so
/// `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = |why: &str| {
        invalid(
            PARENT_FIELD,
            format!("{slice:?} is not a valid slice: {why}"),
        )
    };
    let name = slice
        .strip_suffix(".slice")
        .ok_or_else(|| bad("no .slice suffix"))?;
    if slice.contains('/') {
        return Err(bad("it holds a '/'"));
    }
    if name == "-" {
        return Ok("/".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:\\".contains(&b))
    {
        return Err(bad(
            "it holds characters systemd does not allow in unit names",
        ));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return Err(bad("an empty '-' separated part"));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(part);
        path.push_str(".slice");
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_error::{ErrorKind, HasKind};

    #[test]
    fn slices_expand_as_systemd_does() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        );
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in [
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a.scope",
            "a/b.slice",
            ".slice",
        ] {
            assert!(expand_slice(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_pod_and_container_names() {
        let p = Driver::Systemd
            .pod_cgroup("kubepods-besteffort-podab.slice", "f00d")
            .unwrap();
        assert_eq!(
            p.parent_dir,
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice"
        );
        assert_eq!(
            p.container_cgroups_path("c1"),
            "kubepods-besteffort-podab.slice:crius:c1"
        );
        assert_eq!(
            p.container_dir("c1"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice/crius-c1.scope"
        );
        assert_eq!(p.leaf_unit.as_deref(), Some("crius-pod-f00d.scope"));
        assert!(
            p.leaf_dir
                .ends_with("/kubepods-besteffort-podab.slice/crius-pod-f00d.scope")
        );
        assert!(!p.owned);

        let own = Driver::Systemd.pod_cgroup("", "f00d").unwrap();
        assert_eq!(own.parent, "crius-podf00d.slice");
        assert_eq!(own.parent_dir, "/crius.slice/crius-podf00d.slice");
        assert!(own.owned);
    }

    #[test]
    fn cgroupfs_pod_and_container_names() {
        let p = Driver::Cgroupfs
            .pod_cgroup("/kubepods/burstable/pod1/", "f00d")
            .unwrap();
        assert_eq!(p.parent_dir, "/kubepods/burstable/pod1");
        assert_eq!(
            p.container_cgroups_path("c1"),
            "/kubepods/burstable/pod1/crius-c1"
        );
        assert_eq!(p.container_dir("c1"), "/kubepods/burstable/pod1/crius-c1");
        assert_eq!(p.leaf_dir, "/kubepods/burstable/pod1/crius-pod");
        let own = Driver::Cgroupfs.pod_cgroup("", "f00d").unwrap();
        assert_eq!(own.parent_dir, "/crius/f00d");
        assert!(own.owned);
    }

    #[test]
    fn parents_in_the_other_drivers_form_are_refused_naming_both_and_the_fix() {
        let e = Driver::Systemd
            .pod_cgroup("/kubepods/burstable/pod1", "p")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let msg = e.to_string();
        for want in [
            "cgroup_parent",
            "cgroupfs",
            "systemd",
            "cgroupDriver",
            "cgroup_driver",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
        let e = Driver::Cgroupfs
            .pod_cgroup("kubepods-burstable-pod1.slice", "p")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let msg = e.to_string();
        for want in [
            "slice",
            "cgroupfs",
            "systemd",
            "cgroupDriver",
            "cgroup_driver",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn escaping_or_odd_parents_are_refused() {
        for bad in ["/a/../../etc", "..", "/a/./b", "/", "/a\nb", "/a:b"] {
            let e = Driver::Cgroupfs.pod_cgroup(bad, "p").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
        let long = format!("/{}", "a".repeat(MAX_PARENT_LEN));
        assert!(Driver::Cgroupfs.pod_cgroup(&long, "p").is_err());
        assert!(Driver::Systemd.pod_cgroup("../x.slice", "p").is_err());
        assert!(Driver::Cgroupfs.pod_cgroup("", "../p").is_err());
    }
}
