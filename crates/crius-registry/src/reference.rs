//! Image references, normalised the way Docker and containerd do it
//! (distribution/reference `ParseNormalizedNamed`, plus the implicit `:latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::RegistryError;

pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalised reference: `registry/repository[:tag][@digest]`.
///
/// A reference with neither tag nor digest gets `latest`; one with only a digest has no tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `[::1]:5000`, ...
    pub registry: String,
    /// The path within the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Docker/containerd normalisation: "busybox" -> docker.io/library/busybox:latest.
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            input: s.to_string(),
            reason: reason.to_string(),
        };

        if s.is_empty() {
            return Err(invalid("repository name must have at least one component"));
        }
        // A bare image id is never a name: Docker refuses it so `docker pull <id>` is not
        // mistaken for an image called like that.
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("cannot specify 64-byte hexadecimal strings"));
        }

        let (registry, remainder) = split_registry(s);

        // Only the path (before any tag) must be lower case; the tag may not be.
        let remote_name = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(n, _)| n);
        if remote_name.to_lowercase() != remote_name {
            return Err(invalid("repository name must be lowercase"));
        }

        let (name_and_tag, digest) = match remainder.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (remainder.as_str(), None),
        };
        let (repository, tag) = match name_and_tag.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (name_and_tag, None),
        };
        if !valid_registry(&registry) || !repository.split('/').all(valid_path_component) {
            return Err(invalid("invalid reference format"));
        }
        if tag.is_some_and(|t| !valid_tag(t)) {
            return Err(invalid("invalid tag format"));
        }
        let digest = match digest {
            Some(d) => Some(Digest::parse(d).map_err(|e| match e {
                RegistryError::InvalidDigest { reason, .. } => {
                    invalid(&format!("invalid digest: {reason}"))
                }
                other => other,
            })?),
            None => None,
        };
        let tag = tag.map(str::to_string);
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(invalid(&format!(
                "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `docker.io/library/busybox:latest` when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `docker.io/library/busybox@sha256:...` (the "repo digest" the CRI reports).
    pub fn with_digest(&self, d: &Digest) -> String {
        format!("{}@{d}", self.name())
    }

    /// What to ask the registry for: the digest when there is one (it pins the content even if
    /// a tag is also given), else the tag.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Reference, RegistryError> {
        Reference::parse(s)
    }
}

/// distribution's `splitDockerDomain`: the first component is a registry when it looks like a
/// host (has `.` or `:`, is `localhost`, or has upper case, which a path never may).
fn split_registry(s: &str) -> (String, String) {
    let (mut registry, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), s.to_string()),
    };
    if registry == LEGACY_DEFAULT_REGISTRY {
        registry = DEFAULT_REGISTRY.to_string();
    }
    if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (registry, remainder)
}

/// `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?` joined by dots, or `[ipv6]`, then `:port`.
fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_lowercase()
}

/// `[\w][\w.-]{0,127}`
pub(crate) fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{HEX}");
        let cases: &[(&str, String)] = &[
            ("busybox", "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            ("user/repo", "docker.io/user/repo:latest".into()),
            ("docker.io/debian", "docker.io/library/debian:latest".into()),
            (
                "docker.io/library/debian",
                "docker.io/library/debian:latest".into(),
            ),
            (
                "index.docker.io/debian",
                "docker.io/library/debian:latest".into(),
            ),
            (
                "index.docker.io/docker/docker",
                "docker.io/docker/docker:latest".into(),
            ),
            ("localhost/debian", "localhost/debian:latest".into()),
            (
                "localhost/library/debian",
                "localhost/library/debian:latest".into(),
            ),
            ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1".into()),
            (
                "127.0.0.1:5000/debian",
                "127.0.0.1:5000/debian:latest".into(),
            ),
            ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest".into()),
            ("[::1]:5000/repo:tag", "[::1]:5000/repo:tag".into()),
            ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest".into()),
            ("xn--n3h.com/myimage", "xn--n3h.com/myimage:latest".into()),
            (
                "quay.io/a_b/c__d/e-f/g---h.i",
                "quay.io/a_b/c__d/e-f/g---h.i:latest".into(),
            ),
            // No '/': the first component is the image name, even when it looks like a host.
            ("192.168.0.1", "docker.io/library/192.168.0.1:latest".into()),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80".into()),
            ("localhost", "docker.io/library/localhost:latest".into()),
            ("localhost:5000", "docker.io/library/localhost:5000".into()),
            (
                "foo_bar.com:8080",
                "docker.io/library/foo_bar.com:8080".into(),
            ),
            (
                "foo/foo_bar.com:8080",
                "docker.io/foo/foo_bar.com:8080".into(),
            ),
            // Upper case in the first component makes it a registry.
            ("Docker/docker", "Docker/docker:latest".into()),
            (
                "busybox:UPPER_tag.-x",
                "docker.io/library/busybox:UPPER_tag.-x".into(),
            ),
            (
                &format!("docker.io/{HEX}"),
                format!("docker.io/library/{HEX}:latest"),
            ),
            // "sha256:<hex>" is a name with a tag here; parse_image_id catches it first.
            (&d, format!("docker.io/library/sha256:{HEX}")),
            (
                &format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                &format!("busybox:1@{d}"),
                format!("docker.io/library/busybox:1@{d}"),
            ),
            (
                &format!("localhost:5000/x@{d}"),
                format!("localhost:5000/x@{d}"),
            ),
        ];
        for (input, want) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&r.to_string(), want, "{input}");
            assert_eq!(
                &Reference::parse(want).unwrap(),
                &r,
                "{want} is a fixed point"
            );
        }
    }

    #[test]
    fn rejects_like_docker() {
        let long = format!("docker.io/library/{}", "a".repeat(240));
        let cases: &[(&str, &str)] = &[
            ("", "at least one component"),
            (":tag", "invalid reference format"),
            ("@sha256:abc", "invalid reference format"),
            (HEX, "64-byte hexadecimal"),
            ("Foo:bar", "repository name must be lowercase"),
            ("Uppercase", "repository name must be lowercase"),
            ("docker/Docker", "repository name must be lowercase"),
            (
                "docker.io/docker/Docker",
                "repository name must be lowercase",
            ),
            (
                "https://github.com/docker/docker",
                "invalid reference format",
            ),
            ("-docker", "invalid reference format"),
            ("-docker/docker", "invalid reference format"),
            ("-docker.io/docker/docker", "invalid reference format"),
            ("docker///docker", "invalid reference format"),
            ("docker.io/docker///docker", "invalid reference format"),
            ("a/b/", "invalid reference format"),
            ("a.b..c/d", "invalid reference format"),
            ("host:port/x", "invalid reference format"),
            ("[zz]:5000/x", "invalid reference format"),
            ("a__-b", "invalid reference format"),
            ("a___b", "invalid reference format"),
            ("busybox:", "invalid tag format"),
            ("busybox:-x", "invalid tag format"),
            ("busybox:.x", "invalid tag format"),
            ("busybox:a:b", "invalid tag format"),
            (
                &format!("busybox:{}", "a".repeat(129)),
                "invalid tag format",
            ),
            ("busybox@sha256:abc", "invalid digest"),
            ("busybox@md5:abc", "invalid digest"),
            (&long, "not be more than 255"),
        ];
        for (input, want) in cases {
            let err = Reference::parse(input).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("invalid image reference {input:?}: ")),
                "{msg}"
            );
            assert!(msg.contains(want), "{input}: {msg}");
            assert_eq!(
                crius_error::HasKind::kind(&err),
                crius_error::ErrorKind::InvalidArgument
            );
        }
        assert_eq!(
            Reference::parse("Foo:bar").unwrap_err().to_string(),
            r#"invalid image reference "Foo:bar": repository name must be lowercase"#
        );
    }

    #[test]
    fn accessors() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(
            r.tagged().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            r.with_digest(&d),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        assert_eq!(r.tag_or_digest(), "latest");
        let r = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.tag_or_digest(), d.to_string());
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tagged(), None);
        assert_eq!(r.digest.as_ref(), Some(&d));
    }
}
