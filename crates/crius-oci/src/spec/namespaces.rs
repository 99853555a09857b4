//! The container's namespaces from the pod's.

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::{NsSource, PodNamespaces};

fn ns(typ: LinuxNamespaceType, path: Option<&std::path::Path>) -> LinuxNamespace {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().expect("a namespace always has its type")
}

/// `Path` joins the pinned namespace, `New` asks for a fresh one, `Host` leaves the namespace
/// out so the container stays in the runtime's (the host's). The mount namespace is always new.
pub(super) fn oci_namespaces(p: &PodNamespaces) -> Vec<LinuxNamespace> {
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)];
    for (typ, source) in [
        (LinuxNamespaceType::Network, &p.network),
        (LinuxNamespaceType::Ipc, &p.ipc),
        (LinuxNamespaceType::Uts, &p.uts),
        (LinuxNamespaceType::Pid, &p.pid),
        (LinuxNamespaceType::Cgroup, &p.cgroup),
    ] {
        match source {
            NsSource::Path(path) => out.push(ns(typ, Some(path))),
            NsSource::New => out.push(ns(typ, None)),
            NsSource::Host => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sources_map_to_namespaces() {
        let p = PodNamespaces {
            network: NsSource::Path(PathBuf::from("/run/netns/p1")),
            ipc: NsSource::Host,
            uts: NsSource::Path(PathBuf::from("/run/utsns/p1")),
            pid: NsSource::New,
            cgroup: NsSource::Host,
        };
        let got: Vec<(LinuxNamespaceType, Option<PathBuf>)> = oci_namespaces(&p)
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (LinuxNamespaceType::Mount, None),
                (
                    LinuxNamespaceType::Network,
                    Some(PathBuf::from("/run/netns/p1"))
                ),
                (
                    LinuxNamespaceType::Uts,
                    Some(PathBuf::from("/run/utsns/p1"))
                ),
                (LinuxNamespaceType::Pid, None),
            ]
        );
    }
}
