//! The OCI side of crius: turning a CRI `CreateContainer` request into an OCI runtime spec
//! (`config.json`). The OCI runtime itself (runc, crun) is only ever run by a pod's monitor
//! (crius-monitor), which owns the container's process.

pub mod spec;

pub use spec::{
    ImageConfig, NsSource, PodFiles, PodNamespaces, SpecError, SpecFeatures, SpecInput,
    container_spec, exec_process, linux_resources,
};
