//! OCI and Docker schema2 manifests and indexes, and choosing the host's platform in an index.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::RegistryError;

pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// The `Accept` header for manifest requests: everything `parse_manifest` understands.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
        application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json";
}

use media_types as mt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Alternative locations of foreign (non-distributable) layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// containerd's normalisation: OCI spelling of the architecture, the default variant of
    /// arm (v7) and arm64 (v8) made explicit, amd64 "v1" dropped.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_lowercase();
        let variant = self
            .variant
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_lowercase);
        let (arch, variant) = match (self.architecture.to_lowercase().as_str(), variant) {
            ("i386", v) => ("386".to_string(), v),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v.filter(|v| v != "v1")),
            ("aarch64" | "arm64", v) => {
                let v = match v.as_deref() {
                    None | Some("8" | "v8") => "v8".to_string(),
                    Some(other) => other.to_string(),
                };
                ("arm64".to_string(), Some(v))
            }
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", v) => {
                let v = match v.as_deref() {
                    None => "v7".to_string(),
                    Some(v) if !v.starts_with('v') => format!("v{v}"),
                    Some(v) => v.to_string(),
                };
                ("arm".to_string(), Some(v))
            }
            (other, v) => (other.to_string(), v),
        };
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    /// An OCI image manifest or Docker schema2 manifest.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Only the fields we need; serde ignores the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    // Present only in schema1.
    fs_layers: Option<serde_json::Value>,
}

/// Strips parameters and case from a Content-Type.
fn bare(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_known(media_type: &str) -> bool {
    [
        mt::OCI_MANIFEST,
        mt::OCI_INDEX,
        mt::DOCKER_MANIFEST,
        mt::DOCKER_MANIFEST_LIST,
        mt::DOCKER_SCHEMA1,
        mt::DOCKER_SCHEMA1_SIGNED,
    ]
    .contains(&media_type)
}

/// The media type to parse `bytes` as. A specific Content-Type wins; a generic one
/// (`application/json`, `text/plain`, none, ...) is replaced by the document's `mediaType`, or
/// guessed from its shape as containerd does for registries that omit both.
pub fn detect_media_type(content_type: &str, bytes: &[u8]) -> String {
    let header = bare(content_type);
    if is_known(&header) {
        return header;
    }
    let Ok(raw) = serde_json::from_slice::<Raw>(bytes) else {
        return header;
    };
    if let Some(m) = raw
        .media_type
        .as_deref()
        .map(bare)
        .filter(|m| !m.is_empty())
    {
        return m;
    }
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        mt::DOCKER_SCHEMA1.to_string()
    } else if raw.manifests.is_some() {
        mt::OCI_INDEX.to_string()
    } else if raw.config.is_some() {
        mt::OCI_MANIFEST.to_string()
    } else {
        header
    }
}

/// Parses a manifest or index. `media_type` is the Content-Type as received (it may be
/// generic; see [`detect_media_type`]).
pub fn parse_manifest(media_type: &str, bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let media_type = detect_media_type(media_type, bytes);
    let invalid = |reason: String| RegistryError::InvalidManifest {
        reference: None,
        media_type: media_type.clone(),
        reason,
    };
    let unsupported = |reason: &str| RegistryError::UnsupportedManifest {
        reference: None,
        media_type: media_type.clone(),
        reason: reason.into(),
    };
    let want_index = match media_type.as_str() {
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => true,
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => false,
        mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED => {
            return Err(unsupported(
                "Docker image manifest schema1 is not supported (deprecated; push the image again with a current client)",
            ));
        }
        _ => return Err(unsupported("not an image manifest or index")),
    };
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(invalid(format!(
            "schemaVersion {:?}, expected 2",
            raw.schema_version
        )));
    }
    // A document claiming another type than it was served as could make us interpret an index
    // as an image or vice versa (the content would no longer match what was signed or pinned).
    if let Some(m) = raw
        .media_type
        .as_deref()
        .map(bare)
        .filter(|m| !m.is_empty() && *m != media_type)
    {
        return Err(invalid(format!("document mediaType {m:?} differs")));
    }
    if want_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| invalid("missing \"manifests\"".into()))?;
        Ok(Manifest::Index(manifests))
    } else {
        let config = raw
            .config
            .ok_or_else(|| invalid("missing \"config\"".into()))?;
        let layers = raw
            .layers
            .ok_or_else(|| invalid("missing \"layers\"".into()))?;
        Ok(Manifest::Image { config, layers })
    }
}

/// The platform of this host in OCI spelling: linux/<arch>[/<variant>].
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8".to_string())),
        "arm" => ("arm", Some(arm_variant())),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        "mips" if cfg!(target_endian = "little") => ("mipsle", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: arch.to_string(),
        variant,
    }
}

/// The 32-bit ARM variant from the kernel's "CPU architecture" line (v7 when unknown).
fn arm_variant() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let arch = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("CPU architecture")
                .and_then(|r| r.split(':').nth(1))
        })
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    match arch.as_str() {
        "5" | "6" | "7" | "8" => format!("v{arch}"),
        "AArch64" => "v8".into(),
        _ => "v7".into(),
    }
}

/// The variants `want` can run, best first: its own, then older ones of the same
/// architecture (arm v7 runs v6 and v5; amd64 v3 runs v2 and v1).
fn compatible_variants(want: &Platform) -> Vec<Option<String>> {
    let own = want.variant.clone();
    let number = own
        .as_deref()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|n| n.parse::<u32>().ok());
    let mut out = vec![own];
    match (want.architecture.as_str(), number) {
        ("arm", Some(n)) => out.extend((5..n).rev().map(|i| Some(format!("v{i}")))),
        ("arm64", Some(n)) => out.extend((8..n).rev().map(|i| Some(format!("v{i}")))),
        ("amd64", Some(n)) => {
            out.extend((2..n).rev().map(|i| Some(format!("v{i}"))));
            out.push(None);
        }
        _ => {}
    }
    out
}

/// Picks the entry of `index` for `want`, like containerd's default platform matcher: the
/// os and architecture must be equal; an exact variant beats an older compatible one; among
/// equals the first entry wins. Entries without a platform and attestation manifests
/// (os "unknown") are never chosen.
pub fn select_platform<'a>(index: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let want = want.normalized();
    let ranks = compatible_variants(&want);
    index
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?.normalized();
            if p.os == "unknown" || p.os != want.os || p.architecture != want.architecture {
                return None;
            }
            let rank = ranks.iter().position(|v| *v == p.variant)?;
            Some((rank, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn entry(n: u8, platform: Option<(&str, &str, Option<&str>)>) -> Descriptor {
        Descriptor {
            media_type: mt::OCI_MANIFEST.into(),
            digest: Digest::parse(&d(n)).unwrap(),
            size: 100,
            urls: vec![],
            platform: platform.map(|(o, a, v)| Platform::new(o, a, v)),
            annotations: BTreeMap::new(),
        }
    }

    fn image_json(media_type: Option<&str>, config_type: &str, layer_type: &str) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType": "{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion": 2, {mt}
              "config": {{"mediaType": "{config_type}", "digest": "{}", "size": 7}},
              "layers": [{{"mediaType": "{layer_type}", "digest": "{}", "size": 9,
                          "urls": ["https://example.com/l"], "annotations": {{"a": "b"}}}}]}}"#,
            d(1),
            d(2)
        )
    }

    fn index_json(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType": "{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion": 2, {mt} "manifests": [
                {{"mediaType": "{}", "digest": "{}", "size": 3,
                  "platform": {{"architecture": "arm", "os": "linux", "variant": "v7", "os.version": "x"}}}},
                {{"mediaType": "{}", "digest": "{}", "size": 4,
                  "platform": {{"architecture": "unknown", "os": "unknown"}}}}]}}"#,
            mt::OCI_MANIFEST,
            d(3),
            mt::OCI_MANIFEST,
            d(4)
        )
    }

    #[test]
    fn parses_all_four_kinds() {
        let oci = image_json(Some(mt::OCI_MANIFEST), mt::OCI_CONFIG, mt::OCI_LAYER_GZIP);
        let Manifest::Image { config, layers } =
            parse_manifest(mt::OCI_MANIFEST, oci.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(config.size, 7);
        assert_eq!(config.digest.to_string(), d(1));
        assert_eq!(layers[0].urls, vec!["https://example.com/l".to_string()]);
        assert_eq!(layers[0].annotations["a"], "b");

        let docker = image_json(
            Some(mt::DOCKER_MANIFEST),
            mt::DOCKER_CONFIG,
            mt::DOCKER_LAYER_GZIP,
        );
        let m = parse_manifest(
            &format!("{}; charset=utf-8", mt::DOCKER_MANIFEST),
            docker.as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(m, Manifest::Image { ref layers, .. } if layers[0].media_type == mt::DOCKER_LAYER_GZIP)
        );

        for t in [mt::OCI_INDEX, mt::DOCKER_MANIFEST_LIST] {
            let Manifest::Index(list) = parse_manifest(t, index_json(Some(t)).as_bytes()).unwrap()
            else {
                panic!()
            };
            assert_eq!(list.len(), 2);
            assert_eq!(
                list[0].platform,
                Some(Platform::new("linux", "arm", Some("v7")))
            );
        }
    }

    #[test]
    fn generic_content_type_falls_back_to_document() {
        let docker = image_json(
            Some(mt::DOCKER_MANIFEST),
            mt::DOCKER_CONFIG,
            mt::DOCKER_LAYER_GZIP,
        );
        for ct in [
            "application/json",
            "",
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ] {
            assert_eq!(
                detect_media_type(ct, docker.as_bytes()),
                mt::DOCKER_MANIFEST
            );
            assert!(matches!(
                parse_manifest(ct, docker.as_bytes()).unwrap(),
                Manifest::Image { .. }
            ));
        }
        // OCI allows omitting mediaType: guess from the shape.
        let idx = index_json(None);
        assert_eq!(
            detect_media_type("application/json", idx.as_bytes()),
            mt::OCI_INDEX
        );
        let img = image_json(None, mt::OCI_CONFIG, mt::OCI_LAYER);
        assert_eq!(detect_media_type("", img.as_bytes()), mt::OCI_MANIFEST);
        assert!(matches!(
            parse_manifest(mt::OCI_MANIFEST, img.as_bytes()).unwrap(),
            Manifest::Image { .. }
        ));
    }

    #[test]
    fn rejects_schema1_and_junk() {
        let s1 = r#"{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": [], "history": []}"#;
        for ct in [
            mt::DOCKER_SCHEMA1_SIGNED,
            mt::DOCKER_SCHEMA1,
            "application/json",
        ] {
            let err = parse_manifest(ct, s1.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("schema1 is not supported"),
                "{err}"
            );
            assert_eq!(
                crius_error::HasKind::kind(&err),
                crius_error::ErrorKind::FailedPrecondition
            );
        }
        let err = parse_manifest(mt::OCI_MANIFEST, b"{not json").unwrap_err();
        assert_eq!(
            crius_error::HasKind::kind(&err),
            crius_error::ErrorKind::DataLoss
        );
        // An index served as an image manifest.
        let err = parse_manifest(mt::OCI_MANIFEST, index_json(Some(mt::OCI_INDEX)).as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
        let err = parse_manifest(
            mt::OCI_INDEX,
            image_json(None, mt::OCI_CONFIG, mt::OCI_LAYER).as_bytes(),
        );
        assert!(err.unwrap_err().to_string().contains("manifests"));
        let err = parse_manifest("application/vnd.example+json", b"{}").unwrap_err();
        assert_eq!(
            crius_error::HasKind::kind(&err),
            crius_error::ErrorKind::FailedPrecondition
        );
        let bad_digest =
            image_json(None, mt::OCI_CONFIG, mt::OCI_LAYER).replace(&d(1), "sha256:abc");
        assert!(parse_manifest(mt::OCI_MANIFEST, bad_digest.as_bytes()).is_err());
    }

    #[test]
    fn selects_platforms() {
        let list = vec![
            entry(1, None),
            entry(2, Some(("unknown", "unknown", None))),
            entry(3, Some(("linux", "amd64", None))),
            entry(4, Some(("linux", "arm", Some("v6")))),
            entry(5, Some(("linux", "arm", Some("v7")))),
            entry(6, Some(("linux", "arm64", Some("v8")))),
            entry(7, Some(("windows", "amd64", None))),
            entry(8, Some(("linux", "s390x", None))),
        ];
        let pick = |want: Platform| select_platform(&list, &want).map(|d| d.digest.to_string());
        assert_eq!(pick(Platform::new("linux", "amd64", None)), Some(d(3)));
        assert_eq!(pick(Platform::new("linux", "x86_64", None)), Some(d(3)));
        assert_eq!(
            pick(Platform::new("linux", "amd64", Some("v3"))),
            Some(d(3))
        );
        assert_eq!(pick(Platform::new("windows", "amd64", None)), Some(d(7)));
        assert_eq!(
            pick(Platform::new("linux", "arm64", Some("v8"))),
            Some(d(6))
        );
        assert_eq!(pick(Platform::new("linux", "arm64", None)), Some(d(6)));
        assert_eq!(pick(Platform::new("linux", "aarch64", None)), Some(d(6)));
        // v7 prefers v7 even though v6 comes first; v6 never takes v7.
        assert_eq!(pick(Platform::new("linux", "arm", Some("v7"))), Some(d(5)));
        assert_eq!(pick(Platform::new("linux", "arm", Some("v6"))), Some(d(4)));
        assert_eq!(pick(Platform::new("linux", "arm", Some("v5"))), None);
        assert_eq!(pick(Platform::new("linux", "ppc64le", None)), None);
        assert_eq!(pick(Platform::new("unknown", "unknown", None)), None);

        // arm64 entries without a variant match a v8 host, and v7 falls back to v6.
        let list = vec![
            entry(1, Some(("linux", "arm64", None))),
            entry(2, Some(("linux", "arm", Some("6")))),
        ];
        let pick = |want: Platform| select_platform(&list, &want).map(|d| d.digest.to_string());
        assert_eq!(
            pick(Platform::new("linux", "arm64", Some("v8"))),
            Some(d(1))
        );
        assert_eq!(pick(Platform::new("linux", "arm", Some("v7"))), Some(d(2)));
        // amd64 v2 entries are not for a plain amd64 host.
        let list = vec![entry(1, Some(("linux", "amd64", Some("v2"))))];
        assert!(select_platform(&list, &Platform::new("linux", "amd64", None)).is_none());
        assert!(select_platform(&list, &Platform::new("linux", "amd64", Some("v3"))).is_some());
    }

    #[test]
    fn host_platform_is_oci_spelling() {
        let p = host_platform();
        assert_eq!(p.os, "linux");
        assert!(!["x86_64", "aarch64"].contains(&p.architecture.as_str()));
        if p.architecture == "arm64" {
            assert_eq!(p.variant.as_deref(), Some("v8"));
        }
        assert_eq!(
            p.to_string().split('/').count(),
            if p.variant.is_some() { 3 } else { 2 }
        );
    }
}
