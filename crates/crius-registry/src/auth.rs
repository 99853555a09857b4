//! Credentials and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use crate::error::RegistryError;

/// What the kubelet gave us for one pull.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in docker config), exchanged at the token
    /// service for an access token.
    IdentityToken(String),
    /// A bearer token sent to the registry as is.
    RegistryToken(String),
}

impl Credentials {
    /// From the CRI `AuthConfig` fields (empty string = unset). Precedence follows containerd:
    /// username/password, identity token, `auth` (base64 of "user:pass"), registry token.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Option<Credentials>, RegistryError> {
        if !username.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: username.into(),
                password: password.into(),
            }));
        }
        if !identity_token.is_empty() {
            return Ok(Some(Credentials::IdentityToken(identity_token.into())));
        }
        let auth = auth.trim();
        if !auth.is_empty() {
            let invalid = |reason: &str| RegistryError::InvalidCredentials {
                field: "auth",
                reason: reason.into(),
            };
            let decoded = STANDARD
                .decode(auth)
                .or_else(|_| STANDARD_NO_PAD.decode(auth.trim_end_matches('=')))
                .map_err(|_| invalid("not valid base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| invalid("decoded value is not UTF-8"))?;
            // The secret is never echoed back in the error.
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| invalid("decoded value is not \"user:password\""))?;
            return Ok(Some(Credentials::Basic {
                username: user.into(),
                password: pass.trim_matches('\0').into(),
            }));
        }
        if !registry_token.is_empty() {
            return Ok(Some(Credentials::RegistryToken(registry_token.into())));
        }
        Ok(None)
    }

    /// Whether credentials the kubelet gave for `server_address` belong to `registry` (a
    /// reference's registry, e.g. `docker.io` or `reg.example:5000`). As containerd's
    /// ParseAuth: when the address is set and names another registry, the credentials are not
    /// used. Docker Hub answers to several names.
    pub fn scoped_to(server_address: &str, registry: &str) -> bool {
        let addr = server_address.trim();
        if addr.is_empty() {
            return true;
        }
        let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        let registry = registry.to_ascii_lowercase();
        let hub = |h: &str| {
            matches!(
                h,
                "docker.io"
                    | "index.docker.io"
                    | "registry-1.docker.io"
                    | "registry.hub.docker.com"
            )
        };
        host == registry || (hub(&host) && hub(&registry))
    }

    /// The `Authorization` value for a Basic challenge, if these are Basic credentials.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// Secrets stay out of logs.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// One challenge of a `WWW-Authenticate` header. The scheme is lower-cased (`bearer`,
/// `basic`), as are parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): several challenges may share one header,
/// values may be quoted and hold commas and `\"` escapes.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let s: Vec<char> = header.chars().collect();
    let mut out: Vec<Challenge> = Vec::new();
    let mut i = 0;
    let is_sep = |c: char| c == ',' || c.is_whitespace();
    while i < s.len() {
        while i < s.len() && is_sep(s[i]) {
            i += 1;
        }
        let start = i;
        while i < s.len() && !is_sep(s[i]) && s[i] != '=' {
            i += 1;
        }
        let token: String = s[start..i].iter().collect();
        let mut j = i;
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        if j < s.len() && s[j] == '=' && !token.is_empty() && !out.is_empty() {
            // A parameter of the current challenge.
            i = j + 1;
            while i < s.len() && s[i].is_whitespace() {
                i += 1;
            }
            let mut value = String::new();
            if i < s.len() && s[i] == '"' {
                i += 1;
                while i < s.len() && s[i] != '"' {
                    if s[i] == '\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    value.push(s[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < s.len() && !is_sep(s[i]) {
                    value.push(s[i]);
                    i += 1;
                }
            }
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        } else {
            // A stray '=' (token68 padding); skip it.
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crius_error::{ErrorKind, HasKind};

    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );

        let c = parse_www_authenticate(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            c,
            vec![Challenge {
                scheme: "basic".into(),
                params: [("realm".to_string(), "Registry Realm".to_string())].into()
            }]
        );

        let c = parse_www_authenticate(
            r#"Basic realm="a, b" , BEARER Realm=https://x/t, error="insufficient_scope", scope="a:b:pull" x="q\"q""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://x/t"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[1].param("scope"), Some("a:b:pull"));
        assert_eq!(c[1].param("x"), Some("q\"q"));

        assert!(parse_www_authenticate("").is_empty());
        assert_eq!(
            parse_www_authenticate("Negotiate abc==")[0].scheme,
            "negotiate"
        );
    }

    #[test]
    fn server_address_scopes_credentials() {
        for (addr, registry, ok) in [
            ("", "reg.example", true),
            ("reg.example", "reg.example", true),
            ("https://reg.example:5000/v2/", "reg.example:5000", true),
            ("REG.example", "reg.example", true),
            ("https://index.docker.io/v1/", "docker.io", true),
            ("registry-1.docker.io", "docker.io", true),
            ("other.example", "reg.example", false),
            ("reg.example:5000", "reg.example", false),
            ("https://reg.example.evil/", "reg.example", false),
            ("docker.io", "quay.io", false),
        ] {
            assert_eq!(
                Credentials::scoped_to(addr, registry),
                ok,
                "{addr} for {registry}"
            );
        }
    }

    #[test]
    fn credentials_from_cri() {
        assert_eq!(Credentials::from_cri("", "", "", "", "").unwrap(), None);
        let basic = Some(Credentials::Basic {
            username: "user".into(),
            password: "pa:ss".into(),
        });
        assert_eq!(
            Credentials::from_cri("user", "pa:ss", "", "idt", "rt").unwrap(),
            basic
        );
        // base64("user:pa:ss")
        assert_eq!(
            Credentials::from_cri("", "", "dXNlcjpwYTpzcw==", "", "").unwrap(),
            basic
        );
        assert_eq!(
            Credentials::from_cri("", "", "dXNlcjpwYTpzcw", "", "").unwrap(),
            basic
        );
        assert_eq!(
            Credentials::from_cri("", "", "dXNlcjpwYTpzcw==", "idt", "").unwrap(),
            Some(Credentials::IdentityToken("idt".into()))
        );
        assert_eq!(
            Credentials::from_cri("", "", "", "", "rt").unwrap(),
            Some(Credentials::RegistryToken("rt".into()))
        );
        for bad in ["!!!notbase64", "bm9jb2xvbg=="] {
            let err = Credentials::from_cri("", "", bad, "", "").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains("auth"), "{err}");
            assert!(!err.to_string().contains("nocolon"), "secret leaked: {err}");
        }
        let dbg = format!("{:?}", basic.as_ref().unwrap());
        assert!(!dbg.contains("pa:ss"), "{dbg}");
    }
}
