//! CRI `LinuxContainerResources` → OCI `linux.resources` and `process.oomScoreAdj`.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use super::{SpecError, SpecFeatures, invalid};

const FIELD: &str = "config.linux.resources";

/// Resources of a new container; none requested gives an empty (but present) section, which
/// the caller fills with device rules.
pub(super) fn container_resources(
    r: Option<&LinuxContainerResources>,
    features: SpecFeatures,
) -> Result<LinuxResources, SpecError> {
    match r {
        Some(r) => linux_resources(r, features),
        None => Ok(LinuxResourcesBuilder::default().build()?),
    }
}

/// The OCI form of CRI resources, for a new container or for `UpdateContainerResources`
/// (`runc update`). Zero means "not specified" throughout the CRI, so zeros are left out. A
/// memory limit without a swap limit also caps swap at the limit (containerd does the same),
/// so a container cannot escape its limit into swap.
/// The swap limit is left out when `features.memory_swap` is false.
pub fn linux_resources(
    r: &LinuxContainerResources,
    features: SpecFeatures,
) -> Result<LinuxResources, SpecError> {
    let out = map_resources(r)?;
    Ok(if features.memory_swap {
        out
    } else {
        without_swap(out)
    })
}

fn map_resources(r: &LinuxContainerResources) -> Result<LinuxResources, SpecError> {
    let non_negative = |v: i64, name: &str| -> Result<Option<u64>, SpecError> {
        match v {
            0 => Ok(None),
            v if v < 0 => Err(invalid(
                format!("{FIELD}.{name}"),
                format!("{v} is negative"),
            )),
            v => Ok(Some(v as u64)),
        }
    };

    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(shares) = non_negative(r.cpu_shares, "cpu_shares")? {
        cpu = cpu.shares(shares);
        any_cpu = true;
    }
    if let Some(period) = non_negative(r.cpu_period, "cpu_period")? {
        cpu = cpu.period(period);
        any_cpu = true;
    }
    // -1 is a valid quota: unlimited.
    if r.cpu_quota != 0 {
        if r.cpu_quota < -1 {
            return Err(invalid(
                format!("{FIELD}.cpu_quota"),
                format!("{} is below -1", r.cpu_quota),
            ));
        }
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }

    let mut memory = None;
    let limit = non_negative(r.memory_limit_in_bytes, "memory_limit_in_bytes")?;
    let swap = match r.memory_swap_limit_in_bytes {
        // -1: unlimited swap.
        -1 => Some(-1),
        v => non_negative(v, "memory_swap_limit_in_bytes")?.map(|v| v as i64),
    };
    if limit.is_some() || swap.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(limit) = limit {
            m = m.limit(limit as i64);
        }
        if let Some(s) = swap.or(limit.map(|l| l as i64)) {
            m = m.swap(s);
        }
        memory = Some(m.build()?);
    }

    let mut hugepages = Vec::new();
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        let limit = i64::try_from(h.limit).map_err(|_| {
            invalid(
                format!("{FIELD}.hugepage_limits[{i}].limit"),
                format!("{} is too large", h.limit),
            )
        })?;
        if h.page_size.is_empty() {
            return Err(invalid(
                format!("{FIELD}.hugepage_limits[{i}].page_size"),
                "is empty",
            ));
        }
        hugepages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(limit)
                .build()?,
        );
    }

    let mut out = LinuxResourcesBuilder::default();
    if any_cpu {
        out = out.cpu(cpu.build()?);
    }
    if let Some(memory) = memory {
        out = out.memory(memory);
    }
    if !hugepages.is_empty() {
        out = out.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        out = out.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    Ok(out.build()?)
}

/// Drops the swap limit when the host cannot enforce one (runc and crun fail otherwise).
fn without_swap(mut r: LinuxResources) -> LinuxResources {
    if let Some(mut m) = *r.memory() {
        m.set_swap(None);
        r.set_memory(Some(m));
    }
    r
}

/// The container's `oom_score_adj`, raised to `floor` when lower: a process without
/// `CAP_SYS_RESOURCE` cannot go below its parent's value, and the runtime would fail.
pub(super) fn oom_score_adj(
    r: Option<&LinuxContainerResources>,
    floor: Option<i64>,
) -> Result<Option<i32>, SpecError> {
    let Some(r) = r else {
        return Ok(None);
    };
    let mut v = r.oom_score_adj;
    if !(-1000..=1000).contains(&v) {
        return Err(invalid(
            format!("{FIELD}.oom_score_adj"),
            format!("{v} is outside [-1000, 1000]"),
        ));
    }
    if let Some(floor) = floor {
        v = v.max(floor);
    }
    Ok(Some(v as i32))
}

/// Whether swap limits can be set: cgroup v1 needs `memory.memsw.*` (swapaccount=1), v2 the
/// `memory.swap.max` file in our own cgroup.
pub(super) fn host_has_swap_accounting() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("0::")
                        .map(|p| p.trim_start_matches('/').to_string())
                })
            })
            .unwrap_or_default();
        return root.join(own).join("memory.swap.max").exists();
    }
    root.join("memory/memory.memsw.limit_in_bytes").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_error::{ErrorKind, HasKind};
    use k8s_cri::v1::HugepageLimit;

    #[test]
    fn maps_every_field() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000".to_string())].into(),
            ..Default::default()
        };
        let o = map_resources(&r).unwrap();
        let cpu = o.cpu().as_ref().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = o.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20), "swap defaults to the limit");
        let h = &o.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!((h.page_size().as_str(), h.limit()), ("2MB", 4 << 20));
        assert_eq!(o.unified().as_ref().unwrap()["memory.high"], "1000");
    }

    #[test]
    fn explicit_swap_and_zeros() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        assert_eq!(
            map_resources(&r).unwrap().memory().as_ref().unwrap().swap(),
            Some(300)
        );
        let o = map_resources(&LinuxContainerResources::default()).unwrap();
        assert!(o.cpu().is_none() && o.memory().is_none() && o.unified().is_none());
        let no_swap = SpecFeatures {
            memory_swap: false,
            ..Default::default()
        };
        let o = linux_resources(&r, no_swap).unwrap();
        assert_eq!(o.memory().as_ref().unwrap().swap(), None);
        assert_eq!(o.memory().as_ref().unwrap().limit(), Some(100));
    }

    #[test]
    fn negative_values_name_the_field() {
        let r = LinuxContainerResources {
            cpu_period: -5,
            ..Default::default()
        };
        let err = map_resources(&r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string()
                .starts_with("config.linux.resources.cpu_period:"),
            "{err}"
        );
    }

    #[test]
    fn oom_score_adj_is_clamped_to_the_floor() {
        let r = LinuxContainerResources {
            oom_score_adj: -998,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(Some(&r), None).unwrap(), Some(-998));
        assert_eq!(oom_score_adj(Some(&r), Some(-500)).unwrap(), Some(-500));
        let r = LinuxContainerResources {
            oom_score_adj: 1000,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(Some(&r), Some(-500)).unwrap(), Some(1000));
        assert_eq!(oom_score_adj(None, Some(-500)).unwrap(), None);
        let r = LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        };
        assert!(oom_score_adj(Some(&r), None).is_err());
    }
}
