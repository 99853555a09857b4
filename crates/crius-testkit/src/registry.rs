//! Real registries: the CNCF distribution server (`/usr/bin/docker-registry`) on 127.0.0.1.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A free port on 127.0.0.1 (bound and released; a tiny race is possible, callers retry).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// TLS material and credentials of a [`Registry::start_tls_basic_auth`] registry.
#[derive(Debug, Clone)]
pub struct TlsAuth {
    pub ca_path: PathBuf,
    pub username: String,
    pub password: String,
}

/// A running registry, killed and reaped on drop (its temp dir is removed too).
pub struct Registry {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    tls: Option<TlsAuth>,
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn start_plain() -> Result<Registry> {
        Self::start(None)
    }

    /// HTTPS with a self-signed CA (server cert for 127.0.0.1 and localhost) and htpasswd Basic
    /// auth. Needs the `openssl` and `htpasswd` CLIs.
    pub fn start_tls_basic_auth(user: &str, pass: &str) -> Result<Registry> {
        Self::start(Some((user, pass)))
    }

    fn start(auth: Option<(&str, &str)>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("crius-testkit-registry-")
            .tempdir()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let tls = match auth {
            Some((user, pass)) => Some(make_tls_and_htpasswd(dir.path(), user, pass)?),
            None => None,
        };
        let mut last_err = None;
        for _attempt in 0..5 {
            let port = free_port()?;
            let config = registry_config(dir.path(), port, tls.is_some());
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config)?;
            let log_path = dir.path().join("registry.log");
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)?;
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!("spawning {REGISTRY_BIN} (hack/install-deps.sh installs it)")
                })?;
            let mut child = child;
            match wait_ready(&mut child, port, tls.is_some(), Duration::from_secs(15)) {
                Ok(()) => {
                    return Ok(Registry {
                        child: Some(child),
                        dir,
                        port,
                        tls,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    last_err = Some(anyhow::anyhow!(
                        "registry on port {port} did not start: {e:#}; log {}:\n{tail}",
                        log_path.display()
                    ));
                }
            }
        }
        Err(last_err.unwrap())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
    /// The CA certificate (PEM) to trust; `None` for a plain registry.
    pub fn ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_path.as_path())
    }
    /// A directory with only `ca.crt`, suitable for `skopeo --cert-dir`.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|_| self.dir.path().join("certs.d"))
    }
    /// `(user, password)` for a Basic-auth registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.tls
            .as_ref()
            .map(|t| (t.username.as_str(), t.password.as_str()))
    }
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    /// `<repo>:<tag>` prefixed with the registry address, e.g. `127.0.0.1:5000/test/busybox:v1`.
    pub fn image_ref(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr())
    }

    /// A crius config table making this registry a mirror of `host` (e.g. `docker.io`),
    /// trusting its CA when it has one:
    /// `[registries."docker.io"] mirrors = ["https://127.0.0.1:PORT"] ca_file = "…"`.
    pub fn mirror_toml(&self, host: &str) -> String {
        let mut t = format!("[registries.\"{host}\"]\nmirrors = [\"{}\"]\n", self.url());
        if let Some(ca) = self.ca_path() {
            t.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
        }
        t
    }

    /// A crius config table for pulling from this registry directly by its address
    /// (`127.0.0.1:PORT/repo:tag`): `insecure` for plain HTTP, `ca_file` for TLS.
    pub fn direct_toml(&self) -> String {
        match self.ca_path() {
            Some(ca) => format!(
                "[registries.\"{}\"]\nca_file = \"{}\"\n",
                self.addr(),
                ca.display()
            ),
            None => format!("[registries.\"{}\"]\ninsecure = true\n", self.addr()),
        }
    }

    /// The on-disk `data` file of a blob (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .context("digest must start with sha256:")?;
        let p = self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        if !p.exists() {
            bail!("blob {digest} is not stored at {}", p.display());
        }
        Ok(p)
    }

    /// Flips bytes in the middle of the stored blob (same length, different content), so the
    /// registry serves bytes that do not match the digest.
    pub fn corrupt_blob(&self, digest: &str) -> Result<()> {
        let p = self.blob_path(digest)?;
        let mut f = OpenOptions::new().read(true).write(true).open(&p)?;
        let len = f.metadata()?.len();
        if len == 0 {
            bail!("blob {digest} is empty");
        }
        let at = len / 2;
        let n = (len - at).min(16) as usize;
        let mut buf = vec![0u8; n];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
        for b in &mut buf {
            *b ^= 0xff;
        }
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&buf)?;
        Ok(())
    }

    /// Truncates the stored blob to `new_len` bytes.
    pub fn truncate_blob(&self, digest: &str, new_len: u64) -> Result<()> {
        let p = self.blob_path(digest)?;
        OpenOptions::new().write(true).open(&p)?.set_len(new_len)?;
        Ok(())
    }

    /// Replaces the stored blob's bytes wholesale.
    pub fn overwrite_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        std::fs::write(self.blob_path(digest)?, data)?;
        Ok(())
    }

    /// Tail of the registry log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The registry's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_ready(child: &mut Child, port: u16, tls: bool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("registry exited early: {status}");
        }
        if probe_v2(port, tls).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for GET /v2/");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Plain: `GET /v2/` answers 200. TLS: the port accepts (the TLS listener is up once it does).
fn probe_v2(port: u16, tls: bool) -> Result<bool> {
    let addr = format!("127.0.0.1:{port}");
    let Ok(mut s) = TcpStream::connect(&addr) else {
        return Ok(false);
    };
    if tls {
        return Ok(true);
    }
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(
        format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

fn registry_config(dir: &Path, port: u16, tls: bool) -> String {
    let storage = dir.join("storage");
    // No `cache:` section: no blob descriptor cache, so on-disk corruption is served as is.
    let mut c = format!(
        r#"version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: crius-testkit-secret
"#,
        storage = storage.display()
    );
    if tls {
        c.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
            dir.join("htpasswd").display()
        ));
    }
    c
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn make_tls_and_htpasswd(dir: &Path, user: &str, pass: &str) -> Result<TlsAuth> {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=crius-testkit CA",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt"))
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(
        p("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("server.crt"))
        .arg("-extfile")
        .arg(p("server.ext")))?;
    let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]))?;
    std::fs::write(p("htpasswd"), line)?;
    std::fs::create_dir_all(p("certs.d"))?;
    std::fs::copy(p("ca.crt"), p("certs.d/ca.crt"))?;
    Ok(TlsAuth {
        ca_path: p("ca.crt"),
        username: user.into(),
        password: pass.into(),
    })
}
