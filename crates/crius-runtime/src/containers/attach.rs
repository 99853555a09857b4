//! What a streaming attach needs: a connection to the monitor that owns the container's
//! stdio. The session itself (the `attach` request and its frames) is criusd's.

use std::os::unix::net::UnixStream;

use super::ContainerManager;
use crate::error::{RuntimeError, io_err};

impl ContainerManager {
    /// A fresh connection to the monitor of running container `id`; returns the container's
    /// full id, its pod's id and the connection.
    pub fn attach_connection(
        &self,
        id: &str,
    ) -> Result<(String, String, UnixStream), RuntimeError> {
        let c = self.running(id)?;
        let stream = self.session_connection(&c.pod_id)?;
        Ok((c.id, c.pod_id, stream))
    }

    /// A connection to pod `pod_id`'s monitor for a streaming session (attach, stream-exec):
    /// no timeout, the session lasts as long as its client.
    pub(super) fn session_connection(&self, pod_id: &str) -> Result<UnixStream, RuntimeError> {
        let pod = self.pods.get(pod_id)?;
        let socket = self.monitor_socket(&pod);
        self.monitor_unbounded(&pod)?
            .cancel_handle()
            .map_err(io_err("connecting to the pod monitor", socket))
    }
}
