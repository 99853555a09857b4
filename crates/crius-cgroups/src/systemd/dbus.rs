//! Only built with the `zbus` feature (off by default: adding zbus to the default build changed
//! the features of shared dependencies and rebuilt the whole graph, too slow for the machine
//! this was written on; it compiled once then, with two small fixes since, and awaits a run
//! against a real systemd). The default [`SystemdBus`] is [`super::Busctl`].
//!
//! [`SystemdBus`] over D-Bus with zbus: the system bus, or systemd's private socket when no
//! bus daemon runs. Jobs are waited for by polling the job object until it is gone (no
//! signal subscription to leak), then the unit's state tells whether it worked.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::debug;
use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::SystemdBus;
use crate::error::CgroupError;
use crate::resources::{Property, PropertyValue};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPS: &str = "org.freedesktop.DBus.Properties";
/// systemd's private socket, served even without a bus daemon.
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// A call, and a job, get this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const JOB_POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct DbusSystemd {
    conn: Connection,
}

fn err<'a>(op: &'static str, unit: &'a str) -> impl FnOnce(zbus::Error) -> CgroupError + 'a {
    move |e| CgroupError::Systemd {
        op,
        unit: unit.to_string(),
        message: e.to_string(),
    }
}

fn method_error(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

impl DbusSystemd {
    /// Connects to systemd (system bus first, then its private socket) and checks that it
    /// answers.
    pub fn connect() -> Result<DbusSystemd, CgroupError> {
        let bus = Connection::system().and_then(|conn| DbusSystemd::checked(DbusSystemd { conn }));
        match bus {
            Ok(b) => Ok(b),
            Err(e) => {
                debug!(error = %e, "no systemd on the system bus; trying its private socket");
                DbusSystemd::connect_private(Path::new(PRIVATE_SOCKET))
            }
        }
    }

    /// Connects to a systemd private socket (a systemd in a test's namespaces has one too).
    pub fn connect_private(socket: &Path) -> Result<DbusSystemd, CgroupError> {
        let unit = socket.display().to_string();
        let stream = UnixStream::connect(socket).map_err(|e| CgroupError::Systemd {
            op: "connecting to",
            unit: unit.clone(),
            message: e.to_string(),
        })?;
        let conn = zbus::blocking::connection::Builder::unix_stream(stream)
            .p2p()
            .method_timeout(CALL_TIMEOUT)
            .build()
            .map_err(err("connecting to", &unit))?;
        DbusSystemd::checked(DbusSystemd { conn }).map_err(err("asking", &unit))
    }

    fn checked(b: DbusSystemd) -> zbus::Result<DbusSystemd> {
        let v = b.version()?;
        debug!(version = %v, "systemd reachable");
        Ok(b)
    }

    /// systemd's version string (e.g. `252.38-1~deb12u1`).
    pub fn version(&self) -> zbus::Result<String> {
        let reply =
            self.conn
                .call_method(Some(DEST), PATH, Some(PROPS), "Get", &(MANAGER, "Version"))?;
        let v: OwnedValue = reply.body().deserialize()?;
        Ok(String::try_from(v).unwrap_or_default())
    }

    fn manager_call<B>(&self, method: &str, body: &B) -> zbus::Result<OwnedObjectPath>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self
            .conn
            .call_method(Some(DEST), PATH, Some(MANAGER), method, body)?;
        reply.body().deserialize()
    }

    /// Waits until job `path` is gone (finished, whatever its result).
    fn wait_job(
        &self,
        op: &'static str,
        unit: &str,
        job: &OwnedObjectPath,
    ) -> Result<(), CgroupError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let r = self.conn.call_method(
                Some(DEST),
                job.as_str(),
                Some(PROPS),
                "Get",
                &("org.freedesktop.systemd1.Job", "State"),
            );
            match r {
                Ok(_) if Instant::now() < deadline => std::thread::sleep(JOB_POLL),
                Ok(_) => {
                    return Err(CgroupError::Systemd {
                        op,
                        unit: unit.into(),
                        message: format!("job {} did not finish in {CALL_TIMEOUT:?}", job.as_str()),
                    });
                }
                // The job object is gone once the job finished.
                Err(e) if method_error(&e).is_some() => return Ok(()),
                Err(e) => return Err(err(op, unit)(e)),
            }
        }
    }

    /// The unit's ActiveState (`active`, `failed`, ...); `None` when it is not loaded.
    fn active_state(&self, unit: &str) -> Result<Option<String>, CgroupError> {
        let path = match self.manager_call("GetUnit", &(unit,)) {
            Ok(p) => p,
            Err(e) if method_error(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => {
                return Ok(None);
            }
            Err(e) => return Err(err("GetUnit", unit)(e)),
        };
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path.as_str(),
                Some(PROPS),
                "Get",
                &("org.freedesktop.systemd1.Unit", "ActiveState"),
            )
            .map_err(err("reading ActiveState of", unit))?;
        let v: OwnedValue = reply
            .body()
            .deserialize()
            .map_err(err("reading ActiveState of", unit))?;
        Ok(Some(String::try_from(v).unwrap_or_default()))
    }
}

fn value(p: &Property) -> Value<'_> {
    match &p.value {
        PropertyValue::U64(v) => Value::U64(*v),
        PropertyValue::Bool(v) => Value::Bool(*v),
        PropertyValue::Bytes(v) => Value::from(v.clone()),
        PropertyValue::Str(v) => Value::from(v.as_str()),
        PropertyValue::Pids(v) => Value::from(v.clone()),
    }
}

fn props(properties: &[Property]) -> Vec<(&str, Value<'_>)> {
    properties.iter().map(|p| (p.name, value(p))).collect()
}

impl SystemdBus for DbusSystemd {
    fn start_transient_unit(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let job = match self.manager_call(
            "StartTransientUnit",
            &(name, "replace", props(properties), aux),
        ) {
            Ok(job) => job,
            // Made by an earlier, interrupted call: fine when it runs.
            Err(e) if method_error(&e) == Some("org.freedesktop.systemd1.UnitExists") => {
                return match self.active_state(name)?.as_deref() {
                    Some("active" | "activating") => Ok(()),
                    state => Err(CgroupError::Systemd {
                        op: "StartTransientUnit",
                        unit: name.into(),
                        message: format!("exists already in state {state:?}"),
                    }),
                };
            }
            Err(e) => return Err(err("StartTransientUnit", name)(e)),
        };
        self.wait_job("StartTransientUnit", name, &job)?;
        match self.active_state(name)?.as_deref() {
            Some("active" | "activating") => Ok(()),
            state => Err(CgroupError::Systemd {
                op: "StartTransientUnit",
                unit: name.into(),
                message: format!("the unit is {state:?} after its start job, not active"),
            }),
        }
    }

    fn set_unit_properties(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        self.conn
            .call_method(
                Some(DEST),
                PATH,
                Some(MANAGER),
                "SetUnitProperties",
                &(name, true, props(properties)),
            )
            .map(|_| ())
            .map_err(err("SetUnitProperties", name))
    }

    fn stop_unit(&self, name: &str) -> Result<(), CgroupError> {
        match self.manager_call("StopUnit", &(name, "replace")) {
            Ok(job) => self.wait_job("StopUnit", name, &job),
            Err(e) if method_error(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") => Ok(()),
            Err(e) => Err(err("StopUnit", name)(e)),
        }
    }
}
