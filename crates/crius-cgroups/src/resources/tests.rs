use std::path::Path;

use crius_error::{ErrorKind, HasKind};

use super::*;

fn v1() -> Hierarchy {
    Hierarchy::v1_at(
        Path::new("/cg"),
        &["cpu", "cpuacct", "cpuset", "memory", "hugetlb", "pids"],
    )
}

fn v2() -> Hierarchy {
    Hierarchy::v2_at(Path::new("/cg"))
}

fn files(r: &Resources, h: &Hierarchy) -> Vec<(String, String)> {
    r.file_writes(h)
        .unwrap()
        .into_iter()
        .map(|w| (w.file, w.value))
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn shares_map_to_weight_exactly_as_runc() {
    // runc: 1 + ((shares-2)*9999)/262142
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(512), 20);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(0), 0);
    // Out-of-range shares are clamped as the kernel clamps them.
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(1 << 40), 10_000);
}

#[test]
fn cpu_on_v1_and_v2() {
    let r = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v1()),
        vec![
            pair("cpu.shares", "512"),
            pair("cpu.cfs_period_us", "100000"),
            pair("cpu.cfs_quota_us", "50000"),
        ]
    );
    assert_eq!(
        files(&r, &v2()),
        vec![pair("cpu.weight", "20"), pair("cpu.max", "50000 100000")]
    );
    let unlimited = Resources {
        cpu_quota: Some(-1),
        ..Default::default()
    };
    assert_eq!(files(&unlimited, &v2()), vec![pair("cpu.max", "max")]);
    assert_eq!(
        files(&unlimited, &v1()),
        vec![pair("cpu.cfs_quota_us", "-1")]
    );
}

#[test]
fn quota_becomes_per_second_rounded_up_to_10ms() {
    let r = Resources {
        cpu_quota: Some(12_345),
        cpu_period: Some(100_000),
        ..Default::default()
    };
    let p = r.systemd_properties(true).unwrap();
    assert_eq!(
        p,
        vec![
            Property::u64("CPUQuotaPeriodUSec", 100_000),
            Property::u64("CPUQuotaPerSecUSec", 130_000),
        ]
    );
    // No period: the default 100 ms; -1 is infinity.
    let r = Resources {
        cpu_quota: Some(50_000),
        ..Default::default()
    };
    assert_eq!(
        r.systemd_properties(false).unwrap(),
        vec![Property::u64("CPUQuotaPerSecUSec", 500_000)]
    );
    let r = Resources {
        cpu_quota: Some(-1),
        ..Default::default()
    };
    assert_eq!(
        r.systemd_properties(true).unwrap(),
        vec![Property::u64("CPUQuotaPerSecUSec", u64::MAX)]
    );
}

#[test]
fn cpusets_are_files_and_bitmasks() {
    let r = Resources {
        cpuset_cpus: Some("0-2,9".into()),
        cpuset_mems: Some("0".into()),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v1()),
        vec![pair("cpuset.cpus", "0-2,9"), pair("cpuset.mems", "0")]
    );
    assert_eq!(
        r.systemd_properties(true).unwrap(),
        vec![
            Property::bytes("AllowedCPUs", vec![0b0000_0111, 0b0000_0010]),
            Property::bytes("AllowedMemoryNodes", vec![1]),
        ]
    );
    // systemd has no cpuset property on v1: left to the files.
    assert!(r.systemd_properties(false).unwrap().is_empty());
    assert_eq!(
        r.beyond_systemd(false).cpuset_cpus.as_deref(),
        Some("0-2,9")
    );
    for bad in ["", "3-1", "a", "0-99999", "1,,x"] {
        let r = Resources {
            cpuset_cpus: Some(bad.into()),
            ..Default::default()
        };
        let e = r.file_writes(&v1()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(e.to_string().contains("cpuset_cpus"), "{e}");
    }
}

#[test]
fn memory_and_swap_v1_memsw_v2_swap_max() {
    let r = Resources {
        memory_limit: Some(100 << 20),
        memory_swap: Some(150 << 20),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v1()),
        vec![
            pair("memory.limit_in_bytes", "104857600"),
            pair("memory.memsw.limit_in_bytes", "157286400"),
        ]
    );
    // v2 counts swap alone.
    assert_eq!(
        files(&r, &v2()),
        vec![
            pair("memory.max", "104857600"),
            pair("memory.swap.max", "52428800")
        ]
    );
    assert_eq!(
        r.systemd_properties(true).unwrap(),
        vec![
            Property::u64("MemoryMax", 100 << 20),
            Property::u64("MemorySwapMax", 50 << 20),
        ]
    );
    assert_eq!(
        r.systemd_properties(false).unwrap(),
        vec![Property::u64("MemoryLimit", 100 << 20)]
    );
    // Unlimited memory, no swap setting: both unlimited.
    let r = Resources {
        memory_limit: Some(-1),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v2()),
        vec![pair("memory.max", "max"), pair("memory.swap.max", "max")]
    );
    // memsw below the memory limit, or without one, is refused naming the field.
    for (mem, swap) in [(Some(100), Some(50)), (None, Some(50))] {
        let r = Resources {
            memory_limit: mem,
            memory_swap: swap,
            ..Default::default()
        };
        let e = r.file_writes(&v2()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("memory_swap_limit_in_bytes"), "{e}");
    }
}

#[test]
fn hugepages_and_pids() {
    let r = Resources {
        hugepages: [("2MB".to_string(), 4 << 20)].into(),
        pids_limit: Some(0),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v1()),
        vec![
            pair("hugetlb.2MB.limit_in_bytes", "4194304"),
            pair("pids.max", "max")
        ]
    );
    let r = Resources {
        hugepages: [("1GB".to_string(), 0)].into(),
        pids_limit: Some(100),
        ..Default::default()
    };
    assert_eq!(
        files(&r, &v2()),
        vec![pair("hugetlb.1GB.max", "0"), pair("pids.max", "100")]
    );
    assert_eq!(
        r.systemd_properties(true).unwrap(),
        vec![Property::u64("TasksMax", 100)]
    );
    let bad = Resources {
        hugepages: [("2XB/../x".to_string(), 1)].into(),
        ..Default::default()
    };
    assert_eq!(
        bad.file_writes(&v2()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn unified_is_v2_only_with_a_clear_error_elsewhere() {
    let r = Resources {
        unified: [("memory.high".to_string(), "1000".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(files(&r, &v2()), vec![pair("memory.high", "1000")]);
    let e = r.file_writes(&v1()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("unified"), "{e}");
    assert!(e.to_string().contains("cgroup v2"), "{e}");
    // Hybrid: v1 controllers beside a v2 mount is not v2.
    let hybrid = Hierarchy::from_mountinfo(
        "26 25 0:23 / /cg/unified rw - cgroup2 cgroup2 rw\n\
         31 25 0:28 / /cg/memory rw - cgroup cgroup rw,memory\n",
    );
    assert!(r.file_writes(&hybrid).is_err());
    for key in ["cgroup.procs", "../memory.max", "memory", "memory.max/x"] {
        let r = Resources {
            unified: [(key.to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let e = r.file_writes(&v2()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{key}");
    }
    let many = Resources {
        unified: (0..=MAX_UNIFIED)
            .map(|i| (format!("memory.x{i}"), "1".to_string()))
            .collect(),
        ..Default::default()
    };
    assert!(many.validate().is_err());
}

#[test]
fn a_limit_for_a_missing_controller_is_refused() {
    let h = Hierarchy::v1_at(Path::new("/cg"), &["cpu", "memory"]);
    let r = Resources {
        pids_limit: Some(10),
        ..Default::default()
    };
    let e = r.file_writes(&h).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("pids"), "{e}");
}
