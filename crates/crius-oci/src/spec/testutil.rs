//! Fixtures shared by the spec tests.

use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, ContainerMetadata, PodSandboxConfig, PodSandboxMetadata};

use super::{ImageConfig, NsSource, PodFiles, PodNamespaces, SpecFeatures, SpecInput};

/// A rootfs holding only `/etc/passwd` and `/etc/group`.
pub(crate) fn rootfs_with_accounts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\ntty:x:5:\napp:x:1000:\nextra:x:2000:app,other\n",
    )
    .unwrap();
    dir
}

pub(crate) struct Fixture {
    pub rootfs: tempfile::TempDir,
    pub container: ContainerConfig,
    pub sandbox: PodSandboxConfig,
    pub image: ImageConfig,
    pub namespaces: PodNamespaces,
    pub pod_files: PodFiles,
    pub floor: Option<i64>,
    pub features: SpecFeatures,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            rootfs: rootfs_with_accounts(),
            container: ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                command: vec!["/bin/true".into()],
                ..Default::default()
            },
            sandbox: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "uid-1".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            image: ImageConfig::default(),
            namespaces: PodNamespaces {
                network: NsSource::Path(PathBuf::from("/run/netns/p")),
                ipc: NsSource::Path(PathBuf::from("/run/ipcns/p")),
                uts: NsSource::Path(PathBuf::from("/run/utsns/p")),
                pid: NsSource::New,
                cgroup: NsSource::Host,
            },
            pod_files: PodFiles::default(),
            floor: None,
            features: SpecFeatures::default(),
        }
    }

    pub fn input(&self) -> SpecInput<'_> {
        SpecInput {
            container: &self.container,
            sandbox: &self.sandbox,
            sandbox_id: "sb1",
            image: &self.image,
            rootfs: self.rootfs.path(),
            namespaces: self.namespaces.clone(),
            cgroups_path: "/kubepods/pod1/c1".into(),
            pod_files: self.pod_files.clone(),
            hostname: "pod-host".into(),
            oom_score_adj_floor: self.floor,
            features: self.features,
        }
    }
}
