//! The registry HTTP API v2 client: endpoints (mirrors first), authentication, manifests and
//! blobs.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crius_error::{ErrorKind, HasKind};
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tracing::debug;

use crate::auth::Credentials;
use crate::auth::{Challenge, parse_www_authenticate};
use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest::{Descriptor, detect_media_type, media_types, parse_manifest};
use crate::reference::{DEFAULT_REGISTRY, Reference, valid_tag};

/// How to reach one registry host (crius's `[registries."host"]` table, in the spirit of
/// containerd's `hosts.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostOptions {
    /// Endpoints tried in order before the registry itself, e.g. `http://localhost:5000` or
    /// `https://mirror.example/prefix` (a path prefix is put in front of the repository).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this registry (its mirrors carry their own scheme).
    pub insecure: bool,
    /// Accept any TLS certificate (testing only).
    pub skip_verify: bool,
    /// Extra CA bundle (PEM) trusted for this registry and its mirrors.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// When false the registry itself is not tried after its mirrors (air-gapped nodes).
    pub fallback_to_upstream: bool,
    /// Send the pull's credentials to the mirrors too (see crius-config's documentation).
    pub mirror_credentials: bool,
    /// Token services (hosts) besides the registry itself that may receive the credentials.
    pub token_realms: Vec<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            mirrors: Vec::new(),
            insecure: false,
            skip_verify: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
            fallback_to_upstream: true,
            mirror_credentials: false,
            token_realms: Vec::new(),
        }
    }
}

/// Manifests are small JSON documents; anything bigger is a broken or hostile registry.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Limit of [`Repository::get_blob_bytes`] (image configs).
pub const MAX_BLOB_BYTES_SIZE: u64 = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-request limit for manifests and tokens (small documents). Blobs have none: a big layer
/// on a slow link may take hours while still moving; the caller applies an idle timeout.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error body we read to explain a failure.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Token lifetime when the token service does not say (distribution's documented default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// Docker Hub's token service, on another host than its registry.
const DOCKER_HUB_TOKEN_HOST: &str = "auth.docker.io";
const USER_AGENT: &str = concat!("crius/", env!("CARGO_PKG_VERSION"));

pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

/// A blob being downloaded: the body as a stream, and its length when the server said.
pub struct Blob {
    pub size: Option<u64>,
    pub stream: BlobStream,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The effective media type (the document's own when the Content-Type was generic).
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
    pub bytes: Bytes,
}

/// The TLS settings that call for a distinct HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct TlsSetup {
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    skip_verify: bool,
}

#[derive(Debug)]
struct HostEntry {
    /// (origin, path prefix, may receive credentials) of each mirror.
    mirrors: Vec<(String, String, bool)>,
    insecure: bool,
    /// TLS settings are configured for it (a CA, a client certificate, skip_verify): it
    /// speaks HTTPS even on a loopback address.
    tls: bool,
    fallback_to_upstream: bool,
    /// Token hosts besides the registry's own that may receive credentials.
    token_realms: Vec<String>,
    http: reqwest::Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    endpoint: String,
    scope: String,
    /// sha256 of the credentials, so that pulls with different credentials never share a token.
    creds: String,
}

struct Inner {
    hosts: BTreeMap<String, HostEntry>,
    default_http: reqwest::Client,
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
    /// Hosts (`host` or `host:port`, lower case) foreign layer urls may be fetched from.
    foreign_hosts: Vec<String>,
    /// Tests only: let foreign urls reach loopback (the test servers live there).
    foreign_loopback: bool,
}

/// The registry client; cheap to clone. Built once from the registries configuration.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hosts", &self.inner.hosts.keys())
            .finish_non_exhaustive()
    }
}

fn config_error(host: &str, reason: String) -> RegistryError {
    RegistryError::Config {
        host: host.to_string(),
        reason,
    }
}

fn build_http(tls: &TlsSetup, host: &str) -> Result<reqwest::Client, RegistryError> {
    // No overall timeout here (see SMALL_REQUEST_TIMEOUT).
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| config_error(host, format!("reading ca_file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| config_error(host, format!("ca_file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(config_error(
                host,
                format!("ca_file {}: no PEM certificate found", ca.display()),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).map_err(|e| {
                config_error(host, format!("reading client_cert {}: {e}", cert.display()))
            })?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| {
                config_error(host, format!("reading client_key {}: {e}", key.display()))
            })?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                config_error(
                    host,
                    format!(
                        "client_cert {} / client_key {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                )
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(config_error(
                host,
                "client_cert and client_key must be set together".into(),
            ));
        }
    }
    if tls.skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| config_error(host, format!("building HTTP client: {}", error_chain(&e))))
}

/// A mirror url: `scheme://host[:port][/prefix]` -> (origin, "/prefix" or "").
fn parse_mirror(host: &str, mirror: &str) -> Result<(String, String), RegistryError> {
    let bad = |why: &str| config_error(host, format!("mirror {mirror:?}: {why}"));
    let url = Url::parse(mirror).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must be scheme://host[:port][/path]"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the url are not supported"));
    }
    let prefix = url.path().trim_end_matches('/').to_string();
    Ok((url.origin().ascii_serialization(), prefix))
}

/// Whether a token service at `realm` (named by the registry's challenge, so by whoever answers
/// at `ep`) may receive the credentials meant for `ep`: over HTTPS on the same host or a host
/// configured in `token_realms`; over plain HTTP only when `ep` itself is plain HTTP on that
/// same host (the credentials travel in clear text there anyway).
fn realm_may_get_credentials(ep: &Endpoint, realm: &Url) -> bool {
    let Ok(origin) = Url::parse(&ep.origin) else {
        return false;
    };
    let realm_host = realm.host_str().unwrap_or("").to_ascii_lowercase();
    let same_host = origin
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(&realm_host));
    match realm.scheme() {
        "https" => {
            same_host
                || ep.token_realms.iter().any(|h| {
                    *h == realm_host
                        || realm
                            .port()
                            .is_some_and(|p| *h == format!("{realm_host}:{p}"))
                })
        }
        "http" => same_host && origin.scheme() == "http",
        _ => false,
    }
}

/// Addresses an image-chosen url must never reach: this host, link-local (cloud metadata at
/// 169.254.169.254), unspecified.
fn is_internal(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// containerd speaks plain HTTP to loopback registries without being told.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    pub fn new(hosts: &BTreeMap<String, HostOptions>) -> Result<Client, RegistryError> {
        let default_tls = TlsSetup::default();
        let default_http = build_http(&default_tls, "default")?;
        let mut clients = HashMap::from([(default_tls, default_http.clone())]);
        let mut entries = BTreeMap::new();
        for (host, cfg) in hosts {
            let tls = TlsSetup {
                ca_file: cfg.ca_file.clone(),
                client_cert: cfg.client_cert.clone(),
                client_key: cfg.client_key.clone(),
                skip_verify: cfg.skip_verify,
            };
            let http = match clients.get(&tls) {
                Some(c) => c.clone(),
                None => {
                    let c = build_http(&tls, host)?;
                    clients.insert(tls, c.clone());
                    c
                }
            };
            let mirrors = cfg
                .mirrors
                .iter()
                .map(|m| {
                    let (origin, prefix) = parse_mirror(host, m)?;
                    // Credentials cross to a mirror only when configured, and in clear text
                    // only to a mirror whose own table declares it insecure.
                    let creds = cfg.mirror_credentials
                        && (origin.starts_with("https://")
                            || hosts
                                .get(origin.trim_start_matches("http://"))
                                .is_some_and(|c| c.insecure));
                    Ok((origin, prefix, creds))
                })
                .collect::<Result<Vec<_>, RegistryError>>()?;
            let mut key = host.to_ascii_lowercase();
            if key == "index.docker.io" {
                key = DEFAULT_REGISTRY.to_string();
            }
            entries.insert(
                key,
                HostEntry {
                    mirrors,
                    insecure: cfg.insecure,
                    tls: cfg.ca_file.is_some() || cfg.client_cert.is_some() || cfg.skip_verify,
                    fallback_to_upstream: cfg.fallback_to_upstream,
                    token_realms: cfg
                        .token_realms
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    http,
                },
            );
        }
        Ok(Client {
            inner: Arc::new(Inner {
                hosts: entries,
                default_http,
                tokens: Mutex::new(HashMap::new()),
                foreign_hosts: Vec::new(),
                foreign_loopback: false,
            }),
        })
    }

    /// Allows fetching foreign (non-distributable) layers from these hosts (`host` or
    /// `host:port`); by default none is allowed, so an image cannot make crius send a request
    /// anywhere but its registry. Call before the client is cloned.
    pub fn with_foreign_layer_hosts(mut self, hosts: &[String]) -> Result<Client, RegistryError> {
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| {
            config_error(
                "foreign_layer_hosts",
                "set after the client was shared".into(),
            )
        })?;
        inner.foreign_hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        Ok(self)
    }

    #[cfg(test)]
    pub(crate) fn allow_foreign_loopback(mut self) -> Client {
        Arc::get_mut(&mut self.inner)
            .expect("not shared yet")
            .foreign_loopback = true;
        self
    }

    /// The repository of `reference` on its endpoints, authenticating with `creds`.
    pub fn repository(&self, reference: &Reference, creds: Option<Credentials>) -> Repository {
        let key = reference.registry.to_ascii_lowercase();
        let entry = self.inner.hosts.get(&key);
        let http = entry.map_or_else(|| self.inner.default_http.clone(), |e| e.http.clone());
        let mut endpoints: Vec<Endpoint> = entry
            .map(|e| {
                e.mirrors
                    .iter()
                    .map(|(origin, prefix, creds)| Endpoint {
                        origin: origin.clone(),
                        prefix: prefix.clone(),
                        http: http.clone(),
                        ns: Some(key.clone()),
                        creds: *creds,
                        token_realms: e.token_realms.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Without mirrors there is nothing else to try, whatever fallback_to_upstream says.
        if entry.is_none_or(|e| e.fallback_to_upstream || e.mirrors.is_empty()) {
            let scheme = if entry.is_some_and(|e| e.insecure)
                || (is_loopback(&key) && !entry.is_some_and(|e| e.tls))
            {
                "http"
            } else {
                "https"
            };
            let authority = if key == DEFAULT_REGISTRY {
                DOCKER_HUB_ENDPOINT
            } else {
                key.as_str()
            };
            let mut token_realms = entry.map(|e| e.token_realms.clone()).unwrap_or_default();
            if key == DEFAULT_REGISTRY {
                token_realms.push(DOCKER_HUB_TOKEN_HOST.into());
            }
            endpoints.push(Endpoint {
                origin: format!("{scheme}://{authority}"),
                prefix: String::new(),
                http,
                ns: None,
                creds: true,
                token_realms,
            });
        }
        let creds_id = creds
            .as_ref()
            .map(|c| Digest::sha256_of(format!("{c:?}{}", secret(c)).as_bytes()).to_string());
        Repository {
            inner: Arc::new(RepoInner {
                client: self.inner.clone(),
                name: reference.name(),
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                endpoints,
                creds,
                creds_id: creds_id.unwrap_or_default(),
                preferred: Mutex::new(None),
                challenges: Mutex::new(HashMap::new()),
            }),
        }
    }
}

fn secret(c: &Credentials) -> &str {
    match c {
        Credentials::Basic { password, .. } => password,
        Credentials::IdentityToken(t) | Credentials::RegistryToken(t) => t,
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    /// `scheme://host[:port]`.
    origin: String,
    /// "" or "/prefix" (mirrors only): put in front of the repository.
    prefix: String,
    http: reqwest::Client,
    /// For mirrors, the registry they stand in for, sent as `?ns=` like containerd does so
    /// that one cache can serve several upstreams.
    ns: Option<String>,
    /// Whether the pull's credentials may be sent here.
    creds: bool,
    /// Token hosts besides this endpoint's own that may receive the credentials.
    token_realms: Vec<String>,
}

impl Endpoint {
    /// The repository as this endpoint names it.
    fn repo_path(&self, repository: &str) -> String {
        format!("{}/{repository}", self.prefix.trim_start_matches('/'))
            .trim_start_matches('/')
            .to_string()
    }

    fn url(&self, repository: &str, kind: &str, reference: &str) -> String {
        let mut url = format!(
            "{}/v2/{}/{kind}/{reference}",
            self.origin,
            self.repo_path(repository)
        );
        if let Some(ns) = &self.ns {
            let ns = ns
                .replace(':', "%3A")
                .replace('[', "%5B")
                .replace(']', "%5D");
            url.push_str(&format!("?ns={ns}"));
        }
        url
    }

    fn display(&self) -> String {
        format!("{}{}", self.origin, self.prefix)
    }
}

struct RepoInner {
    client: Arc<Inner>,
    /// `registry/repository`, for messages.
    name: String,
    registry: String,
    repository: String,
    endpoints: Vec<Endpoint>,
    creds: Option<Credentials>,
    creds_id: String,
    /// The endpoint that answered the manifest request; blobs are asked there first.
    preferred: Mutex<Option<usize>>,
    /// The last challenge of each endpoint (by origin), answered up front on later requests.
    challenges: Mutex<HashMap<String, Challenge>>,
}

/// One repository on its endpoints (mirrors first). Cheap to clone; clones share the
/// remembered endpoint and challenges.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<RepoInner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let eps: Vec<String> = self.inner.endpoints.iter().map(Endpoint::display).collect();
        f.debug_struct("Repository")
            .field("name", &self.inner.name)
            .field("endpoints", &eps)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Renders an error with its sources: reqwest's own message alone ("error sending request")
/// hides the cause (connection refused, certificate unknown, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Reads at most `limit` bytes of a body; `None` if it is longer.
async fn read_limited(
    resp: reqwest::Response,
    limit: u64,
) -> Result<Option<Bytes>, reqwest::Error> {
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// The gist of an error body: distribution's `{"errors":[{code,message}]}`, a token service's
/// `{"details"}` / OAuth2 `{"error","error_description"}`, or the start of the text.
async fn error_message(resp: reqwest::Response) -> String {
    let body = match read_limited(resp, ERROR_BODY_LIMIT as u64).await {
        Ok(Some(b)) => b,
        _ => return "no readable body".into(),
    };
    describe_error_body(&body)
}

fn describe_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Body {
        errors: Option<Vec<Item>>,
        details: Option<String>,
        error: Option<String>,
        error_description: Option<String>,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        if let Some(errors) = b.errors.filter(|e| !e.is_empty()) {
            return errors
                .iter()
                .map(|e| match (&e.code, &e.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => "unknown error".into(),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        if let Some(d) = b.details {
            return d;
        }
        if let Some(e) = b.error {
            return match b.error_description {
                Some(d) => format!("{e}: {d}"),
                None => e,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "empty body".into()
    } else {
        text.chars().take(200).collect()
    }
}

fn is_not_found_code(msg: &str) -> bool {
    ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"]
        .iter()
        .any(|c| msg.starts_with(c))
}

impl Repository {
    /// `registry/repository`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// By tag or digest; verifies the digest when asked by digest; returns the digest.
    pub async fn get_manifest(
        &self,
        tag_or_digest: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let r = &self.inner;
        let by_digest = if tag_or_digest.contains(':') {
            Some(Digest::parse(tag_or_digest)?)
        } else {
            if !valid_tag(tag_or_digest) {
                return Err(RegistryError::InvalidReference {
                    input: format!("{}:{tag_or_digest}", r.name),
                    reason: "invalid tag format".into(),
                });
            }
            None
        };
        let reference = match &by_digest {
            Some(d) => format!("{}@{d}", r.name),
            None => format!("{}:{tag_or_digest}", r.name),
        };
        // Like containerd: try every endpoint; report the first error that is not "not found"
        // (it says more, e.g. that a mirror is down), else "not found".
        let mut first_err = None;
        let mut not_found = None;
        for (i, ep) in r.endpoints.iter().enumerate() {
            match self
                .manifest_from(ep, tag_or_digest, by_digest.as_ref(), &reference)
                .await
            {
                Ok(m) => {
                    debug!(registry = %r.registry, repository = %r.repository, endpoint = %ep.display(),
                        digest = %m.digest, media_type = %m.media_type, "fetched manifest");
                    *r.preferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    return Ok(m);
                }
                Err(e) => {
                    debug!(registry = %r.registry, repository = %r.repository, endpoint = %ep.display(),
                        error = %e, "manifest fetch failed");
                    if e.kind() == ErrorKind::NotFound {
                        not_found.get_or_insert(e);
                    } else {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Err(first_err
            .or(not_found)
            .unwrap_or_else(|| RegistryError::NotFound {
                reference,
                url: String::new(),
                message: "no endpoint configured".into(),
            }))
    }

    async fn manifest_from(
        &self,
        ep: &Endpoint,
        tag_or_digest: &str,
        by_digest: Option<&Digest>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = ep.url(&self.inner.repository, "manifests", tag_or_digest);
        let resp = self
            .send(
                ep,
                &url,
                Some(media_types::MANIFEST_ACCEPT),
                Some(SMALL_REQUEST_TIMEOUT),
                reference,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, &url, reference, resp).await);
        }
        let too_large = || RegistryError::TooLarge {
            reference: reference.to_string(),
            url: url.clone(),
            what: "manifest".into(),
            limit: MAX_MANIFEST_SIZE,
        };
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST_SIZE) {
            return Err(too_large());
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let header_digest = header("docker-content-digest");
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE)
            .await
            .map_err(|e| self.unavailable(ep, reference, &e))?
            .ok_or_else(too_large)?;
        let mismatch = |expected: Digest, actual: Digest| RegistryError::DigestMismatch {
            reference: reference.to_string(),
            url: url.clone(),
            expected,
            actual,
        };
        let digest = match by_digest {
            Some(want) => {
                let got = Digest::of(want.algorithm(), &bytes);
                if &got != want {
                    return Err(mismatch(want.clone(), got));
                }
                got
            }
            None => {
                // The header is only a claim; it must match what we actually received.
                if let Some(h) = header_digest
                    .as_deref()
                    .and_then(|h| Digest::parse(h.trim()).ok())
                {
                    let got = Digest::of(h.algorithm(), &bytes);
                    if got != h {
                        return Err(mismatch(h, got));
                    }
                }
                Digest::of(Algorithm::Sha256, &bytes)
            }
        };
        let media_type = detect_media_type(&content_type, &bytes);
        parse_manifest(&media_type, &bytes).map_err(|e| e.for_reference(reference))?;
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// Streams a blob; the caller verifies digest and size. Foreign layers fall back to urls.
    /// The stream fails if the body grows past `desc.size`.
    pub async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, RegistryError> {
        Ok(self.open_blob(desc).await?.stream)
    }

    /// Like [`Repository::get_blob`], also giving the Content-Length when known.
    pub async fn open_blob(&self, desc: &Descriptor) -> Result<Blob, RegistryError> {
        let r = &self.inner;
        let reference = format!("{}@{}", r.name, desc.digest);
        let preferred = *r.preferred.lock().unwrap_or_else(|e| e.into_inner());
        let order = preferred
            .into_iter()
            .chain((0..r.endpoints.len()).filter(|i| Some(*i) != preferred));
        let mut first_err = None;
        let mut not_found = None;
        for i in order {
            let ep = &r.endpoints[i];
            let url = ep.url(&r.repository, "blobs", &desc.digest.to_string());
            match self.blob_from(ep, &url, desc, &reference).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    debug!(registry = %r.registry, repository = %r.repository, endpoint = %ep.display(),
                        digest = %desc.digest, error = %e, "blob fetch failed");
                    match e.kind() {
                        ErrorKind::NotFound => {
                            not_found.get_or_insert(e);
                        }
                        ErrorKind::Unavailable => {
                            first_err.get_or_insert(e);
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        // Non-distributable layers may live only at their urls (e.g. Windows base layers).
        if first_err.is_none() {
            for u in desc
                .urls
                .iter()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            {
                match self.foreign_blob(u, desc, &reference).await {
                    Ok(b) => return Ok(b),
                    Err(e) => {
                        debug!(registry = %r.registry, repository = %r.repository, endpoint = %u,
                            digest = %desc.digest, error = %e, "foreign layer url failed");
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Err(first_err
            .or(not_found)
            .unwrap_or_else(|| RegistryError::NotFound {
                reference,
                url: String::new(),
                message: "no endpoint configured".into(),
            }))
    }

    /// Small blobs (configs): fetched whole, digest and size verified.
    pub async fn get_blob_bytes(&self, desc: &Descriptor) -> Result<Bytes, RegistryError> {
        let reference = format!("{}@{}", self.inner.name, desc.digest);
        if desc.size > MAX_BLOB_BYTES_SIZE {
            return Err(RegistryError::TooLarge {
                reference,
                url: self
                    .inner
                    .endpoints
                    .first()
                    .map(Endpoint::display)
                    .unwrap_or_default(),
                what: format!("blob {} ({} bytes)", desc.digest, desc.size),
                limit: MAX_BLOB_BYTES_SIZE,
            });
        }
        let mut stream = self.get_blob(desc).await?;
        let mut buf = BytesMut::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let got = Digest::of(desc.digest.algorithm(), &buf);
        if buf.len() as u64 != desc.size {
            return Err(RegistryError::SizeMismatch {
                reference,
                url: self.name().to_string(),
                digest: desc.digest.to_string(),
                expected: desc.size,
                actual: buf.len() as u64,
            });
        }
        if got != desc.digest {
            return Err(RegistryError::DigestMismatch {
                reference,
                url: self.name().to_string(),
                expected: desc.digest.clone(),
                actual: got,
            });
        }
        Ok(buf.freeze())
    }

    async fn blob_from(
        &self,
        ep: &Endpoint,
        url: &str,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<Blob, RegistryError> {
        let resp = self.send(ep, url, None, None, reference).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(ep, url, reference, resp).await);
        }
        self.blob_body(resp, &ep.display(), url, desc, reference)
    }

    /// Fetches a foreign layer from `url` when its host is allowed, never from a loopback,
    /// link-local or unspecified address (the image chose the url: it must not reach the
    /// node's own services or a cloud metadata endpoint).
    async fn foreign_blob(
        &self,
        url: &str,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<Blob, RegistryError> {
        let client = &self.inner.client;
        let refused = |why: String| RegistryError::PermissionDenied {
            reference: reference.to_string(),
            endpoint: url.to_string(),
            status: "not fetched".into(),
            message: why,
        };
        let parsed = Url::parse(url).map_err(|e| refused(format!("foreign layer url: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| refused("foreign layer url has no host".into()))?
            .to_ascii_lowercase();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| refused("foreign layer url has no port".into()))?;
        let with_port = format!("{host}:{port}");
        if !client
            .foreign_hosts
            .iter()
            .any(|h| *h == host || *h == with_port)
        {
            return Err(refused(format!(
                "foreign layer host {host} is not in image.foreign_layer_hosts"
            )));
        }
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|e| RegistryError::Unavailable {
                reference: reference.to_string(),
                endpoint: with_port.clone(),
                message: format!("resolving foreign layer host: {e}"),
            })?
            .collect();
        if let Some(bad) = addrs
            .iter()
            .find(|a| !client.foreign_loopback && is_internal(a.ip()))
        {
            return Err(refused(format!(
                "foreign layer host {host} resolves to {}, a loopback or link-local address",
                bad.ip()
            )));
        }
        // Connect only to the addresses just checked (no second lookup to rebind), and follow
        // no redirect (it could point anywhere).
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&bare, &addrs)
            .build()
            .map_err(|e| refused(format!("building HTTP client: {}", error_chain(&e))))?;
        let ep = Endpoint {
            origin: url.to_string(),
            prefix: String::new(),
            http,
            ns: None,
            creds: false,
            token_realms: Vec::new(),
        };
        // Foreign urls belong to another party: never send our registry credentials there.
        let resp = ep
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.unavailable(&ep, reference, &e))?;
        let status = resp.status();
        if !status.is_success() {
            // Only the status: the body is another party's text, not for our client's eyes.
            return Err(RegistryError::Status {
                reference: reference.to_string(),
                url: url.to_string(),
                status: status.as_u16(),
                message: "foreign layer url failed".into(),
            });
        }
        self.blob_body(resp, url, url, desc, reference)
    }

    fn blob_body(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
        url: &str,
        desc: &Descriptor,
        reference: &str,
    ) -> Result<Blob, RegistryError> {
        let size = resp.content_length();
        let size_mismatch = |actual: u64| RegistryError::SizeMismatch {
            reference: reference.to_string(),
            url: url.to_string(),
            digest: desc.digest.to_string(),
            expected: desc.size,
            actual,
        };
        if let Some(len) = size.filter(|l| *l != desc.size) {
            return Err(size_mismatch(len));
        }
        debug!(registry = %self.inner.registry, repository = %self.inner.repository, endpoint = %endpoint,
            digest = %desc.digest, size = ?size, "streaming blob");
        let limit = desc.size;
        let mut seen = 0u64;
        let (reference, endpoint) = (reference.to_string(), endpoint.to_string());
        let (url, digest) = (url.to_string(), desc.digest.to_string());
        let stream = resp.bytes_stream().map(move |chunk| match chunk {
            Ok(b) => {
                seen += b.len() as u64;
                // Stop a registry that sends more than announced before it fills the disk.
                if seen > limit {
                    Err(RegistryError::SizeMismatch {
                        reference: reference.clone(),
                        url: url.clone(),
                        digest: digest.clone(),
                        expected: limit,
                        actual: seen,
                    })
                } else {
                    Ok(b)
                }
            }
            Err(e) => Err(RegistryError::Unavailable {
                reference: reference.clone(),
                endpoint: endpoint.clone(),
                message: format!("reading blob: {}", error_chain(&e)),
            }),
        });
        Ok(Blob {
            size,
            stream: Box::pin(stream),
        })
    }

    /// Sends a GET, answering one authentication challenge: on 401 the challenge is parsed, a
    /// token (or Basic credentials) obtained and the request repeated once.
    async fn send(
        &self,
        ep: &Endpoint,
        url: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
        reference: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut refresh = false;
        let mut attempt = 0;
        loop {
            let auth = self.authorization(ep, refresh, reference).await?;
            let mut req = ep.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            debug!(registry = %self.inner.registry, repository = %self.inner.repository,
                endpoint = %ep.display(), url, authorized = auth.is_some(), "GET");
            let resp = req
                .send()
                .await
                .map_err(|e| self.unavailable(ep, reference, &e))?;
            attempt += 1;
            if resp.status() != StatusCode::UNAUTHORIZED
                || attempt > 1
                || matches!(self.creds_for(ep), Some(Credentials::RegistryToken(_)))
            {
                return Ok(resp);
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .collect();
            // Prefer a token: it is scoped to this repository.
            let chosen = challenges
                .iter()
                .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
                .or_else(|| challenges.iter().find(|c| c.scheme == "basic"));
            let Some(chosen) = chosen else {
                return Ok(resp);
            };
            if chosen.scheme == "basic"
                && self
                    .creds_for(ep)
                    .and_then(Credentials::basic_header)
                    .is_none()
            {
                return Ok(resp); // Nothing to answer it with.
            }
            debug!(registry = %self.inner.registry, endpoint = %ep.display(), scheme = %chosen.scheme, "auth challenge");
            self.inner
                .challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ep.origin.clone(), chosen.clone());
            // If we already sent a (cached) token, it was rejected: get a fresh one.
            refresh = auth.is_some();
        }
    }

    /// The Authorization value for `ep`, from the challenge it last sent.
    async fn authorization(
        &self,
        ep: &Endpoint,
        refresh: bool,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(Credentials::RegistryToken(t)) = self.creds_for(ep) {
            return Ok(Some(format!("Bearer {t}")));
        }
        let challenge = self
            .inner
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ep.origin)
            .cloned();
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        if challenge.scheme == "basic" {
            return Ok(self.creds_for(ep).and_then(Credentials::basic_header));
        }
        let mut scopes = vec![format!(
            "repository:{}:pull",
            ep.repo_path(&self.inner.repository)
        )];
        for s in challenge
            .param("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
        {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
        let key = TokenKey {
            endpoint: ep.origin.clone(),
            scope: scopes.join(" "),
            creds: if self.creds_for(ep).is_some() {
                self.inner.creds_id.clone()
            } else {
                String::new()
            },
        };
        if !refresh {
            let tokens = self
                .inner
                .client
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if let Some((tok, _)) = tokens.get(&key).filter(|(_, until)| *until > now) {
                return Ok(Some(format!("Bearer {tok}")));
            }
        }
        let (token, lifetime) = self.fetch_token(ep, &challenge, &scopes, reference).await?;
        let mut tokens = self
            .inner
            .client
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, (_, until)| *until > now);
        tokens.insert(key, (token.clone(), now + lifetime));
        Ok(Some(format!("Bearer {token}")))
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        challenge: &Challenge,
        scopes: &[String],
        reference: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let realm = challenge.param("realm").unwrap_or_default();
        let realm_ep = Endpoint {
            origin: realm.to_string(),
            prefix: String::new(),
            http: ep.http.clone(),
            ns: None,
            creds: false,
            token_realms: Vec::new(),
        };
        let realm_url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RegistryError::Unauthenticated {
                reference: reference.to_string(),
                endpoint: ep.display(),
                what: "sent an unusable auth challenge",
                status: "401 Unauthorized".into(),
                message: format!("realm {realm:?} is not an http(s) url"),
            })?;
        let service = challenge.param("service").unwrap_or_default();
        let creds = self
            .creds_for(ep)
            .filter(|_| realm_may_get_credentials(ep, &realm_url));
        if creds.is_none() && self.creds_for(ep).is_some() {
            debug!(registry = %self.inner.registry, endpoint = %ep.display(), realm,
                "token service may not receive the credentials; asking anonymously");
        }
        let req = match creds {
            // containerd's OAuth2 flow for identity tokens (refresh tokens).
            Some(Credentials::IdentityToken(t)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t),
                    ("service", service),
                    ("client_id", "crius"),
                ];
                let scope = scopes.join(" ");
                form.push(("scope", &scope));
                ep.http.post(realm_url.clone()).form(&form)
            }
            creds => {
                let mut query: Vec<(&str, &str)> = Vec::new();
                if !service.is_empty() {
                    query.push(("service", service));
                }
                query.extend(scopes.iter().map(|s| ("scope", s.as_str())));
                let mut req = ep.http.get(realm_url.clone()).query(&query);
                if let Some(b) = creds.and_then(Credentials::basic_header) {
                    req = req.header(AUTHORIZATION, b);
                }
                req
            }
        };
        debug!(registry = %self.inner.registry, repository = %self.inner.repository, endpoint = %ep.display(),
            realm, service, scope = %scopes.join(" "), "fetching token");
        let resp = req
            .timeout(SMALL_REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unavailable(&realm_ep, reference, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let message = format!("token service {realm}: {}", error_message(resp).await);
            return Err(match status {
                StatusCode::UNAUTHORIZED => RegistryError::Unauthenticated {
                    reference: reference.to_string(),
                    endpoint: ep.display(),
                    what: if self.inner.creds.is_some() {
                        "rejected credentials"
                    } else {
                        "requires authentication"
                    },
                    status: status.to_string(),
                    message,
                },
                StatusCode::FORBIDDEN => RegistryError::PermissionDenied {
                    reference: reference.to_string(),
                    endpoint: ep.display(),
                    status: status.to_string(),
                    message,
                },
                _ => RegistryError::Status {
                    reference: reference.to_string(),
                    url: realm.to_string(),
                    status: status.as_u16(),
                    message,
                },
            });
        }
        let body = read_limited(resp, ERROR_BODY_LIMIT as u64)
            .await
            .map_err(|e| self.unavailable(&realm_ep, reference, &e))?
            .unwrap_or_default();
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Status {
                reference: reference.to_string(),
                url: realm.to_string(),
                status: 502,
                message: format!("token service answered with invalid JSON: {e}"),
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Status {
                reference: reference.to_string(),
                url: realm.to_string(),
                status: 502,
                message: "token service answered without a token".into(),
            })?;
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Ok((token, lifetime))
    }

    /// The pull's credentials, when `ep` may receive them.
    fn creds_for(&self, ep: &Endpoint) -> Option<&Credentials> {
        self.inner.creds.as_ref().filter(|_| ep.creds)
    }

    fn unavailable(&self, ep: &Endpoint, reference: &str, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unavailable {
            reference: reference.to_string(),
            endpoint: ep.display(),
            message: error_chain(e),
        }
    }

    async fn status_error(
        &self,
        ep: &Endpoint,
        url: &str,
        reference: &str,
        resp: reqwest::Response,
    ) -> RegistryError {
        let status = resp.status();
        let message = error_message(resp).await;
        let reference = reference.to_string();
        match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                reference,
                url: url.to_string(),
                message,
            },
            _ if is_not_found_code(&message) => RegistryError::NotFound {
                reference,
                url: url.to_string(),
                message,
            },
            StatusCode::UNAUTHORIZED => RegistryError::Unauthenticated {
                reference,
                endpoint: ep.display(),
                what: if self.inner.creds.is_some() {
                    "rejected credentials"
                } else {
                    "requires authentication (no credentials given; the repository may be private or not exist)"
                },
                status: status.to_string(),
                message,
            },
            StatusCode::FORBIDDEN => RegistryError::PermissionDenied {
                reference,
                endpoint: ep.display(),
                status: status.to_string(),
                message,
            },
            _ => RegistryError::Status {
                reference,
                url: url.to_string(),
                status: status.as_u16(),
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests;
