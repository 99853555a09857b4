//! Blocking client for the monitor socket. criusd calls it from `spawn_blocking`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{
    ContainerState, CreateRequest, ExecRequest, ExecResult, ForeignRuntime, MonitorError, Request,
    Response,
};

/// One connection to a pod's monitor. Requests on one connection are strictly sequential;
/// open several connections for concurrent requests (e.g. an ExecSync next to a Stop).
pub struct MonitorClient {
    reader: BufReader<UnixStream>,
}

impl MonitorClient {
    pub fn connect(socket_path: &Path) -> io::Result<MonitorClient> {
        let stream = crate::socket::connect(socket_path)?;
        Ok(MonitorClient {
            reader: BufReader::new(stream),
        })
    }
}

/// A connection to a pod monitor: the socket client in production, a fake in lifecycle
/// tests. Only [`MonitorConn::request`] speaks the protocol; the typed calls are built on it.
pub trait MonitorConn: Send {
    /// Sends one request and returns the raw response, `Response::Error` included.
    fn request(&mut self, req: &Request) -> io::Result<Response>;

    /// Read/write timeout for every later request (`None` = wait forever, the default).
    /// An exec request needs at least its own `timeout_ms` plus some slack.
    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// A second handle on the connection: shutting it down makes a pending request fail at
    /// once, and the monitor kills an exec whose connection closed (a cancelled ExecSync).
    fn cancel_handle(&self) -> io::Result<UnixStream>;

    /// Like [`request`](Self::request), but turns `Response::Error` into an `io::Error`
    /// (kind `Other`) whose inner error is the [`MonitorError`].
    fn call(&mut self, req: &Request) -> io::Result<Response> {
        match self.request(req)? {
            Response::Error(e) => Err(io::Error::other(e)),
            r => Ok(r),
        }
    }

    fn create(&mut self, req: &CreateRequest) -> io::Result<u32> {
        match self.call(&Request::Create(req.clone()))? {
            Response::Created { pid } => Ok(pid),
            r => Err(unexpected(r)),
        }
    }

    /// Returns the start time in unix nanoseconds.
    fn start(&mut self, id: &str) -> io::Result<i64> {
        match self.call(&Request::Start { id: id.into() })? {
            Response::Started {
                started_at_unix_nanos,
            } => Ok(started_at_unix_nanos),
            r => Err(unexpected(r)),
        }
    }

    fn exec(&mut self, req: &ExecRequest) -> io::Result<ExecResult> {
        match self.call(&Request::Exec(req.clone()))? {
            Response::ExecResult(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    fn kill(&mut self, id: &str, signal: i32, all: bool) -> io::Result<()> {
        self.expect_ok(&Request::Kill {
            id: id.into(),
            signal,
            all,
            foreign: None,
        })
    }

    fn delete(&mut self, id: &str, force: bool) -> io::Result<()> {
        self.expect_ok(&Request::Delete {
            id: id.into(),
            force,
            foreign: None,
        })
    }

    /// Kills a container this monitor does not own (one a dead monitor left) through its
    /// runtime.
    fn kill_foreign(
        &mut self,
        id: &str,
        signal: i32,
        all: bool,
        runtime: ForeignRuntime,
    ) -> io::Result<()> {
        self.expect_ok(&Request::Kill {
            id: id.into(),
            signal,
            all,
            foreign: Some(runtime),
        })
    }

    /// Deletes a container this monitor does not own through its runtime.
    fn delete_foreign(&mut self, id: &str, runtime: ForeignRuntime) -> io::Result<()> {
        self.expect_ok(&Request::Delete {
            id: id.into(),
            force: true,
            foreign: Some(runtime),
        })
    }

    /// Applies OCI `linux.resources` (a JSON file) to a running container.
    fn update(&mut self, id: &str, resources: &Path) -> io::Result<()> {
        self.expect_ok(&Request::Update {
            id: id.into(),
            resources: resources.to_path_buf(),
        })
    }

    fn reopen_log(&mut self, id: &str) -> io::Result<()> {
        self.expect_ok(&Request::ReopenLog { id: id.into() })
    }

    fn state(&mut self) -> io::Result<Vec<ContainerState>> {
        match self.call(&Request::State)? {
            Response::State(list) => Ok(list),
            r => Err(unexpected(r)),
        }
    }

    /// Asks the monitor to exit once no container is alive (`force`: right away).
    fn shutdown(&mut self, force: bool) -> io::Result<()> {
        self.expect_ok(&Request::Shutdown { force })
    }

    fn expect_ok(&mut self, req: &Request) -> io::Result<()> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }
}

impl MonitorConn for MonitorClient {
    fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let s = self.reader.get_ref();
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)
    }

    fn cancel_handle(&self) -> io::Result<UnixStream> {
        self.reader.get_ref().try_clone()
    }

    fn request(&mut self, req: &Request) -> io::Result<Response> {
        self.reader.get_mut().write_all(&req.encode())?;
        let mut line = Vec::with_capacity(128);
        self.reader.read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed the connection",
            ));
        }
        Response::decode(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The [`MonitorError`] inside an error returned by [`MonitorClient`], if it came from the
/// monitor rather than from the socket.
pub fn monitor_error(err: &io::Error) -> Option<&MonitorError> {
    err.get_ref().and_then(|e| e.downcast_ref::<MonitorError>())
}

fn unexpected(r: Response) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected monitor response: {r:?}"),
    )
}
