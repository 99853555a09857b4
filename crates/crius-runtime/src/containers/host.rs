//! What the container manager needs from the host, behind a trait so that lifecycle tests
//! run without root against a fake (and can make any step fail): the pod monitor (started,
//! connected to, and spoken to through [`MonitorConn`]), rootfs mounts, process liveness.

use std::io;
use std::path::Path;

use crius_monitor::{MonitorClient, MonitorConn};

pub trait ContainerHost: Send + Sync {
    /// Connects to the monitor listening on `socket`.
    fn connect_monitor(&self, socket: &Path) -> io::Result<Box<dyn MonitorConn>>;
    /// Starts a pod monitor (detached, so it outlives criusd) that listens on `socket`;
    /// returns its pid.
    fn spawn_monitor(
        &self,
        binary: &Path,
        pod_id: &str,
        dir: &Path,
        socket: &Path,
    ) -> io::Result<u32>;
    /// Whether process `pid` exists and is not a zombie.
    fn alive(&self, pid: u32) -> bool;
    /// Mounts the container's overlay rootfs at `target`.
    fn mount_rootfs(
        &self,
        layers_dir: &Path,
        lower: &[String],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()>;
    /// Unmounts `target`; one that is not mounted (any more) is fine.
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostContainers;

impl ContainerHost for HostContainers {
    fn connect_monitor(&self, socket: &Path) -> io::Result<Box<dyn MonitorConn>> {
        Ok(Box::new(MonitorClient::connect(socket)?))
    }
    fn spawn_monitor(
        &self,
        binary: &Path,
        pod_id: &str,
        dir: &Path,
        socket: &Path,
    ) -> io::Result<u32> {
        crius_monitor::spawn_detached(binary, pod_id, dir, socket)
    }
    fn alive(&self, pid: u32) -> bool {
        crius_proc::alive(pid)
    }
    fn mount_rootfs(
        &self,
        layers_dir: &Path,
        lower: &[String],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> io::Result<()> {
        crate::rootfs::mount_overlay(layers_dir, lower, upper, work, target)
    }
    fn unmount(&self, target: &Path) -> io::Result<()> {
        crate::rootfs::unmount(target)
    }
}
