//! Writing `/proc/sys` knobs.

use std::fs;
use std::path::PathBuf;

use crate::error::{CniError, Result};

/// Set `key` (dotted, e.g. `net.ipv4.ip_forward`) to `value` unless it already has it.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path: PathBuf = format!("/proc/sys/{}", key.replace('.', "/")).into();
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| CniError::io("writing sysctl", &path, e))
}

/// Set a per-interface knob: `net.ipv4.conf.<ifname>.<knob>` (interface names may hold dots).
pub fn set_if(family: &str, ifname: &str, knob: &str, value: &str) -> Result<()> {
    let path: PathBuf = format!("/proc/sys/net/{family}/conf/{ifname}/{knob}").into();
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| CniError::io("writing sysctl", &path, e))
}
