//! [`SystemdBus`] through `busctl`, systemd's own D-Bus client, on the system bus (or the
//! address given). It needs no D-Bus code in criusd and is present wherever systemd is; the
//! in-process zbus client (feature `zbus`) can replace it behind the same trait.
//!
//! Jobs are waited for by polling the job object until it is gone, then the unit's
//! ActiveState tells whether the start worked.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::debug;

use super::SystemdBus;
use crate::error::CgroupError;
use crate::resources::{Property, PropertyValue};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// A call, and a job, get this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const JOB_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Busctl {
    binary: PathBuf,
    /// `--address=`; `None` is the system bus.
    address: Option<String>,
}

/// What `busctl` said on failure.
struct Failed(String);

impl Busctl {
    /// systemd on the system bus, checked to answer.
    pub fn connect() -> Result<Busctl, CgroupError> {
        Busctl::connect_to(None)
    }

    pub fn connect_to(address: Option<String>) -> Result<Busctl, CgroupError> {
        let b = Busctl {
            binary: PathBuf::from("busctl"),
            address,
        };
        let v = b
            .run(&["get-property", DEST, PATH, MANAGER, "Version"])
            .map_err(|Failed(m)| CgroupError::Systemd {
                op: "asking for the version of",
                unit: "systemd".into(),
                message: m,
            })?;
        debug!(version = %v.trim(), "systemd reachable");
        Ok(b)
    }

    fn run(&self, args: &[&str]) -> Result<String, Failed> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--timeout").arg(CALL_TIMEOUT.as_secs().to_string());
        if let Some(a) = &self.address {
            cmd.arg(format!("--address={a}"));
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failed(format!("running busctl: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn manager(&self, method: &str, signature: &str, args: &[String]) -> Result<String, Failed> {
        let mut all: Vec<&str> = vec!["call", DEST, PATH, MANAGER, method, signature];
        all.extend(args.iter().map(String::as_str));
        self.run(&all)
    }

    fn wait_job(&self, op: &'static str, unit: &str, job: &str) -> Result<(), CgroupError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        // The job object exists until the job is done.
        while self
            .run(&[
                "get-property",
                DEST,
                job,
                "org.freedesktop.systemd1.Job",
                "State",
            ])
            .is_ok()
        {
            if Instant::now() > deadline {
                return Err(CgroupError::Systemd {
                    op,
                    unit: unit.into(),
                    message: format!("job {job} did not finish in {CALL_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(JOB_POLL);
        }
        Ok(())
    }

    /// The unit's ActiveState; `None` when it is not loaded.
    fn active_state(&self, unit: &str) -> Option<String> {
        let path = parse_path(&self.manager("GetUnit", "s", &[unit.to_string()]).ok()?)?;
        let state = self
            .run(&[
                "get-property",
                DEST,
                &path,
                "org.freedesktop.systemd1.Unit",
                "ActiveState",
            ])
            .ok()?;
        parse_string(&state)
    }
}

/// `o "/org/freedesktop/systemd1/job/42"` → the path.
fn parse_path(out: &str) -> Option<String> {
    out.trim()
        .strip_prefix("o ")
        .map(|p| p.trim_matches('"').to_string())
}

/// `s "active"` → `active`.
fn parse_string(out: &str) -> Option<String> {
    out.trim()
        .strip_prefix("s ")
        .map(|p| p.trim_matches('"').to_string())
}

/// busctl's argument form of `a(sv)`: the count, then name, signature and value(s) each.
pub(crate) fn property_args(props: &[Property]) -> Vec<String> {
    let mut out = vec![props.len().to_string()];
    for p in props {
        out.push(p.name.to_string());
        match &p.value {
            PropertyValue::U64(v) => out.extend(["t".into(), v.to_string()]),
            PropertyValue::Bool(v) => out.extend(["b".into(), v.to_string()]),
            PropertyValue::Str(v) => out.extend(["s".into(), v.clone()]),
            PropertyValue::Bytes(v) => {
                out.extend(["ay".into(), v.len().to_string()]);
                out.extend(v.iter().map(u8::to_string));
            }
            PropertyValue::Pids(v) => {
                out.extend(["au".into(), v.len().to_string()]);
                out.extend(v.iter().map(u32::to_string));
            }
        }
    }
    out
}

fn failed(op: &'static str, unit: &str, Failed(message): Failed) -> CgroupError {
    CgroupError::Systemd {
        op,
        unit: unit.into(),
        message,
    }
}

impl SystemdBus for Busctl {
    fn start_transient_unit(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        let mut args = vec![name.to_string(), "replace".to_string()];
        args.extend(property_args(properties));
        args.push("0".into()); // no auxiliary units
        let op = "StartTransientUnit";
        match self.manager(op, "ssa(sv)a(sa(sv))", &args) {
            Ok(out) => {
                let job = parse_path(&out).ok_or_else(|| CgroupError::Systemd {
                    op,
                    unit: name.into(),
                    message: format!("unexpected answer {out:?}"),
                })?;
                self.wait_job(op, name, &job)?;
            }
            // Made by an earlier, interrupted call: fine when it runs (checked below).
            Err(Failed(m)) if m.contains("already exists") => {}
            Err(e) => return Err(failed(op, name, e)),
        }
        match self.active_state(name).as_deref() {
            Some("active" | "activating") => Ok(()),
            state => Err(CgroupError::Systemd {
                op,
                unit: name.into(),
                message: format!("the unit is {state:?} after its start job, not active"),
            }),
        }
    }

    fn set_unit_properties(&self, name: &str, properties: &[Property]) -> Result<(), CgroupError> {
        let mut args = vec![name.to_string(), "true".to_string()];
        args.extend(property_args(properties));
        self.manager("SetUnitProperties", "sba(sv)", &args)
            .map(|_| ())
            .map_err(|e| failed("SetUnitProperties", name, e))
    }

    fn stop_unit(&self, name: &str) -> Result<(), CgroupError> {
        match self.manager("StopUnit", "ss", &[name.to_string(), "replace".to_string()]) {
            Ok(out) => match parse_path(&out) {
                Some(job) => self.wait_job("StopUnit", name, &job),
                None => Ok(()),
            },
            Err(Failed(m)) if m.contains("not loaded") => Ok(()),
            Err(e) => Err(failed("StopUnit", name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_in_busctl_argument_form() {
        let props = vec![
            Property::str("Slice", "kubepods.slice"),
            Property::bool("Delegate", true),
            Property::u64("CPUWeight", 39),
            Property::bytes("AllowedCPUs", vec![7, 2]),
            Property {
                name: "PIDs",
                value: PropertyValue::Pids(vec![42]),
            },
        ];
        assert_eq!(
            property_args(&props),
            [
                "5",
                "Slice",
                "s",
                "kubepods.slice",
                "Delegate",
                "b",
                "true",
                "CPUWeight",
                "t",
                "39",
                "AllowedCPUs",
                "ay",
                "2",
                "7",
                "2",
                "PIDs",
                "au",
                "1",
                "42"
            ]
        );
    }

    #[test]
    fn answers_are_parsed() {
        assert_eq!(
            parse_path("o \"/org/freedesktop/systemd1/job/42\"\n").as_deref(),
            Some("/org/freedesktop/systemd1/job/42")
        );
        assert_eq!(parse_string("s \"active\"\n").as_deref(), Some("active"));
        assert_eq!(parse_path("s \"x\""), None);
    }

    #[test]
    fn an_unreachable_systemd_is_an_error_naming_it() {
        let e = Busctl::connect_to(Some("unix:path=/nonexistent/crius-test".into())).unwrap_err();
        assert!(e.to_string().contains("systemd"), "{e}");
    }
}
