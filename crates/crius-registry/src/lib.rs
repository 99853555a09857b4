//! Image references, manifests, and the registry HTTP API v2 client.
//!
//! CONTRACT (used by crius-image; keep these names):
//!
//! ```ignore
//! // reference.rs
//! pub struct Reference { pub registry: String, pub repository: String,
//!                        pub tag: Option<String>, pub digest: Option<Digest> }
//! impl Reference {
//!     /// Docker/containerd normalisation: "busybox" -> docker.io/library/busybox:latest.
//!     /// Errors are ReferenceError (kind InvalidArgument) naming the input.
//!     pub fn parse(s: &str) -> Result<Reference, RegistryError>;
//!     pub fn name(&self) -> String;            // "docker.io/library/busybox"
//!     pub fn tagged(&self) -> Option<String>;  // "docker.io/library/busybox:latest" when tagged
//!     pub fn with_digest(&self, d: &Digest) -> String; // "docker.io/library/busybox@sha256:..."
//! }
//! impl Display for Reference  // full normalised form: name[:tag][@digest]
//! // digest.rs
//! pub struct Digest { algorithm, hex }  // parse("sha256:..."), Display, FromStr, Serialize
//! pub struct DigestVerifier  // incremental sha256/sha512; update(&[u8]); finish() -> Digest
//! // manifest.rs
//! pub mod media_types { OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ... }
//! pub struct Descriptor { media_type, digest: Digest, size: u64, urls: Vec<String>,
//!                         platform: Option<Platform>, annotations }
//! pub struct Platform { os, architecture, variant: Option<String> }
//! pub enum Manifest { Index(Vec<Descriptor>), Image { config: Descriptor, layers: Vec<Descriptor> } }
//! pub fn parse_manifest(media_type: &str, bytes: &[u8]) -> Result<Manifest, RegistryError>;
//! pub fn host_platform() -> Platform;       // linux/<arch>[/<variant>] in OCI spelling
//! pub fn select_platform<'a>(index: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor>;
//! // client.rs
//! pub enum Credentials { Basic { username, password }, IdentityToken(String), RegistryToken(String) }
//! pub struct Client  // Clone; built once from the registries config
//! impl Client {
//!     pub fn new(hosts: &BTreeMap<String, HostOptions>) -> Result<Client, RegistryError>;
//!     pub fn repository(&self, reference: &Reference, creds: Option<Credentials>) -> Repository;
//! }
//! pub struct Repository  // one repository on its endpoints (mirrors first), token cache
//! impl Repository {
//!     /// By tag or digest; verifies the digest when asked by digest; returns the digest.
//!     pub async fn get_manifest(&self, tag_or_digest: &str) -> Result<FetchedManifest, RegistryError>;
//!     /// Streams a blob; the caller verifies digest and size. Foreign layers fall back to urls.
//!     pub async fn get_blob(&self, desc: &Descriptor) -> Result<BlobStream, RegistryError>;
//!     /// Small blobs (configs): fetched whole, digest and size verified.
//!     pub async fn get_blob_bytes(&self, desc: &Descriptor) -> Result<bytes::Bytes, RegistryError>;
//! }
//! pub struct FetchedManifest { pub media_type: String, pub digest: Digest, pub bytes: bytes::Bytes }
//! pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;
//! ```
//!
//! Notes on the contract as implemented:
//! - `Digest`'s fields are private (so every `Digest` is valid): use `algorithm()` and `hex()`.
//! - `DigestVerifier::new(Algorithm)`, `sha256()`, `for_digest(&Digest)`; `size()`, `verify()`.
//!
//! Additions (all additive): `Digest::{of(), sha256_of(), from_hex()}` and `Algorithm`;
//! `Reference::tag_or_digest()` (what to fetch: the digest if any, else the tag);
//! `Platform::{new(), normalized()}`; `detect_media_type()`; `Repository::open_blob()` returning
//! a [`Blob`] with the Content-Length; `Repository::name()`; `Repository` is `Clone` (clones
//! share the remembered endpoint); `parse_www_authenticate()` and `Challenge`;
//! `MAX_MANIFEST_SIZE`, `MAX_BLOB_BYTES_SIZE`.

mod auth;
mod client;
mod digest;
mod error;
mod manifest;
mod reference;
#[cfg(test)]
mod testserver;

pub use auth::{Challenge, Credentials, parse_www_authenticate};
pub use client::{
    Blob, BlobStream, Client, FetchedManifest, HostOptions, MAX_BLOB_BYTES_SIZE, MAX_MANIFEST_SIZE,
    Repository,
};
pub use digest::{Algorithm, Digest, DigestVerifier, parse_image_id};
pub use error::RegistryError;
pub use manifest::{
    Descriptor, Manifest, Platform, detect_media_type, host_platform, media_types, parse_manifest,
    select_platform,
};
pub use reference::{DEFAULT_REGISTRY, DEFAULT_TAG, Reference};
