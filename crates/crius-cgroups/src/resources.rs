//! Resource limits and their two spellings: cgroupfs files (v1 or v2, per controller, as the
//! hierarchy has it) and systemd unit properties. The conversions follow runc's, so a limit
//! set by crius on a pod reads the same as one runc set on a container.

use std::collections::BTreeMap;

use crate::Hierarchy;
use crate::error::{CgroupError, invalid};

const FIELD: &str = "resources";
/// Bounds on what an outsider may send: `unified` entries and value sizes, CPU numbers.
const MAX_UNIFIED: usize = 64;
const MAX_VALUE_LEN: usize = 4096;
const MAX_CPU: u32 = 8191;
/// systemd's "no limit" for u64 properties.
const SYSTEMD_INFINITY: u64 = u64::MAX;
/// cgroup v1's `cpu.shares` bounds (the kernel clamps; runc's conversion assumes them).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
/// The CFS period the kernel and runc use when none is given.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// Limits for one cgroup; `None` leaves a limit as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; -1 is unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes; -1 is unlimited.
    pub memory_limit: Option<i64>,
    /// Memory plus swap (cgroup v1's memsw), bytes; -1 is unlimited.
    pub memory_swap: Option<i64>,
    /// Page size (`2MB`, `1GB`) → bytes.
    pub hugepages: BTreeMap<String, u64>,
    /// Tasks; 0 or -1 is unlimited.
    pub pids_limit: Option<i64>,
    /// cgroup v2 files written as given (`memory.high` → `1000`); refused elsewhere.
    pub unified: BTreeMap<String, String>,
}

/// One file to write: `<controller's dir of the cgroup>/<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

/// runc's cgroup v1 `cpu.shares` → v2 `cpu.weight`: [2, 262144] onto [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((s - 2) * 9999) / 262_142
}

/// v1 memsw (memory + swap) → v2 `memory.swap.max` (swap alone), as runc converts it;
/// `None` leaves swap alone.
pub fn swap_v2(memory_swap: Option<i64>, memory: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let (swap, mem) = (memory_swap.unwrap_or(0), memory.unwrap_or(0));
    if mem == -1 && swap == 0 {
        // Unlimited memory with no swap setting: swap unlimited too, as on v1.
        return Ok(Some(-1));
    }
    match swap {
        0 => Ok(None),
        -1 => Ok(Some(-1)),
        s if s < -1 => Err(invalid(
            format!("{FIELD}.memory_swap_limit_in_bytes"),
            format!("{s} is negative"),
        )),
        _ if mem <= 0 => Err(invalid(
            format!("{FIELD}.memory_swap_limit_in_bytes"),
            "a swap limit needs a memory limit",
        )),
        s if s < mem => Err(invalid(
            format!("{FIELD}.memory_swap_limit_in_bytes"),
            format!("{s} is below memory_limit_in_bytes {mem} (it counts memory plus swap)"),
        )),
        s => Ok(Some(s - mem)),
    }
}

/// The CPUs (or memory nodes) of a cpuset list such as `0-3,8`, checked and bounded.
pub fn parse_cpuset(field: &str, list: &str) -> Result<Vec<u32>, CgroupError> {
    let bad = |why: String| invalid(format!("{FIELD}.{field}"), format!("{list:?}: {why}"));
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a number or range")))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a number or range")))?;
        if a > b || b > MAX_CPU {
            return Err(bad(format!("{part:?} is reversed or above {MAX_CPU}")));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad("is empty".into()));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// systemd's `AllowedCPUs` form: a little-endian bitmask, byte 0 holding CPUs 0–7.
pub fn cpuset_bitmask(cpus: &[u32]) -> Vec<u8> {
    let len = cpus.iter().max().map_or(0, |m| *m as usize / 8 + 1);
    let mut out = vec![0u8; len];
    for c in cpus {
        out[*c as usize / 8] |= 1 << (c % 8);
    }
    out
}

/// `2MB`, `1GB`, `64KB`: the page size part of a hugetlb file name.
fn check_page_size(size: &str) -> Result<(), CgroupError> {
    let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &size[digits.len()..];
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !["KB", "MB", "GB"].contains(&unit)
    {
        return Err(invalid(
            format!("{FIELD}.hugepage_limits.page_size"),
            format!("{size:?} is not a page size like 2MB or 1GB"),
        ));
    }
    Ok(())
}

fn check_unified(key: &str, value: &str) -> Result<(), CgroupError> {
    let field = format!("{FIELD}.unified[{key:?}]");
    let Some((controller, file)) = key.split_once('.') else {
        return Err(invalid(field, "is not a <controller>.<file> name"));
    };
    if controller.is_empty()
        || file.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(invalid(field, "is not a <controller>.<file> name"));
    }
    // Membership and delegation files change who is where, not a limit.
    if controller == "cgroup" {
        return Err(invalid(field, "cgroup.* files are not resources"));
    }
    if value.len() > MAX_VALUE_LEN || value.contains('\0') {
        return Err(invalid(
            field,
            format!("the value is over {MAX_VALUE_LEN} bytes or holds NUL"),
        ));
    }
    Ok(())
}

impl Resources {
    /// Checks values that do not depend on the host.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(q) = self.cpu_quota.filter(|q| *q < -1) {
            return Err(invalid(
                format!("{FIELD}.cpu_quota"),
                format!("{q} is below -1"),
            ));
        }
        if let Some(p) = self
            .cpu_period
            .filter(|p| *p != 0 && !(1000..=1_000_000).contains(p))
        {
            return Err(invalid(
                format!("{FIELD}.cpu_period"),
                format!("{p} is outside [1000, 1000000] microseconds"),
            ));
        }
        if let Some(c) = &self.cpuset_cpus {
            parse_cpuset("cpuset_cpus", c)?;
        }
        if let Some(m) = &self.cpuset_mems {
            parse_cpuset("cpuset_mems", m)?;
        }
        if let Some(m) = self.memory_limit.filter(|m| *m < -1) {
            return Err(invalid(
                format!("{FIELD}.memory_limit_in_bytes"),
                format!("{m} is negative"),
            ));
        }
        swap_v2(self.memory_swap, self.memory_limit)?;
        for size in self.hugepages.keys() {
            check_page_size(size)?;
        }
        if self.unified.len() > MAX_UNIFIED {
            return Err(invalid(
                format!("{FIELD}.unified"),
                format!("{} entries, more than {MAX_UNIFIED}", self.unified.len()),
            ));
        }
        for (k, v) in &self.unified {
            check_unified(k, v)?;
        }
        Ok(())
    }

    /// The files that set these limits on `h`: each controller in the version its hierarchy
    /// has (a hybrid host keeps them on v1). `unified` needs a pure cgroup v2 host; a limit
    /// whose controller is not mounted is refused rather than silently dropped.
    pub fn file_writes(&self, h: &Hierarchy) -> Result<Vec<FileWrite>, CgroupError> {
        self.validate()?;
        let mut out = Vec::new();
        let version = |controller: &'static str, field: &str| -> Result<bool, CgroupError> {
            h.dir(controller, "")
                .map(|(_, v2)| v2)
                .ok_or_else(|| CgroupError::Unsupported {
                    field: format!("{FIELD}.{field}"),
                    message: format!(
                        "the {controller} cgroup controller is not mounted on this host"
                    ),
                })
        };
        let mut w = |controller: &'static str, file: &str, value: String| {
            out.push(FileWrite {
                controller,
                file: file.to_string(),
                value,
            })
        };

        if let Some(shares) = self.cpu_shares.filter(|s| *s != 0) {
            if version("cpu", "cpu_shares")? {
                w("cpu", "cpu.weight", shares_to_weight(shares).to_string());
            } else {
                w("cpu", "cpu.shares", shares.to_string());
            }
        }
        let (quota, period) = (self.cpu_quota.unwrap_or(0), self.cpu_period.unwrap_or(0));
        if quota != 0 || period != 0 {
            if version("cpu", "cpu_quota")? {
                let mut v = if quota > 0 {
                    quota.to_string()
                } else {
                    "max".into()
                };
                if period != 0 {
                    v.push_str(&format!(" {period}"));
                }
                w("cpu", "cpu.max", v);
            } else {
                // The period first: a quota is checked against the current one.
                if period != 0 {
                    w("cpu", "cpu.cfs_period_us", period.to_string());
                }
                if quota != 0 {
                    w("cpu", "cpu.cfs_quota_us", quota.to_string());
                }
            }
        }
        for (file, value, field) in [
            ("cpuset.cpus", &self.cpuset_cpus, "cpuset_cpus"),
            ("cpuset.mems", &self.cpuset_mems, "cpuset_mems"),
        ] {
            if let Some(v) = value {
                version("cpuset", field)?;
                w("cpuset", file, v.clone());
            }
        }
        if self.memory_limit.is_some() || self.memory_swap.is_some() {
            if version("memory", "memory_limit_in_bytes")? {
                if let Some(m) = self.memory_limit {
                    w("memory", "memory.max", max_or(m));
                }
                if let Some(s) = swap_v2(self.memory_swap, self.memory_limit)? {
                    w("memory", "memory.swap.max", max_or(s));
                }
            } else {
                if let Some(m) = self.memory_limit {
                    w("memory", "memory.limit_in_bytes", m.to_string());
                }
                if let Some(s) = self.memory_swap {
                    w("memory", "memory.memsw.limit_in_bytes", s.to_string());
                }
            }
        }
        for (size, limit) in &self.hugepages {
            if version("hugetlb", "hugepage_limits")? {
                w("hugetlb", &format!("hugetlb.{size}.max"), limit.to_string());
            } else {
                w(
                    "hugetlb",
                    &format!("hugetlb.{size}.limit_in_bytes"),
                    limit.to_string(),
                );
            }
        }
        if let Some(p) = self.pids_limit {
            version("pids", "pids_limit")?;
            w(
                "pids",
                "pids.max",
                if p > 0 { p.to_string() } else { "max".into() },
            );
        }
        if !self.unified.is_empty() {
            if !h.is_v2_only() {
                return Err(CgroupError::Unsupported {
                    field: format!("{FIELD}.unified"),
                    message: "unified settings are cgroup v2 files, and this host has cgroup \
                              v1 controllers (boot with systemd.unified_cgroup_hierarchy=1)"
                        .into(),
                });
            }
            for (k, v) in &self.unified {
                let controller = controller_of(k);
                w(controller, k, v.clone());
            }
        }
        Ok(out)
    }

    /// The systemd unit properties for these limits (runc's choice of names: CPUShares and
    /// MemoryLimit on v1, CPUWeight, MemoryMax and MemorySwapMax on v2). What systemd has no
    /// property for (hugepages, v1 cpusets, `unified`) is left to [`Resources::file_writes`]
    /// of [`Resources::beyond_systemd`].
    pub fn systemd_properties(&self, v2: bool) -> Result<Vec<Property>, CgroupError> {
        self.validate()?;
        let mut p = Vec::new();
        if let Some(shares) = self.cpu_shares.filter(|s| *s != 0) {
            if v2 {
                p.push(Property::u64("CPUWeight", shares_to_weight(shares)));
            } else {
                p.push(Property::u64("CPUShares", shares));
            }
        }
        let (quota, period) = (self.cpu_quota.unwrap_or(0), self.cpu_period.unwrap_or(0));
        if period != 0 {
            p.push(Property::u64("CPUQuotaPeriodUSec", period));
        }
        if quota != 0 || period != 0 {
            let mut per_sec = SYSTEMD_INFINITY;
            if quota > 0 {
                let period = if period == 0 {
                    DEFAULT_PERIOD_US
                } else {
                    period
                };
                per_sec = quota as u64 * 1_000_000 / period;
                // systemd keeps 10 ms granularity; round up as runc does so no quota becomes 0.
                if per_sec % 10_000 != 0 {
                    per_sec = (per_sec / 10_000 + 1) * 10_000;
                }
            }
            p.push(Property::u64("CPUQuotaPerSecUSec", per_sec));
        }
        if v2 {
            if let Some(c) = &self.cpuset_cpus {
                let cpus = parse_cpuset("cpuset_cpus", c)?;
                p.push(Property::bytes("AllowedCPUs", cpuset_bitmask(&cpus)));
            }
            if let Some(m) = &self.cpuset_mems {
                let mems = parse_cpuset("cpuset_mems", m)?;
                p.push(Property::bytes("AllowedMemoryNodes", cpuset_bitmask(&mems)));
            }
        }
        if let Some(m) = self.memory_limit {
            p.push(Property::u64(
                if v2 { "MemoryMax" } else { "MemoryLimit" },
                limit_or_infinity(m),
            ));
        }
        if v2 {
            if let Some(s) = swap_v2(self.memory_swap, self.memory_limit)? {
                p.push(Property::u64("MemorySwapMax", limit_or_infinity(s)));
            }
        }
        if let Some(t) = self.pids_limit {
            p.push(Property::u64(
                "TasksMax",
                if t > 0 { t as u64 } else { SYSTEMD_INFINITY },
            ));
        }
        Ok(p)
    }

    /// The limits systemd has no property for, to be written as files into the unit's cgroup.
    pub fn beyond_systemd(&self, v2: bool) -> Resources {
        Resources {
            hugepages: self.hugepages.clone(),
            unified: self.unified.clone(),
            cpuset_cpus: self.cpuset_cpus.clone().filter(|_| !v2),
            cpuset_mems: self.cpuset_mems.clone().filter(|_| !v2),
            memory_swap: self.memory_swap.filter(|_| !v2),
            memory_limit: self
                .memory_limit
                .filter(|_| !v2 && self.memory_swap.is_some()),
            ..Resources::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn limit_or_infinity(v: i64) -> u64 {
    if v < 0 { SYSTEMD_INFINITY } else { v as u64 }
}

/// The controller a v2 file belongs to (`memory.high` → memory); unknown ones map to the v2
/// mount through a controller name v1 never has.
fn controller_of(key: &str) -> &'static str {
    match key.split('.').next().unwrap_or_default() {
        "cpu" => "cpu",
        "cpuset" => "cpuset",
        "memory" => "memory",
        "pids" => "pids",
        "hugetlb" => "hugetlb",
        "io" => "io",
        _ => "unified",
    }
}

/// One systemd unit property, in the D-Bus type systemd expects for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: PropertyValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// `t`
    U64(u64),
    /// `b`
    Bool(bool),
    /// `ay`
    Bytes(Vec<u8>),
    /// `s`
    Str(String),
    /// `au`
    Pids(Vec<u32>),
}

impl Property {
    pub fn u64(name: &'static str, v: u64) -> Property {
        Property {
            name,
            value: PropertyValue::U64(v),
        }
    }
    pub fn bool(name: &'static str, v: bool) -> Property {
        Property {
            name,
            value: PropertyValue::Bool(v),
        }
    }
    pub fn bytes(name: &'static str, v: Vec<u8>) -> Property {
        Property {
            name,
            value: PropertyValue::Bytes(v),
        }
    }
    pub fn str(name: &'static str, v: impl Into<String>) -> Property {
        Property {
            name,
            value: PropertyValue::Str(v.into()),
        }
    }
}

#[cfg(test)]
mod tests;
