//! The OCI side of crius: running containers with an OCI runtime CLI (runc, crun) and turning a
//! CRI `CreateContainer` request into an OCI runtime spec (`config.json`).

mod cli;
#[cfg(any(test, feature = "testing"))]
mod fake;
mod runtime;
pub mod spec;

pub use cli::CliRuntime;
#[cfg(any(test, feature = "testing"))]
pub use fake::{FakeCall, FakeRuntime};
pub use runtime::{
    ContainerIo, OciRuntime, RuntimeError, RuntimeFeatures, RuntimeHandlerConfig, RuntimeHandlers,
    RuntimeState, RuntimeStatus, find_default_runtime,
};
pub use spec::{
    ImageConfig, NsSource, PodFiles, PodNamespaces, SpecError, SpecFeatures, SpecInput,
    container_spec, exec_process, linux_resources,
};
