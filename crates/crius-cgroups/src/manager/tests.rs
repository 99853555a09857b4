use std::fs;
use std::sync::Arc;

use crate::systemd::{Call, RecordingBus};

use super::*;

fn pod(driver: Driver, parent: &str) -> PodCgroup {
    driver.pod_cgroup(parent, "f00d").unwrap()
}

#[test]
fn cgroupfs_v1_creates_the_pod_parent_and_leaf_in_every_hierarchy_with_limits() {
    let root = tempfile::tempdir().unwrap();
    let h = Hierarchy::v1_at(root.path(), &["cpu", "memory"]);
    for c in ["cpu", "memory"] {
        fs::create_dir(root.path().join(c)).unwrap();
    }
    let m = CgroupfsManager::new(h);
    let p = pod(Driver::Cgroupfs, "");
    let resources = Resources {
        cpu_shares: Some(256),
        ..Default::default()
    };
    let overhead = Resources {
        memory_limit: Some(64 << 20),
        ..Default::default()
    };
    m.create_pod(&p, &resources, &overhead, None).unwrap();
    let cpu = root.path().join("cpu/crius/f00d");
    assert_eq!(fs::read_to_string(cpu.join("cpu.shares")).unwrap(), "256");
    assert!(cpu.join("crius-pod").is_dir());
    assert_eq!(
        fs::read_to_string(
            root.path()
                .join("memory/crius/f00d/crius-pod/memory.limit_in_bytes")
        )
        .unwrap(),
        "67108864"
    );

    // Joining writes the pid where the leaf has a cgroup.procs.
    fs::write(cpu.join("crius-pod/cgroup.procs"), "").unwrap();
    m.join_pod(&p, 42, &Resources::default()).unwrap();
    assert_eq!(
        fs::read_to_string(cpu.join("crius-pod/cgroup.procs")).unwrap(),
        "42"
    );
}

#[test]
fn cgroupfs_removal_takes_the_leaf_the_owned_parent_and_an_empty_crius() {
    let root = tempfile::tempdir().unwrap();
    let h = Hierarchy::v2_at(root.path());
    let m = CgroupfsManager::new(h);
    let a = Driver::Cgroupfs.pod_cgroup("", "a").unwrap();
    let b = Driver::Cgroupfs.pod_cgroup("", "b").unwrap();
    m.create_pod(&a, &Resources::default(), &Resources::default(), None)
        .unwrap();
    m.create_pod(&b, &Resources::default(), &Resources::default(), None)
        .unwrap();
    m.remove_pod(&a).unwrap();
    assert!(!root.path().join("crius/a").exists());
    // b still lives under /crius; then it goes too, and /crius with it.
    assert!(root.path().join("crius/b/crius-pod").is_dir());
    m.remove_pod(&b).unwrap();
    assert!(!root.path().join("crius").exists());
    // Gone already is fine.
    m.remove_pod(&b).unwrap();

    // A kubelet's parent is the kubelet's: only crius's leaf goes.
    let k = Driver::Cgroupfs.pod_cgroup("/kubepods/pod1", "c").unwrap();
    m.create_pod(&k, &Resources::default(), &Resources::default(), None)
        .unwrap();
    m.remove_pod(&k).unwrap();
    assert!(root.path().join("kubepods/pod1").is_dir());
    assert!(!root.path().join("kubepods/pod1/crius-pod").exists());
}

#[test]
fn unified_on_a_v1_pod_is_refused_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("memory")).unwrap();
    let m = CgroupfsManager::new(Hierarchy::v1_at(root.path(), &["memory"]));
    let r = Resources {
        unified: [("memory.high".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let e = m
        .create_pod(&pod(Driver::Cgroupfs, ""), &r, &Resources::default(), None)
        .unwrap_err();
    assert!(e.to_string().contains("unified"), "{e}");
    assert!(!root.path().join("memory/crius").exists());
}

#[test]
fn systemd_owned_pod_starts_a_slice_and_a_delegated_scope_then_stops_both() {
    let root = tempfile::tempdir().unwrap();
    let bus = Arc::new(RecordingBus::default());
    let m = SystemdManager::new(Hierarchy::v2_at(root.path()), bus.clone());
    let p = pod(Driver::Systemd, "");
    let resources = Resources {
        cpu_shares: Some(1024),
        memory_limit: Some(1 << 30),
        pids_limit: Some(100),
        ..Default::default()
    };
    m.create_pod(&p, &resources, &Resources::default(), Some(7))
        .unwrap();
    m.remove_pod(&p).unwrap();
    let calls = bus.calls();
    assert_eq!(
        calls[0],
        Call::Start(
            "crius-podf00d.slice".into(),
            vec![
                Property::str("Description", "crius pod"),
                Property::bool("DefaultDependencies", false),
                Property::u64("CPUWeight", 39),
                Property::u64("MemoryMax", 1 << 30),
                Property::u64("TasksMax", 100),
            ]
        )
    );
    let Call::Start(name, props) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!(name, "crius-pod-f00d.scope");
    assert!(props.contains(&Property::str("Slice", "crius-podf00d.slice")));
    assert!(props.contains(&Property::bool("Delegate", true)));
    assert!(props.contains(&Property {
        name: "PIDs",
        value: PropertyValue::Pids(vec![7])
    }));
    assert_eq!(
        &calls[2..],
        &[
            Call::Stop("crius-pod-f00d.scope".into()),
            Call::Stop("crius-podf00d.slice".into())
        ]
    );
}

#[test]
fn systemd_kubelet_slice_gets_properties_set_and_is_not_stopped() {
    let root = tempfile::tempdir().unwrap();
    let bus = Arc::new(RecordingBus::default());
    // Hybrid-like: v1 memory, so MemoryLimit and CPUShares are the names.
    let m = SystemdManager::new(
        Hierarchy::v1_at(root.path(), &["cpu", "memory"]),
        bus.clone(),
    );
    let p = pod(Driver::Systemd, "kubepods-burstable-pod1.slice");
    let r = Resources {
        cpu_shares: Some(512),
        memory_limit: Some(1 << 20),
        ..Default::default()
    };
    m.create_pod(&p, &r, &Resources::default(), None).unwrap();
    // No pid yet: the scope waits for the first process to join.
    m.join_pod(&p, 9, &Resources::default()).unwrap();
    m.remove_pod(&p).unwrap();
    let calls = bus.calls();
    assert_eq!(
        calls[0],
        Call::Set(
            "kubepods-burstable-pod1.slice".into(),
            vec![
                Property::u64("CPUShares", 512),
                Property::u64("MemoryLimit", 1 << 20)
            ]
        )
    );
    assert!(matches!(&calls[1], Call::Start(n, _) if n == "crius-pod-f00d.scope"));
    assert_eq!(calls[2], Call::Stop("crius-pod-f00d.scope".into()));
    assert_eq!(calls.len(), 3);
}

#[test]
fn a_systemd_failure_is_an_error_naming_the_unit() {
    let bus = Arc::new(RecordingBus {
        fail_on: Some("start"),
        ..Default::default()
    });
    let root = tempfile::tempdir().unwrap();
    let m = SystemdManager::new(Hierarchy::v2_at(root.path()), bus);
    let e = m
        .create_pod(
            &pod(Driver::Systemd, ""),
            &Resources::default(),
            &Resources::default(),
            Some(1),
        )
        .unwrap_err();
    assert!(e.to_string().contains("crius-podf00d.slice"), "{e}");
}

#[test]
fn v1_cpuset_levels_without_cpus_get_their_parents() {
    let root = tempfile::tempdir().unwrap();
    let cpuset = root.path().join("cpuset");
    fs::create_dir_all(cpuset.join("kube")).unwrap();
    fs::write(cpuset.join("cpuset.cpus"), "0-3\n").unwrap();
    fs::write(cpuset.join("cpuset.mems"), "0\n").unwrap();
    // A parent someone made without setting its cpuset: no process could join below it.
    fs::write(cpuset.join("kube/cpuset.cpus"), "\n").unwrap();
    fs::write(cpuset.join("kube/cpuset.mems"), "").unwrap();
    let m = CgroupfsManager::new(Hierarchy::v1_at(root.path(), &["cpuset"]));
    let p = Driver::Cgroupfs.pod_cgroup("/kube", "f00d").unwrap();
    m.create_pod(&p, &Resources::default(), &Resources::default(), None)
        .unwrap();
    assert_eq!(
        fs::read_to_string(cpuset.join("kube/cpuset.cpus")).unwrap(),
        "0-3"
    );
    assert_eq!(
        fs::read_to_string(cpuset.join("kube/cpuset.mems")).unwrap(),
        "0"
    );
}
