//! Talking to systemd: the calls the systemd driver makes, behind a trait so a test can
//! record them or make one fail.

use std::fmt::Debug;
use std::sync::Mutex;

mod busctl;
#[cfg(feature = "zbus")]
mod dbus;
pub use busctl::Busctl;
#[cfg(feature = "zbus")]
pub use dbus::DbusSystemd;

use crate::error::CgroupError;
use crate::resources::Property;

/// The systemd manager's D-Bus methods crius uses.
pub trait SystemdBus: Send + Sync + Debug {
    /// `StartTransientUnit(name, "replace", properties, [])`, returning once its job is done;
    /// a unit that exists already is fine.
    fn start_transient_unit(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError>;
    /// `SetUnitProperties(name, runtime = true, properties)`.
    fn set_unit_properties(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError>;
    /// `StopUnit(name, "replace")`, returning once its job is done; a unit that is not
    /// loaded is fine.
    fn stop_unit(&self, name: &str) -> Result<(), CgroupError>;
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(String, Vec<Property>),
    Set(String, Vec<Property>),
    Stop(String),
}

/// A [`SystemdBus`] that records calls, for tests; `fail_on` makes the named method
/// (`"start"`, `"set"`, `"stop"`) fail.
#[derive(Debug, Default)]
pub struct RecordingBus {
    pub calls: Mutex<Vec<Call>>,
    pub fail_on: Option<&'static str>,
}

impl RecordingBus {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, op: &'static str, unit: &str, call: Call) -> Result<(), CgroupError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
        if self.fail_on == Some(op) {
            return Err(CgroupError::Systemd {
                op,
                unit: unit.to_string(),
                message: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl SystemdBus for RecordingBus {
    fn start_transient_unit(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        self.record("start", name, Call::Start(name.into(), properties.to_vec()))
    }
    fn set_unit_properties(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        self.record("set", name, Call::Set(name.into(), properties.to_vec()))
    }
    fn stop_unit(&self, name: &str) -> Result<(), CgroupError> {
        self.record("stop", name, Call::Stop(name.into()))
    }
}
