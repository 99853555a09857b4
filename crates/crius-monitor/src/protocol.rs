//! Wire protocol between criusd and a pod's `crius-monitor`.
//!
//! # Encoding (version 1)
//!
//! The transport is a `SOCK_STREAM` Unix socket. The client sends one request per line and
//! reads exactly one response line before sending the next request on the same connection
//! (several connections may be open at once; a slow request such as `exec` only holds up its
//! own connection).
//!
//! A line is a sequence of tokens separated by single spaces and terminated by `\n`:
//!
//! ```text
//! v1 <verb> key=value key=value ...\n
//! ```
//!
//! * The first token is the protocol version, `v1`. A peer answers a line with another version
//!   with `error code=invalid`.
//! * Values are percent-encoded: every byte that is not printable ASCII (`0x21..=0x7e`) and every
//!   `%` is written as `%XX` (two upper-case hex digits). Values are therefore binary-safe
//!   (exec output, non-UTF-8 paths), and never contain spaces or newlines. An empty value is
//!   written `key=`.
//! * Lists repeat the key in order (`arg=sh arg=-c arg=...`). Booleans are `0`/`1`.
//! * Unknown keys are ignored, so fields can be added without a version bump.
//!
//! Requests (`verb`: keys):
//!
//! | verb         | keys                                                                         |
//! |--------------|------------------------------------------------------------------------------|
//! | `create`     | `id bundle runtime root log stdin stdin_once tty exit_dir`                   |
//! | `start`      | `id`                                                                         |
//! | `exec`       | `id arg* env* cwd uid gid gids* tty timeout_ms nnp`                          |
//! | `attach`     | `id stdin stdout stderr` (answered `ok`, then frames: see [`crate::attach`]) |
//! | `stream-exec`| `id arg* env* cwd uid gid gids* tty nnp stdin stdout stderr width height`    |
//! |              | (answered `ok`, then frames as for `attach`, ending with the exit code)       |
//! | `kill`       | `id signal all`                                                              |
//! | `delete`     | `id force`                                                                   |
//! | `reopen-log` | `id`                                                                         |
//! | `state`      | (none)                                                                       |
//! | `shutdown`   | `force`                                                                      |
//!
//! Responses:
//!
//! | verb          | keys                                                                   |
//! |---------------|------------------------------------------------------------------------|
//! | `ok`          | (none)                                                                 |
//! | `created`     | `pid`                                                                  |
//! | `started`     | `at` (unix nanoseconds)                                                |
//! | `exec-result` | `exit_code timed_out stdout stderr`                                    |
//! | `state`       | per container, in order: `id pid status [exit_code] [exited_at]`; an   |
//! |               | `id=` key starts a new container                                        |
//! | `error`       | `code` (`invalid`, `not_found`, `already_exists`, `failed_precondition`, |
//! |               | `runtime`, `internal`) and `message`                                    |
//!
//! Example:
//!
//! ```text
//! > v1 kill id=web signal=9 all=0
//! < v1 ok
//! > v1 exec id=web arg=sh arg=-c arg=echo%20hi cwd=/ uid=0 gid=0 tty=0 timeout_ms=1000
//! < v1 exec-result exit_code=0 timed_out=0 stdout=hi%0A stderr=
//! ```

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The version token every line starts with.
pub const VERSION_TOKEN: &str = "v1";

/// Start a container: run `<runtime> --root <runtime_root> create` for an OCI bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    /// Path of the OCI runtime binary (runc, crun).
    pub runtime: PathBuf,
    /// The runtime's `--root` state directory.
    pub runtime_root: PathBuf,
    /// CRI log file; empty means the output is drained and dropped.
    pub log_path: PathBuf,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// Directory receiving the exit file `<exit_dir>/<id>`.
    pub exit_dir: PathBuf,
    /// Run the runtime with `--systemd-cgroup` (crius's systemd cgroup driver): it then
    /// reads the bundle's cgroupsPath as `slice:prefix:name` and asks systemd for a scope.
    pub systemd_cgroup: bool,
}

/// The user an exec'd process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// ExecSync: run a process in a container and collect its output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub id: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Working directory inside the container; empty means `/`.
    pub cwd: String,
    pub user: User,
    pub tty: bool,
    /// 0 means no timeout.
    pub timeout_ms: u64,
    /// The container's `noNewPrivileges`: an exec must not gain privileges its container
    /// could not (setuid binaries).
    pub no_new_privileges: bool,
}

/// A streaming exec (CRI `Exec`): `<runtime> exec` run by the monitor, its stdio relayed as
/// [`crate::attach`] frames on the request's connection for as long as that connection lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamExecRequest {
    pub id: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Working directory inside the container; empty means `/`.
    pub cwd: String,
    pub user: User,
    /// A terminal: the monitor allocates a pty for the runtime, which gives the process one.
    pub tty: bool,
    pub no_new_privileges: bool,
    /// Which streams the client has; a missing one is `/dev/null` for the process.
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The terminal's size before the process starts (0: unknown).
    pub width: u16,
    pub height: u16,
}

impl StreamExecRequest {
    /// The process as ExecSync would run it (the OCI process object is the same).
    pub fn process(&self) -> ExecRequest {
        ExecRequest {
            id: self.id.clone(),
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            tty: self.tty,
            timeout_ms: 0,
            no_new_privileges: self.no_new_privileges,
        }
    }
}

/// Streaming execs one monitor runs at once (all containers of its pod together); more are
/// refused with `resource_exhausted`.
pub const MAX_STREAM_EXECS: usize = 64;

/// Exec output kept per stream, the rest drained and dropped: the CRI caps each stream at
/// 16 MiB (CVE-2022-1708).
pub const EXEC_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// The OCI runtime of a container the monitor does not own, so that it can still kill and
/// delete it: every OCI runtime command crius runs goes through a pod monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRuntime {
    pub runtime: PathBuf,
    pub root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateRequest),
    Start {
        id: String,
    },
    Exec(ExecRequest),
    /// `foreign`: the container is not this monitor's (a monitor that died left it).
    Kill {
        id: String,
        signal: i32,
        all: bool,
        foreign: Option<ForeignRuntime>,
    },
    /// Run a process in the container; the connection then carries its stdio as
    /// [`crate::attach`] frames, and closing it kills the process.
    StreamExec(StreamExecRequest),
    /// Join the container's stdio; the connection then carries [`crate::attach`] frames.
    Attach {
        id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Delete {
        id: String,
        force: bool,
        foreign: Option<ForeignRuntime>,
    },
    /// `<runtime> update --resources <resources> <id>`: `resources` is a JSON file of OCI
    /// `linux.resources` that criusd wrote.
    Update {
        id: String,
        resources: PathBuf,
    },
    ReopenLog {
        id: String,
    },
    State,
    Shutdown {
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Exited,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Exited => "exited",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"created" => Some(ContainerStatus::Created),
            b"running" => Some(ContainerStatus::Running),
            b"exited" => Some(ContainerStatus::Exited),
            _ => None,
        }
    }
}

/// One container as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub pid: u32,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub exited_at_unix_nanos: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Why a request failed; lets criusd map failures onto CRI status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Invalid,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// The OCI runtime command failed; the message holds its output.
    Runtime,
    /// No space (or quota) left for what the request needed to write.
    ResourceExhausted,
    /// The OCI runtime command did not finish in time and was killed.
    DeadlineExceeded,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Runtime => "runtime",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    fn parse(s: &[u8]) -> Self {
        match s {
            b"invalid" => ErrorCode::Invalid,
            b"not_found" => ErrorCode::NotFound,
            b"already_exists" => ErrorCode::AlreadyExists,
            b"failed_precondition" => ErrorCode::FailedPrecondition,
            b"runtime" => ErrorCode::Runtime,
            b"resource_exhausted" => ErrorCode::ResourceExhausted,
            b"deadline_exceeded" => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::Internal,
        }
    }
}

/// An `error` response, also the payload of the `io::Error` the client returns for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "monitor: {}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for MonitorError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok,
    Created { pid: u32 },
    Started { started_at_unix_nanos: i64 },
    ExecResult(ExecResult),
    State(Vec<ContainerState>),
    Error(MonitorError),
}

/// A line that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol decode error: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Low-level line writer/reader.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `bytes` percent-encoded.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b > b' ' && b < 0x7f && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a percent-encoded value.
pub fn unescape(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            match (
                raw.get(i + 1).and_then(|&b| unhex(b)),
                raw.get(i + 2).and_then(|&b| unhex(b)),
            ) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return err("bad percent escape"),
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Builds one protocol line.
struct LineBuilder {
    buf: Vec<u8>,
}

impl LineBuilder {
    fn new(buf: Vec<u8>, verb: &str) -> Self {
        let mut buf = buf;
        buf.extend_from_slice(VERSION_TOKEN.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(verb.as_bytes());
        LineBuilder { buf }
    }

    fn bytes(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.buf.push(b' ');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(b'=');
        escape_into(&mut self.buf, value);
        self
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.bytes(key, value.as_bytes())
    }

    fn path(&mut self, key: &str, value: &Path) -> &mut Self {
        self.bytes(key, value.as_os_str().as_bytes())
    }

    fn num(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        use std::io::Write;
        self.buf.push(b' ');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(b'=');
        let _ = write!(self.buf, "{value}");
        self
    }

    fn flag(&mut self, key: &str, value: bool) -> &mut Self {
        self.bytes(key, if value { b"1" } else { b"0" })
    }

    /// The process fields `exec` and `stream-exec` share.
    fn process(&mut self, argv: &[String], env: &[String], cwd: &str, user: &User) -> &mut Self {
        for a in argv {
            self.str("arg", a);
        }
        for v in env {
            self.str("env", v);
        }
        self.str("cwd", cwd)
            .num("uid", user.uid)
            .num("gid", user.gid);
        for g in &user.additional_gids {
            self.num("gids", g);
        }
        self
    }

    fn foreign(&mut self, foreign: &Option<ForeignRuntime>) -> &mut Self {
        if let Some(f) = foreign {
            self.path("runtime", &f.runtime).path("root", &f.root);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'\n');
        self.buf
    }
}

/// A parsed line: verb plus raw (still escaped) key/value pairs in order.
struct Fields<'a> {
    verb: &'a [u8],
    pairs: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Fields<'a> {
    fn parse(line: &'a [u8]) -> Result<Self, DecodeError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        match tokens.next() {
            Some(v) if v == VERSION_TOKEN.as_bytes() => {}
            Some(_) => return err("unsupported protocol version"),
            None => return err("empty line"),
        }
        let verb = tokens
            .next()
            .ok_or_else(|| DecodeError("missing verb".into()))?;
        let mut pairs = Vec::new();
        for t in tokens {
            let eq = t.iter().position(|&b| b == b'=');
            match eq {
                Some(i) => pairs.push((&t[..i], &t[i + 1..])),
                None => return err("token without '='"),
            }
        }
        Ok(Fields { verb, pairs })
    }

    fn raw(&self, key: &str) -> Option<&'a [u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| *v)
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>, DecodeError> {
        match self.raw(key) {
            Some(v) => unescape(v),
            None => err(format!("missing key {key}")),
        }
    }

    fn opt_bytes(&self, key: &str) -> Result<Vec<u8>, DecodeError> {
        self.raw(key).map_or(Ok(Vec::new()), unescape)
    }

    fn string(&self, key: &str) -> Result<String, DecodeError> {
        to_string(self.bytes(key)?)
    }

    fn path(&self, key: &str) -> Result<PathBuf, DecodeError> {
        Ok(PathBuf::from(OsString::from_vec(self.opt_bytes(key)?)))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, DecodeError> {
        let v = self.bytes(key)?;
        std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DecodeError(format!("bad number for {key}")))
    }

    /// A number that may be absent (0 then).
    fn opt_num<T: std::str::FromStr + Default>(&self, key: &str) -> Result<T, DecodeError> {
        match self.raw(key) {
            Some(_) => self.num(key),
            None => Ok(T::default()),
        }
    }

    fn user(&self) -> Result<User, DecodeError> {
        Ok(User {
            uid: self.num("uid")?,
            gid: self.num("gid")?,
            additional_gids: self
                .pairs
                .iter()
                .filter(|(k, _)| *k == b"gids")
                .map(|(_, v)| parse_num(v, "gids"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn flag(&self, key: &str) -> bool {
        self.raw(key) == Some(b"1")
    }

    fn foreign(&self) -> Result<Option<ForeignRuntime>, DecodeError> {
        if self.raw("runtime").is_none() {
            return Ok(None);
        }
        Ok(Some(ForeignRuntime {
            runtime: self.path("runtime")?,
            root: self.path("root")?,
        }))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, DecodeError> {
        self.pairs
            .iter()
            .filter(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| to_string(unescape(v)?))
            .collect()
    }
}

fn to_string(v: Vec<u8>) -> Result<String, DecodeError> {
    String::from_utf8(v).map_err(|_| DecodeError("value is not UTF-8".into()))
}

fn parse_num<T: std::str::FromStr>(raw: &[u8], key: &str) -> Result<T, DecodeError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DecodeError(format!("bad number for {key}")))
}

// ---------------------------------------------------------------------------------------------
// Requests.

impl Request {
    /// Encodes the request as one line (with the trailing newline).
    pub fn encode(&self) -> Vec<u8> {
        let buf = Vec::with_capacity(128);
        match self {
            Request::Create(c) => {
                let mut l = LineBuilder::new(buf, "create");
                l.str("id", &c.id)
                    .path("bundle", &c.bundle)
                    .path("runtime", &c.runtime)
                    .path("root", &c.runtime_root)
                    .path("log", &c.log_path)
                    .flag("stdin", c.stdin)
                    .flag("stdin_once", c.stdin_once)
                    .flag("tty", c.tty)
                    .path("exit_dir", &c.exit_dir)
                    .flag("systemd_cgroup", c.systemd_cgroup);
                l.finish()
            }
            Request::Start { id } => {
                let mut l = LineBuilder::new(buf, "start");
                l.str("id", id);
                l.finish()
            }
            Request::Exec(e) => {
                let mut l = LineBuilder::new(buf, "exec");
                l.str("id", &e.id)
                    .process(&e.argv, &e.env, &e.cwd, &e.user)
                    .flag("tty", e.tty)
                    .num("timeout_ms", e.timeout_ms)
                    .flag("nnp", e.no_new_privileges);
                l.finish()
            }
            Request::StreamExec(e) => {
                let mut l = LineBuilder::new(buf, "stream-exec");
                l.str("id", &e.id)
                    .process(&e.argv, &e.env, &e.cwd, &e.user)
                    .flag("tty", e.tty)
                    .flag("nnp", e.no_new_privileges)
                    .flag("stdin", e.stdin)
                    .flag("stdout", e.stdout)
                    .flag("stderr", e.stderr)
                    .num("width", e.width)
                    .num("height", e.height);
                l.finish()
            }
            Request::Kill {
                id,
                signal,
                all,
                foreign,
            } => {
                let mut l = LineBuilder::new(buf, "kill");
                l.str("id", id).num("signal", signal).flag("all", *all);
                l.foreign(foreign);
                l.finish()
            }
            Request::Attach {
                id,
                stdin,
                stdout,
                stderr,
            } => {
                let mut l = LineBuilder::new(buf, "attach");
                l.str("id", id)
                    .flag("stdin", *stdin)
                    .flag("stdout", *stdout)
                    .flag("stderr", *stderr);
                l.finish()
            }
            Request::Delete { id, force, foreign } => {
                let mut l = LineBuilder::new(buf, "delete");
                l.str("id", id).flag("force", *force);
                l.foreign(foreign);
                l.finish()
            }
            Request::Update { id, resources } => {
                let mut l = LineBuilder::new(buf, "update");
                l.str("id", id).path("resources", resources);
                l.finish()
            }
            Request::ReopenLog { id } => {
                let mut l = LineBuilder::new(buf, "reopen-log");
                l.str("id", id);
                l.finish()
            }
            Request::State => LineBuilder::new(buf, "state").finish(),
            Request::Shutdown { force } => {
                let mut l = LineBuilder::new(buf, "shutdown");
                l.flag("force", *force);
                l.finish()
            }
        }
    }

    /// Decodes one request line (the trailing newline is optional).
    pub fn decode(line: &[u8]) -> Result<Request, DecodeError> {
        let f = Fields::parse(line)?;
        Ok(match f.verb {
            b"create" => Request::Create(CreateRequest {
                id: f.string("id")?,
                bundle: f.path("bundle")?,
                runtime: f.path("runtime")?,
                runtime_root: f.path("root")?,
                log_path: f.path("log")?,
                stdin: f.flag("stdin"),
                stdin_once: f.flag("stdin_once"),
                tty: f.flag("tty"),
                exit_dir: f.path("exit_dir")?,
                // Absent (an older criusd) reads as false: cgroupfs, as before.
                systemd_cgroup: f.flag("systemd_cgroup"),
            }),
            b"start" => Request::Start {
                id: f.string("id")?,
            },
            b"exec" => Request::Exec(ExecRequest {
                id: f.string("id")?,
                argv: f.strings("arg")?,
                env: f.strings("env")?,
                cwd: to_string(f.opt_bytes("cwd")?)?,
                user: f.user()?,
                tty: f.flag("tty"),
                timeout_ms: f.num("timeout_ms")?,
                no_new_privileges: f.flag("nnp"),
            }),
            b"stream-exec" => Request::StreamExec(StreamExecRequest {
                id: f.string("id")?,
                argv: f.strings("arg")?,
                env: f.strings("env")?,
                cwd: to_string(f.opt_bytes("cwd")?)?,
                user: f.user()?,
                tty: f.flag("tty"),
                no_new_privileges: f.flag("nnp"),
                stdin: f.flag("stdin"),
                stdout: f.flag("stdout"),
                stderr: f.flag("stderr"),
                width: f.opt_num("width")?,
                height: f.opt_num("height")?,
            }),
            b"kill" => Request::Kill {
                id: f.string("id")?,
                signal: f.num("signal")?,
                all: f.flag("all"),
                foreign: f.foreign()?,
            },
            b"attach" => Request::Attach {
                id: f.string("id")?,
                stdin: f.flag("stdin"),
                stdout: f.flag("stdout"),
                stderr: f.flag("stderr"),
            },
            b"delete" => Request::Delete {
                id: f.string("id")?,
                force: f.flag("force"),
                foreign: f.foreign()?,
            },
            b"update" => Request::Update {
                id: f.string("id")?,
                resources: f.path("resources")?,
            },
            b"reopen-log" => Request::ReopenLog {
                id: f.string("id")?,
            },
            b"state" => Request::State,
            b"shutdown" => Request::Shutdown {
                force: f.flag("force"),
            },
            _ => return err("unknown request verb"),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

impl Response {
    /// Encodes the response as one line (with the trailing newline) appended to `buf`.
    pub fn encode_into(&self, buf: Vec<u8>) -> Vec<u8> {
        match self {
            Response::Ok => LineBuilder::new(buf, "ok").finish(),
            Response::Created { pid } => {
                let mut l = LineBuilder::new(buf, "created");
                l.num("pid", pid);
                l.finish()
            }
            Response::Started {
                started_at_unix_nanos,
            } => {
                let mut l = LineBuilder::new(buf, "started");
                l.num("at", started_at_unix_nanos);
                l.finish()
            }
            Response::ExecResult(r) => {
                let mut buf = buf;
                // Worst case every byte becomes three.
                buf.reserve(64 + 3 * (r.stdout.len() + r.stderr.len()));
                let mut l = LineBuilder::new(buf, "exec-result");
                l.num("exit_code", r.exit_code)
                    .flag("timed_out", r.timed_out)
                    .bytes("stdout", &r.stdout)
                    .bytes("stderr", &r.stderr);
                l.finish()
            }
            Response::State(list) => {
                let mut l = LineBuilder::new(buf, "state");
                for c in list {
                    l.str("id", &c.id)
                        .num("pid", c.pid)
                        .str("status", c.status.as_str());
                    if let Some(code) = c.exit_code {
                        l.num("exit_code", code);
                    }
                    if let Some(at) = c.exited_at_unix_nanos {
                        l.num("exited_at", at);
                    }
                }
                l.finish()
            }
            Response::Error(e) => {
                let mut l = LineBuilder::new(buf, "error");
                l.str("code", e.code.as_str()).str("message", &e.message);
                l.finish()
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_into(Vec::with_capacity(64))
    }

    /// Decodes one response line (the trailing newline is optional).
    pub fn decode(line: &[u8]) -> Result<Response, DecodeError> {
        let f = Fields::parse(line)?;
        Ok(match f.verb {
            b"ok" => Response::Ok,
            b"created" => Response::Created { pid: f.num("pid")? },
            b"started" => Response::Started {
                started_at_unix_nanos: f.num("at")?,
            },
            b"exec-result" => Response::ExecResult(ExecResult {
                exit_code: f.num("exit_code")?,
                stdout: f.opt_bytes("stdout")?,
                stderr: f.opt_bytes("stderr")?,
                timed_out: f.flag("timed_out"),
            }),
            b"state" => Response::State(decode_state(&f)?),
            b"error" => Response::Error(MonitorError {
                code: ErrorCode::parse(&f.opt_bytes("code")?),
                message: String::from_utf8_lossy(&f.opt_bytes("message")?).into_owned(),
            }),
            _ => return err("unknown response verb"),
        })
    }
}

fn decode_state(f: &Fields<'_>) -> Result<Vec<ContainerState>, DecodeError> {
    let mut out: Vec<ContainerState> = Vec::new();
    for &(k, v) in &f.pairs {
        if k == b"id" {
            out.push(ContainerState {
                id: to_string(unescape(v)?)?,
                pid: 0,
                status: ContainerStatus::Created,
                exit_code: None,
                exited_at_unix_nanos: None,
            });
            continue;
        }
        let Some(c) = out.last_mut() else {
            return err("state field before id");
        };
        match k {
            b"pid" => c.pid = parse_num(v, "pid")?,
            b"status" => {
                c.status =
                    ContainerStatus::parse(v).ok_or_else(|| DecodeError("bad status".into()))?
            }
            b"exit_code" => c.exit_code = Some(parse_num(v, "exit_code")?),
            b"exited_at" => c.exited_at_unix_nanos = Some(parse_num(v, "exited_at")?),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_req(r: Request) {
        let line = r.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Request::decode(&line).unwrap(), r);
    }

    fn roundtrip_resp(r: Response) {
        let line = r.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Response::decode(&line).unwrap(), r);
    }

    #[test]
    fn escaping_is_binary_safe() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut enc = Vec::new();
        escape_into(&mut enc, &all);
        assert!(!enc.contains(&b' ') && !enc.contains(&b'\n'));
        assert_eq!(unescape(&enc).unwrap(), all);
        assert!(unescape(b"%4").is_err());
        assert!(unescape(b"%zz").is_err());
    }

    #[test]
    fn a_create_from_an_older_criusd_runs_without_systemd_cgroup() {
        let line = b"v1 create id=c bundle=/b runtime=/r root=/x log= exit_dir=/e\n";
        match Request::decode(line).unwrap() {
            Request::Create(c) => assert!(!c.systemd_cgroup),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_roundtrip() {
        roundtrip_req(Request::Create(CreateRequest {
            id: "c 1".into(),
            bundle: "/run/b%1".into(),
            runtime: "/usr/bin/runc".into(),
            runtime_root: "/run/runc".into(),
            log_path: "".into(),
            stdin: true,
            stdin_once: false,
            tty: true,
            exit_dir: "/run/exits".into(),
            systemd_cgroup: true,
        }));
        roundtrip_req(Request::Start { id: "x".into() });
        roundtrip_req(Request::Exec(ExecRequest {
            id: "x".into(),
            argv: vec!["sh".into(), "-c".into(), "echo 'a b'\n".into(), "".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "".into(),
            user: User {
                uid: 1,
                gid: 2,
                additional_gids: vec![3, 4],
            },
            tty: false,
            timeout_ms: 500,
            no_new_privileges: true,
        }));
        roundtrip_req(Request::Kill {
            id: "x".into(),
            signal: 9,
            all: true,
            foreign: None,
        });
        let foreign = Some(ForeignRuntime {
            runtime: "/usr/bin/runc".into(),
            root: "/run/crius/runtime/runc dir".into(),
        });
        roundtrip_req(Request::Kill {
            id: "x".into(),
            signal: 15,
            all: false,
            foreign: foreign.clone(),
        });
        roundtrip_req(Request::Delete {
            id: "x".into(),
            force: false,
            foreign: None,
        });
        roundtrip_req(Request::Delete {
            id: "x".into(),
            force: true,
            foreign,
        });
        roundtrip_req(Request::Update {
            id: "x".into(),
            resources: "/b/resources.json".into(),
        });
        roundtrip_req(Request::ReopenLog { id: "x".into() });
        roundtrip_req(Request::State);
        roundtrip_req(Request::Attach {
            id: "x".into(),
            stdin: true,
            stdout: false,
            stderr: true,
        });
        roundtrip_req(Request::Shutdown { force: true });
        roundtrip_req(Request::StreamExec(StreamExecRequest {
            id: "x".into(),
            argv: vec!["sh".into(), "-i".into()],
            env: vec!["TERM=xterm".into(), "A=b c".into()],
            cwd: "/w d".into(),
            user: User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
            },
            tty: true,
            no_new_privileges: true,
            stdin: true,
            stdout: true,
            stderr: false,
            width: 123,
            height: 45,
        }));
    }

    #[test]
    fn responses_roundtrip() {
        roundtrip_resp(Response::Ok);
        roundtrip_resp(Response::Created { pid: 42 });
        roundtrip_resp(Response::Started {
            started_at_unix_nanos: 1_700_000_000_123_456_789,
        });
        roundtrip_resp(Response::ExecResult(ExecResult {
            exit_code: -1,
            stdout: (0..=255u8).collect(),
            stderr: vec![],
            timed_out: true,
        }));
        roundtrip_resp(Response::State(vec![]));
        roundtrip_resp(Response::State(vec![
            ContainerState {
                id: "a".into(),
                pid: 10,
                status: ContainerStatus::Running,
                exit_code: None,
                exited_at_unix_nanos: None,
            },
            ContainerState {
                id: "b".into(),
                pid: 11,
                status: ContainerStatus::Exited,
                exit_code: Some(137),
                exited_at_unix_nanos: Some(5),
            },
        ]));
        roundtrip_resp(Response::Error(MonitorError {
            code: ErrorCode::NotFound,
            message: "no such container: x\nmore".into(),
        }));
    }

    #[test]
    fn wire_format_is_stable() {
        let line = Request::Kill {
            id: "web".into(),
            signal: 9,
            all: false,
            foreign: None,
        }
        .encode();
        assert_eq!(line, b"v1 kill id=web signal=9 all=0\n");
        assert_eq!(Response::Ok.encode(), b"v1 ok\n");
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(Request::decode(b"v2 state\n").is_err());
        assert!(Request::decode(b"\n").is_err());
        assert!(Request::decode(b"v1 frobnicate\n").is_err());
        assert!(Request::decode(b"v1 start\n").is_err());
        assert!(Request::decode(b"v1 start id\n").is_err());
        assert!(Response::decode(b"v1 state pid=3\n").is_err());
    }
}
