//! An in-Rust OCI / Docker image builder with deterministic output, plus ready-made test images.
//!
//! Everything here is pure data: building an image never touches a registry. Push it with
//! [`crate::push`], write it as an OCI layout with [`write_oci_layout`], or extract it with
//! umoci as the reference with [`reference_extract`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Every entry gets this mtime unless told otherwise, so digests are stable across runs.
pub const FIXED_MTIME: u64 = 1_700_000_000;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Not part of the Docker spec; containerd and crius-style runtimes accept it.
pub const MT_DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Oci => MT_OCI_MANIFEST,
            Format::Docker => MT_DOCKER_MANIFEST,
        }
    }
    pub fn index_media_type(self) -> &'static str {
        match self {
            Format::Oci => MT_OCI_INDEX,
            Format::Docker => MT_DOCKER_LIST,
        }
    }
    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Oci => MT_OCI_CONFIG,
            Format::Docker => MT_DOCKER_CONFIG,
        }
    }
    pub fn layer_media_type(self, c: Compression) -> &'static str {
        match (self, c) {
            (Format::Oci, Compression::None) => MT_OCI_LAYER,
            (Format::Oci, Compression::Gzip) => MT_OCI_LAYER_GZIP,
            (Format::Oci, Compression::Zstd) => MT_OCI_LAYER_ZSTD,
            (Format::Docker, Compression::None) => MT_DOCKER_LAYER,
            (Format::Docker, Compression::Gzip) => MT_DOCKER_LAYER_GZIP,
            (Format::Docker, Compression::Zstd) => MT_DOCKER_LAYER_ZSTD,
        }
    }
}

/// Metadata of one tar entry. `Default` is root-owned, mode 0644 (files) with [`FIXED_MTIME`].
#[derive(Debug, Clone)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Written as PAX `SCHILY.xattr.<name>` records, e.g. `("user.crius", b"v")`.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    pub fn mode(mode: u32) -> EntryMeta {
        EntryMeta {
            mode,
            ..EntryMeta::default()
        }
    }
    pub fn owned(mode: u32, uid: u64, gid: u64) -> EntryMeta {
        EntryMeta {
            mode,
            uid,
            gid,
            ..EntryMeta::default()
        }
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> EntryMeta {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }
}

impl Default for EntryMeta {
    fn default() -> Self {
        EntryMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: FIXED_MTIME,
            xattrs: Vec::new(),
        }
    }
}

/// Builds one uncompressed layer tar; [`LayerBuilder::build`] compresses it.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, meta: &EntryMeta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(size);
        h
    }

    fn append(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        link: Option<&str>,
        meta: &EntryMeta,
        data: &[u8],
    ) -> &mut Self {
        if !meta.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.pax(path, &recs);
        }
        let mut h = Self::header(kind, meta, data.len() as u64);
        let r = match link {
            Some(target) => self.tar.append_link(&mut h, path, target),
            None => self.tar.append_data(&mut h, path, data),
        };
        r.unwrap_or_else(|e| panic!("tar entry {path}: {e}"));
        self
    }

    /// Writes a PAX extended header (type `x`) applying to the next entry.
    fn pax(&mut self, path: &str, records: &[(String, &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n" where <len> counts the whole record, itself included.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut name = format!("PaxHeaders.0/{}", path.rsplit('/').next().unwrap_or(path));
        name.truncate(99);
        let mut h = Self::header(
            tar::EntryType::XHeader,
            &EntryMeta::default(),
            body.len() as u64,
        );
        h.set_path(&name).expect("PAX header name");
        h.set_cksum();
        self.tar
            .append(&h, body.as_slice())
            .expect("writing tar to memory");
    }

    /// A directory (mode from `meta`, e.g. `EntryMeta::mode(0o755)`).
    pub fn dir_with(&mut self, path: &str, meta: EntryMeta) -> &mut Self {
        self.append(tar::EntryType::Directory, path, None, &meta, &[])
    }

    /// A root-owned 0755 directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.dir_with(path, EntryMeta::mode(0o755))
    }

    pub fn file_with(&mut self, path: &str, data: &[u8], meta: EntryMeta) -> &mut Self {
        self.append(tar::EntryType::Regular, path, None, &meta, data)
    }

    /// A root-owned 0644 file.
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_with(path, data, EntryMeta::default())
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.append(
            tar::EntryType::Symlink,
            path,
            Some(target),
            &EntryMeta::mode(0o777),
            &[],
        )
    }

    /// A hard link `path` to `target` (a path inside the archive, e.g. `bin/busybox`).
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.append(
            tar::EntryType::Link,
            path,
            Some(target),
            &EntryMeta::mode(0o644),
            &[],
        )
    }

    fn device(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
        meta: EntryMeta,
    ) -> &mut Self {
        let mut h = Self::header(kind, &meta, 0);
        h.set_device_major(major).expect("ustar header");
        h.set_device_minor(minor).expect("ustar header");
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap_or_else(|e| panic!("tar entry {path}: {e}"));
        self
    }

    pub fn char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        meta: EntryMeta,
    ) -> &mut Self {
        self.device(tar::EntryType::Char, path, major, minor, meta)
    }

    pub fn block_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        meta: EntryMeta,
    ) -> &mut Self {
        self.device(tar::EntryType::Block, path, major, minor, meta)
    }

    pub fn fifo(&mut self, path: &str, meta: EntryMeta) -> &mut Self {
        self.append(tar::EntryType::Fifo, path, None, &meta, &[])
    }

    /// Deletes `path` from lower layers: writes `<dir>/.wh.<name>`.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let p = Path::new(path);
        let name = p
            .file_name()
            .expect("whiteout of a named path")
            .to_string_lossy();
        let wh = match p.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => format!("{}/.wh.{name}", d.display()),
            None => format!(".wh.{name}"),
        };
        self.file(&wh, &[])
    }

    /// Hides everything lower layers put in `dir`: writes `<dir>/.wh..wh..opq`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let wh = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.file(&wh, &[])
    }

    /// Writes a header with exactly these bytes as name and link name (each at most 100 bytes),
    /// unchecked, so hostile archives (`../../x`, `/etc/x`, links to `../x`) can be made.
    /// `entry_type` is the tar type flag: `b'0'` file, `b'1'` hard link, `b'2'` symlink,
    /// `b'5'` directory, ...
    pub fn raw_entry(
        &mut self,
        name: &str,
        entry_type: u8,
        linkname: &str,
        data: &[u8],
    ) -> &mut Self {
        assert!(
            name.len() <= 100 && linkname.len() <= 100,
            "raw_entry names are limited to 100 bytes"
        );
        let mode = if entry_type == b'5' {
            0o755
        } else if entry_type == b'2' {
            0o777
        } else {
            0o644
        };
        let mut h = Self::header(
            tar::EntryType::new(entry_type),
            &EntryMeta::mode(mode),
            data.len() as u64,
        );
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname = [0; 100];
            old.linkname[..linkname.len()].copy_from_slice(linkname.as_bytes());
        }
        h.set_cksum();
        self.tar.append(&h, data).expect("writing tar to memory");
        self
    }

    /// Finishes the tar and compresses it with the default level.
    pub fn build(self, compression: Compression) -> Layer {
        self.build_with_level(compression, None)
    }

    /// Like [`LayerBuilder::build`]; `level` overrides the gzip (0-9) or zstd (1-22) level.
    pub fn build_with_level(self, compression: Compression, level: Option<u32>) -> Layer {
        let tar = self.tar.into_inner().expect("finishing tar in memory");
        Layer::from_tar(tar, compression, level)
    }
}

/// One layer: the uncompressed tar and the compressed blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub compression: Compression,
    /// Compressed bytes as pushed (the tar itself for [`Compression::None`]).
    pub blob: Vec<u8>,
    /// Digest of `blob`.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
}

impl Layer {
    pub fn from_tar(tar: Vec<u8>, compression: Compression, level: Option<u32>) -> Layer {
        let diff_id = sha256_digest(&tar);
        let uncompressed_size = tar.len() as u64;
        let blob = match compression {
            Compression::None => tar,
            Compression::Gzip => {
                let lvl = flate2::Compression::new(level.unwrap_or(6));
                // GzBuilder writes mtime 0 and no file name: deterministic.
                let mut enc = flate2::GzBuilder::new().write(Vec::new(), lvl);
                enc.write_all(&tar).expect("gzip to memory");
                enc.finish().expect("gzip to memory")
            }
            Compression::Zstd => {
                zstd::encode_all(tar.as_slice(), level.map(|l| l as i32).unwrap_or(3))
                    .expect("zstd to memory")
            }
        };
        Layer {
            compression,
            digest: sha256_digest(&blob),
            blob,
            diff_id,
            uncompressed_size,
        }
    }

    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// A target platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }
    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }
    pub fn linux_arm64() -> Platform {
        Platform::new("linux", "arm64", Some("v8"))
    }
    /// The platform this test runs on (GOARCH naming).
    pub fn host() -> Platform {
        match std::env::consts::ARCH {
            "x86_64" => Platform::linux_amd64(),
            "aarch64" => Platform::linux_arm64(),
            other => Platform::new("linux", other, None),
        }
    }
    fn to_json(&self) -> Value {
        let mut v = json!({"architecture": self.architecture, "os": self.os});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }
}

/// Image configuration (the `config` object of the image config JSON).
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Builds a single-platform image.
pub struct ImageBuilder {
    format: Format,
    platform: Platform,
    config: ImageConfig,
    layers: Vec<Layer>,
}

impl ImageBuilder {
    pub fn new(format: Format) -> ImageBuilder {
        ImageBuilder {
            format,
            platform: Platform::host(),
            config: ImageConfig {
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                ..ImageConfig::default()
            },
            layers: Vec::new(),
        }
    }
    pub fn platform(mut self, p: Platform) -> Self {
        self.platform = p;
        self
    }
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    pub fn entrypoint(mut self, v: &[&str]) -> Self {
        self.config.entrypoint = Some(v.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn cmd(mut self, v: &[&str]) -> Self {
        self.config.cmd = Some(v.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Adds `KEY=VALUE`.
    pub fn env(mut self, kv: &str) -> Self {
        self.config.env.push(kv.into());
        self
    }
    pub fn user(mut self, u: &str) -> Self {
        self.config.user = Some(u.into());
        self
    }
    pub fn working_dir(mut self, d: &str) -> Self {
        self.config.working_dir = Some(d.into());
        self
    }
    pub fn stop_signal(mut self, s: &str) -> Self {
        self.config.stop_signal = Some(s.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.config.labels.insert(k.into(), v.into());
        self
    }
    pub fn config(mut self, c: ImageConfig) -> Self {
        self.config = c;
        self
    }

    pub fn build(self) -> Image {
        let c = &self.config;
        let mut cfg = serde_json::Map::new();
        if let Some(v) = &c.entrypoint {
            cfg.insert("Entrypoint".into(), json!(v));
        }
        if let Some(v) = &c.cmd {
            cfg.insert("Cmd".into(), json!(v));
        }
        if !c.env.is_empty() {
            cfg.insert("Env".into(), json!(c.env));
        }
        if let Some(v) = &c.user {
            cfg.insert("User".into(), json!(v));
        }
        if let Some(v) = &c.working_dir {
            cfg.insert("WorkingDir".into(), json!(v));
        }
        if let Some(v) = &c.stop_signal {
            cfg.insert("StopSignal".into(), json!(v));
        }
        if !c.labels.is_empty() {
            cfg.insert("Labels".into(), json!(c.labels));
        }
        let mut config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": Value::Object(cfg),
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": self.layers.iter().enumerate()
                .map(|(i, _)| json!({"created": "2023-11-14T22:13:20Z", "created_by": format!("crius-testkit layer {i}")}))
                .collect::<Vec<_>>(),
        });
        if let Some(v) = &self.platform.variant {
            config["variant"] = json!(v);
        }
        let config_bytes = serde_json::to_vec(&config).expect("json");
        let config_digest = sha256_digest(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest_media_type(),
            "config": {
                "mediaType": self.format.config_media_type(),
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": self.format.layer_media_type(l.compression),
                "digest": l.digest,
                "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("json");
        Image {
            format: self.format,
            platform: self.platform,
            manifest_digest: sha256_digest(&manifest_bytes),
            manifest: manifest_bytes,
            config_digest,
            config: config_bytes,
            layers: self.layers,
        }
    }
}

/// A built single-platform image: the exact bytes to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub format: Format,
    pub platform: Platform,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn manifest_media_type(&self) -> &'static str {
        self.format.manifest_media_type()
    }
    /// Sum of compressed layer sizes.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(Layer::size).sum()
    }
    /// The same image with every zstd layer re-compressed as `to` (config and diff_ids
    /// unchanged, so the image id stays the same; the manifest digest changes).
    pub fn recompressed(&self, to: Compression) -> Result<Image> {
        let mut manifest: Value = serde_json::from_slice(&self.manifest)?;
        let mut layers = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let l = if l.compression == Compression::Zstd {
                let tar = zstd::decode_all(l.blob.as_slice())?;
                let nl = Layer::from_tar(tar, to, None);
                manifest["layers"][i] = json!({
                    "mediaType": self.format.layer_media_type(to),
                    "digest": nl.digest,
                    "size": nl.size(),
                });
                nl
            } else {
                l.clone()
            };
            layers.push(l);
        }
        let manifest = serde_json::to_vec_pretty(&manifest)?;
        Ok(Image {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            layers,
            ..self.clone()
        })
    }

    /// The same blobs under an edited manifest (e.g. a layer descriptor with a wrong size or
    /// digest); the manifest digest is recomputed. Push it with [`crate::push_image`].
    pub fn edit_manifest(&self, edit: impl FnOnce(&mut Value)) -> Image {
        let mut m: Value = serde_json::from_slice(&self.manifest).expect("own manifest is JSON");
        edit(&mut m);
        let manifest = serde_json::to_vec_pretty(&m).expect("json");
        Image {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            ..self.clone()
        }
    }

    /// The image id as the CRI reports it: the config digest.
    pub fn id(&self) -> &str {
        &self.config_digest
    }
}

/// Builds an OCI index or a Docker manifest list over several images.
pub struct IndexBuilder {
    format: Format,
    images: Vec<Image>,
}

impl IndexBuilder {
    pub fn new(format: Format) -> IndexBuilder {
        IndexBuilder {
            format,
            images: Vec::new(),
        }
    }
    pub fn image(mut self, image: Image) -> Self {
        self.images.push(image);
        self
    }
    pub fn build(self) -> Index {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": self.format.index_media_type(),
            "manifests": self.images.iter().map(|i| json!({
                "mediaType": i.manifest_media_type(),
                "digest": i.manifest_digest,
                "size": i.manifest.len(),
                "platform": i.platform.to_json(),
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&index).expect("json");
        Index {
            format: self.format,
            digest: sha256_digest(&bytes),
            manifest: bytes,
            images: self.images,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Index {
    pub format: Format,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub images: Vec<Image>,
}

impl Index {
    pub fn media_type(&self) -> &'static str {
        self.format.index_media_type()
    }
    /// The image for `architecture` (and `variant` when given).
    pub fn for_arch(&self, architecture: &str) -> Option<&Image> {
        self.images
            .iter()
            .find(|i| i.platform.architecture == architecture)
    }
}

fn write_blob(dir: &Path, digest: &str, data: &[u8]) -> Result<()> {
    let hex = digest
        .strip_prefix("sha256:")
        .context("digest without sha256:")?;
    let p = dir.join("blobs/sha256").join(hex);
    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
}

/// Writes `image` as an OCI image layout in `dir` (created if missing) under `tag`.
/// Docker-format images are written with their Docker media types, which umoci rejects; use an
/// OCI-format image for reference extraction.
pub fn write_oci_layout(dir: &Path, image: &Image, tag: &str) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write_blob(dir, &image.config_digest, &image.config)?;
    for l in &image.layers {
        write_blob(dir, &l.digest, &l.blob)?;
    }
    write_blob(dir, &image.manifest_digest, &image.manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [{
            "mediaType": image.manifest_media_type(),
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": image.platform.to_json(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}

/// Extracts `image` with `umoci unpack` (the reference implementation). The returned directory
/// holds the bundle; the root filesystem is `<dir>/bundle/rootfs` (see [`ReferenceRootfs`]).
/// Needs root (umoci without `--rootless` applies owners and device nodes).
pub fn reference_extract(image: &Image) -> Result<ReferenceRootfs> {
    ensure!(
        image.format == Format::Oci,
        "umoci only reads OCI-format images"
    );
    // umoci 0.4 cannot read zstd layers: extract the same tars re-compressed with gzip.
    let converted;
    let image = if image
        .layers
        .iter()
        .any(|l| l.compression == Compression::Zstd)
    {
        converted = image.recompressed(Compression::Gzip)?;
        &converted
    } else {
        image
    };
    let dir = tempfile::Builder::new()
        .prefix("crius-testkit-ref-")
        .tempdir()?;
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, image, "ref")?;
    let bundle = dir.path().join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:ref", layout.display()))
        .arg(&bundle)
        .output()
        .context("running umoci (hack/install-deps.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "umoci unpack failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ReferenceRootfs { dir })
}

/// An umoci-extracted bundle in a temp dir, removed on drop.
pub struct ReferenceRootfs {
    pub dir: TempDir,
}

impl ReferenceRootfs {
    pub fn rootfs(&self) -> std::path::PathBuf {
        self.dir.path().join("bundle/rootfs")
    }
}

// ---------------------------------------------------------------------------------------------
// Ready-made images.

/// Busybox applets linked into the busybox image's `/bin`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "true",
    "false",
    "id",
    "env",
    "printf",
    "test",
    "[",
    "touch",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "stat",
    "grep",
    "wc",
    "head",
    "tail",
    "ps",
    "kill",
    "hostname",
    "mount",
    "df",
    "du",
    "chmod",
    "chown",
    "readlink",
    "pwd",
    "uname",
    "whoami",
    "sha256sum",
    "nc",
    "wget",
    "ip",
    "ping",
    "date",
    "find",
    "xargs",
    "sed",
    "awk",
    "tr",
    "sort",
    "uniq",
    "yes",
    "dd",
    "nslookup",
    "top",
    "timeout",
    "pidof",
    "mknod",
    "ifconfig",
    "route",
    "cut",
    "tee",
    "basename",
    "dirname",
    "seq",
    "sync",
    "umount",
];

fn read_busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox")
        .expect("/bin/busybox missing: run hack/install-deps.sh (busybox-static)")
}

/// The base layer of the busybox image (root dirs, /bin/busybox, applet symlinks, /etc files).
pub fn busybox_layer(compression: Compression) -> Layer {
    let mut l = LayerBuilder::new();
    for d in [
        "bin", "dev", "etc", "proc", "sys", "root", "var", "usr", "usr/bin",
    ] {
        l.dir(d);
    }
    l.dir_with("tmp", EntryMeta::mode(0o1777));
    l.file_with("bin/busybox", &read_busybox(), EntryMeta::mode(0o755));
    for a in BUSYBOX_APPLETS {
        l.symlink(&format!("bin/{a}"), "busybox");
    }
    l.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n");
    l.file("etc/group", b"root:x:0:\nnobody:x:65534:\nuser:x:1000:\n");
    l.file("etc/hostname", b"busybox\n");
    l.build(compression)
}

/// A runnable busybox (from Debian's busybox-static) with `Cmd ["sh"]`, OCI format, gzip.
pub fn busybox_image() -> Image {
    ImageBuilder::new(Format::Oci)
        .layer(busybox_layer(Compression::Gzip))
        .cmd(&["sh"])
        .label("org.crius.test", "busybox")
        .build()
}

/// Three layers exercising every entry kind and whiteouts. After extraction:
/// - `/data/keep.txt` "keep\n"; `/data/deleted.txt` gone (whiteout in layer 3);
/// - `/opq/` holds only `new.txt` (layer 1 put `old1.txt`, `old2.txt`; layer 2 is opaque);
/// - `/data/hard` is a hard link to `/data/keep.txt`; `/data/sym -> keep.txt`;
/// - `/bin/suid` mode 04755; `/secret` mode 0600 owned 1000:1000; `/home/user` 1000:1000;
/// - `/dev/null2` char device 1:3; `/dev/loopx` block device 7:200; `/fifo` a FIFO;
/// - `/xattr.txt` has xattr `user.crius.test=hello`;
/// - `/replaced` is a file in layer 1 and a directory with `inner` in layer 3.
pub fn multilayer_whiteouts_image() -> Image {
    let mut l1 = LayerBuilder::new();
    l1.dir("data")
        .file("data/keep.txt", b"keep\n")
        .file("data/deleted.txt", b"to be deleted\n")
        // Same layer as its target, as layer diffs made by image builders always are.
        .hardlink("data/hard", "data/keep.txt")
        .dir("opq")
        .file("opq/old1.txt", b"old1\n")
        .file("opq/old2.txt", b"old2\n")
        .dir("bin")
        .file_with(
            "bin/suid",
            b"#!/bin/sh\necho suid\n",
            EntryMeta::mode(0o4755),
        )
        .file("replaced", b"a file in layer 1\n");
    let mut l2 = LayerBuilder::new();
    l2.dir("opq")
        .opaque("opq")
        .file("opq/new.txt", b"new\n")
        .symlink("data/sym", "keep.txt")
        .file_with("secret", b"s3cret\n", EntryMeta::owned(0o600, 1000, 1000))
        .dir("home")
        .dir_with("home/user", EntryMeta::owned(0o750, 1000, 1000))
        .file_with(
            "home/user/.profile",
            b"export A=1\n",
            EntryMeta::owned(0o644, 1000, 1000),
        )
        .dir("dev")
        .char_device("dev/null2", 1, 3, EntryMeta::mode(0o666))
        .block_device("dev/loopx", 7, 200, EntryMeta::mode(0o660))
        .fifo("fifo", EntryMeta::mode(0o644))
        .file_with(
            "xattr.txt",
            b"xattr\n",
            EntryMeta::default().xattr("user.crius.test", b"hello"),
        );
    let mut l3 = LayerBuilder::new();
    l3.whiteout("data/deleted.txt")
        .whiteout("replaced")
        .dir("replaced")
        .file("replaced/inner", b"inner\n")
        .file("layer3.txt", b"3\n");
    ImageBuilder::new(Format::Oci)
        .layer(l1.build(Compression::Gzip))
        .layer(l2.build(Compression::None))
        .layer(l3.build(Compression::Gzip))
        .cmd(&["/bin/suid"])
        .build()
}

/// Busybox plus a second layer, both zstd-compressed.
pub fn zstd_image() -> Image {
    let mut l2 = LayerBuilder::new();
    l2.dir("etc")
        .file("etc/zstd.txt", b"compressed with zstd\n");
    ImageBuilder::new(Format::Oci)
        .layer(busybox_layer(Compression::Zstd))
        .layer(l2.build(Compression::Zstd))
        .cmd(&["sh"])
        .build()
}

/// Busybox as a Docker schema2 image with entrypoint, env, user, workdir, stop signal, labels.
pub fn docker_schema2_image() -> Image {
    let mut l2 = LayerBuilder::new();
    l2.dir("app")
        .file("app/hello.txt", b"hello from docker schema2\n");
    ImageBuilder::new(Format::Docker)
        .layer(busybox_layer(Compression::Gzip))
        .layer(l2.build(Compression::Gzip))
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["cat /app/hello.txt"])
        .env("GREETING=hello")
        .user("1000:1000")
        .working_dir("/app")
        .stop_signal("SIGINT")
        .label("org.crius.test", "docker-schema2")
        .build()
}

/// One small image per platform, each with `/platform` holding e.g. `linux/arm64/v8\n`.
/// The host platform's image also carries busybox so it can run.
pub fn platform_image(format: Format, platform: Platform) -> Image {
    let text = match &platform.variant {
        Some(v) => format!("{}/{}/{v}\n", platform.os, platform.architecture),
        None => format!("{}/{}\n", platform.os, platform.architecture),
    };
    let mut l = LayerBuilder::new();
    l.file("platform", text.as_bytes());
    let mut b = ImageBuilder::new(format).platform(platform.clone());
    if platform == Platform::host() {
        b = b.layer(busybox_layer(Compression::Gzip));
    }
    b.layer(l.build(Compression::Gzip))
        .cmd(&["cat", "/platform"])
        .build()
}

/// An index (OCI) or manifest list (Docker) over linux/amd64 and linux/arm64/v8
/// [`platform_image`]s.
pub fn multiarch_index(format: Format) -> Index {
    IndexBuilder::new(format)
        .image(platform_image(format, Platform::linux_amd64()))
        .image(platform_image(format, Platform::linux_arm64()))
        .build()
}

/// A fast deterministic PRNG (xorshift64*) for incompressible test data.
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// About `total_mb` MiB of incompressible data over 5 gzip layers (plus busybox), built in a few
/// seconds (gzip level 1).
pub fn large_image(total_mb: usize) -> Image {
    let layers = 5;
    let per_layer = total_mb * 1024 * 1024 / layers;
    let mut b = ImageBuilder::new(Format::Oci).layer(busybox_layer(Compression::Gzip));
    for i in 0..layers {
        let mut l = LayerBuilder::new();
        l.dir("data");
        // Several files per layer so the tar has structure.
        let files = 4;
        for f in 0..files {
            let data = prng_bytes((i * files + f) as u64 + 1, per_layer / files);
            l.file(&format!("data/l{i}-f{f}.bin"), &data);
        }
        b = b.layer(l.build_with_level(Compression::Gzip, Some(1)));
    }
    b.cmd(&["sh"]).build()
}

fn hostile(build: impl FnOnce(&mut LayerBuilder)) -> Image {
    let mut l = LayerBuilder::new();
    l.dir("ok").file("ok/file", b"harmless\n");
    build(&mut l);
    ImageBuilder::new(Format::Oci)
        .layer(l.build(Compression::Gzip))
        .cmd(&["sh"])
        .build()
}

/// A layer with entries `../../evil` and `ok/../../evil2`.
pub fn traversal_image() -> Image {
    hostile(|l| {
        l.raw_entry("../../evil", b'0', "", b"escaped via ..\n");
        l.raw_entry("ok/../../evil2", b'0', "", b"escaped via ok/..\n");
    })
}

/// A layer with entries `/etc/crius-evil` and `/tmp/crius-evil`.
pub fn absolute_path_image() -> Image {
    hostile(|l| {
        l.raw_entry("/etc/crius-evil", b'0', "", b"absolute path\n");
        l.raw_entry("/tmp/crius-evil", b'0', "", b"absolute path\n");
    })
}

/// `link -> /tmp` then `link/evil`; `up -> ../../..` then `up/evil`.
pub fn symlink_escape_image() -> Image {
    hostile(|l| {
        l.raw_entry("link", b'2', "/tmp", b"");
        l.raw_entry(
            "link/crius-evil",
            b'0',
            "",
            b"written through an absolute symlink\n",
        );
        l.raw_entry("up", b'2', "../../..", b"");
        l.raw_entry(
            "up/crius-evil",
            b'0',
            "",
            b"written through a relative symlink\n",
        );
    })
}

/// Hard links to `../../../etc/passwd` and `/etc/shadow`.
pub fn hardlink_escape_image() -> Image {
    hostile(|l| {
        l.raw_entry("passwd-link", b'1', "../../../etc/passwd", b"");
        l.raw_entry("shadow-link", b'1', "/etc/shadow", b"");
    })
}

/// Source of the setuid probe: prints the real and effective uid, `<ruid> <euid>`.
const SETUID_PROBE_C: &str = r#"#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }
"#;

/// Busybox plus `/bin/suid-probe`, a static C program installed setuid root (mode 04755)
/// printing `<ruid> <euid>`. Run as uid 1000 it prints `1000 0` when the setuid bit takes
/// effect and `1000 1000` under no_new_privs. (A setuid copy of busybox does not work as a
/// probe: Debian's busybox drops the effective uid for applets such as `id`.) Built with the
/// host's `gcc -static` (Debian: gcc and libc6-dev). Its `/etc/group` also makes `user`
/// (1000) a member of `probe` (4000), for the supplemental-groups policy.
pub fn setuid_probe_image() -> Image {
    let dir = tempfile::tempdir().expect("temp dir for the setuid probe");
    let src = dir.path().join("probe.c");
    let bin = dir.path().join("probe");
    std::fs::write(&src, SETUID_PROBE_C).expect("writing probe.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("running gcc (the setuid probe needs gcc and libc6-dev)");
    assert!(
        out.status.success(),
        "gcc -static probe.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = std::fs::read(&bin).expect("reading the compiled probe");
    let mut l = LayerBuilder::new();
    l.dir("bin")
        .file_with("bin/suid-probe", &probe, EntryMeta::mode(0o4755))
        .dir("etc")
        .file(
            "etc/group",
            b"root:x:0:\nnobody:x:65534:\nuser:x:1000:\nprobe:x:4000:user\n",
        );
    ImageBuilder::new(Format::Oci)
        .layer(busybox_layer(Compression::Gzip))
        .layer(l.build(Compression::Gzip))
        .cmd(&["sh"])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic() {
        assert_eq!(
            busybox_image().manifest_digest,
            busybox_image().manifest_digest
        );
        assert_eq!(
            multilayer_whiteouts_image().manifest_digest,
            multilayer_whiteouts_image().manifest_digest
        );
        assert_eq!(zstd_image().manifest_digest, zstd_image().manifest_digest);
    }

    #[test]
    fn media_types() {
        let z = zstd_image();
        let m: Value = serde_json::from_slice(&z.manifest).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], MT_OCI_LAYER_ZSTD);
        let d = docker_schema2_image();
        let m: Value = serde_json::from_slice(&d.manifest).unwrap();
        assert_eq!(m["mediaType"], MT_DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], MT_DOCKER_CONFIG);
        assert_eq!(m["layers"][1]["mediaType"], MT_DOCKER_LAYER_GZIP);
        let c: Value = serde_json::from_slice(&d.config).unwrap();
        assert_eq!(c["config"]["StopSignal"], "SIGINT");
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn hostile_names_are_raw() {
        let img = traversal_image();
        let tar = flate2::read::GzDecoder::new(img.layers[0].blob.as_slice());
        let mut a = tar::Archive::new(tar);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
            .collect();
        assert!(names.contains(&"../../evil".to_string()), "{names:?}");
    }
}
