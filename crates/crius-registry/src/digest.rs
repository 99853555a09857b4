//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and an incremental verifier.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::error::RegistryError;

/// The hash functions OCI images use. Ordered like their names so `Digest`'s `Ord` is the
/// string order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated digest: known algorithm, lowercase hex of the right length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `algorithm:hex`. Upper-case hex is rejected, as go-digest does, so that one
    /// content has exactly one spelling.
    pub fn parse(s: &str) -> Result<Digest, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidDigest {
            input: s.to_string(),
            reason: reason.into(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("missing algorithm prefix"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "" => return Err(invalid("missing algorithm prefix")),
            _ => return Err(invalid("unsupported digest algorithm")),
        };
        Digest::from_hex(algorithm, hex).map_err(|_| {
            invalid(&format!(
                "{algorithm} requires {} lowercase hex characters",
                algorithm.hex_len()
            ))
        })
    }

    /// Builds a digest from its parts, validating the hex.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Digest, RegistryError> {
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(RegistryError::InvalidDigest {
                input: format!("{algorithm}:{hex}"),
                reason: format!(
                    "{algorithm} requires {} lowercase hex characters",
                    algorithm.hex_len()
                ),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// The digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut v = DigestVerifier::new(algorithm);
        v.update(data);
        v.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part (the "encoded" part in OCI terms).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Digest, RegistryError> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Recognises an image id as the CRI uses it: `sha256:<64 hex>` or bare 64 hex. Such a string
/// must be looked up as an id, never parsed as a reference (`sha256:<hex>` would otherwise
/// parse as `docker.io/library/sha256` with the hex as its tag).
pub fn parse_image_id(s: &str) -> Option<Digest> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    Digest::from_hex(Algorithm::Sha256, hex).ok()
}

#[derive(Clone)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Incremental hashing of a stream, e.g. a layer as it is downloaded.
#[derive(Clone)]
pub struct DigestVerifier {
    hasher: Hasher,
    size: u64,
}

impl DigestVerifier {
    pub fn new(algorithm: Algorithm) -> DigestVerifier {
        let hasher = match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        DigestVerifier { hasher, size: 0 }
    }

    pub fn sha256() -> DigestVerifier {
        DigestVerifier::new(Algorithm::Sha256)
    }

    /// A verifier using the algorithm of `expected`, to compare against it at the end.
    pub fn for_digest(expected: &Digest) -> DigestVerifier {
        DigestVerifier::new(expected.algorithm())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// Bytes hashed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the data hashed is exactly the content of `expected`.
    pub fn verify(self, expected: &Digest) -> bool {
        self.finish() == *expected
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self.hasher {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

impl fmt::Debug for DigestVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestVerifier")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_display_round_trip() {
        let d = Digest::parse(EMPTY256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(EMPTY256.parse::<Digest>().unwrap(), d);
        let s512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Digest::parse(&s512).unwrap().to_string(), s512);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("md5:{}", "a".repeat(32)),
            &"a".repeat(64),
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(
                crius_error::HasKind::kind(&err),
                crius_error::ErrorKind::InvalidArgument
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn verifier_matches_known_values() {
        let mut v = DigestVerifier::new(Algorithm::Sha256);
        assert_eq!(v.clone().finish().to_string(), EMPTY256);
        v.update(b"ab");
        v.update(b"c");
        assert_eq!(v.size(), 3);
        assert_eq!(
            v.finish().to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut v = DigestVerifier::for_digest(&Digest::parse(EMPTY256).unwrap());
        assert!(v.clone().verify(&Digest::parse(EMPTY256).unwrap()));
        v.update(b"x");
        assert!(!v.verify(&Digest::parse(EMPTY256).unwrap()));
        assert_eq!(DigestVerifier::sha256().finish().to_string(), EMPTY256);
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(
            d.hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn serde_as_string_and_ordering() {
        let d = Digest::parse(EMPTY256).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
        let a = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let b = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        assert!(a < d && d < b);
    }

    #[test]
    fn image_ids() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse_image_id(hex).unwrap().to_string(), EMPTY256);
        assert_eq!(parse_image_id(EMPTY256).unwrap().to_string(), EMPTY256);
        assert!(parse_image_id("busybox").is_none());
        assert!(parse_image_id(&hex[..12]).is_none());
        assert!(parse_image_id(&format!("sha512:{hex}")).is_none());
        assert!(parse_image_id(&hex.to_uppercase()).is_none());
    }
}
