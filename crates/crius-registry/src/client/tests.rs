//! Client tests against the in-process server of `crate::testserver`.

use std::collections::BTreeMap;

use base64::Engine as _;
use crius_error::{ErrorKind, HasKind};
use futures_util::StreamExt;

use super::*;
use crate::manifest::{Manifest, media_types as mt};
use crate::testserver::{Req, Resp, Server};

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
const LAYER: &[u8] = b"pretend this is a gzipped tar stream";

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::sha256_of(data),
        size: data.len() as u64,
        urls: vec![],
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn manifest() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::DOCKER_MANIFEST,
        "config": desc(mt::DOCKER_CONFIG, CONFIG),
        "layers": [desc(mt::DOCKER_LAYER_GZIP, LAYER)],
    }))
    .unwrap()
}

/// Serves `manifest()` for tag v1 and by digest, and both blobs, under `/v2/<repo>/`.
fn serve_content(req: &Req, repo: &str) -> Option<Resp> {
    let m = manifest();
    let md = Digest::sha256_of(&m).to_string();
    let path = req.path_only();
    let base = format!("/v2/{repo}/");
    let rest = path.strip_prefix(&base)?;
    if rest == "manifests/v1" || rest == format!("manifests/{md}") {
        return Some(
            Resp::new(200)
                .header("Content-Type", mt::DOCKER_MANIFEST)
                .header("Docker-Content-Digest", &md)
                .body(m),
        );
    }
    for data in [CONFIG, LAYER] {
        if rest == format!("blobs/{}", Digest::sha256_of(data)) {
            return Some(Resp::new(200).body(data));
        }
    }
    None
}

fn not_found() -> Resp {
    Resp::new(404)
        .header("Content-Type", "application/json")
        .body(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        )
}

fn reference(host: &str, rest: &str) -> Reference {
    Reference::parse(&format!("{host}/{rest}")).unwrap()
}

fn client(hosts: Vec<(String, HostOptions)>) -> Client {
    Client::new(&hosts.into_iter().collect()).unwrap()
}

async fn collect(mut s: BlobStream) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test]
async fn bearer_token_is_fetched_cached_and_not_forwarded_on_redirect() {
    let srv = Server::start(|req, base| {
        let path = req.path_only();
        if path == "/token" {
            if req.header("authorization") != Some(basic("user", "pass").as_str()) {
                return Resp::new(401).body(r#"{"details":"incorrect username or password"}"#);
            }
            return Resp::new(200).body(r#"{"token":"tok-1","expires_in":300}"#);
        }
        if path == "/storage/layer" {
            return Resp::new(200).body(LAYER);
        }
        if req.header("authorization") != Some("Bearer tok-1") {
            let challenge =
                format!(r#"Bearer realm="{base}/token",service="test registry",scope="repository:library/app:pull""#);
            return Resp::new(401).header("WWW-Authenticate", &challenge).body(r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
        }
        if path == format!("/v2/library/app/blobs/{}", Digest::sha256_of(LAYER)) {
            // Storage on "another host": localhost instead of 127.0.0.1, and another path.
            let port = base.rsplit(':').next().unwrap();
            return Resp::new(307).header("Location", &format!("http://localhost:{port}/storage/layer"));
        }
        serve_content(req, "library/app").unwrap_or_else(not_found)
    })
    .await;
    let creds = Credentials::Basic {
        username: "user".into(),
        password: "pass".into(),
    };
    let repo = client(vec![]).repository(&reference(&srv.host(), "library/app:v1"), Some(creds));

    let m = repo.get_manifest("v1").await.unwrap();
    assert_eq!(m.digest, Digest::sha256_of(&manifest()));
    assert_eq!(m.media_type, mt::DOCKER_MANIFEST);
    let Manifest::Image { config, layers } = parse_manifest(&m.media_type, &m.bytes).unwrap()
    else {
        panic!()
    };
    assert_eq!(repo.get_blob_bytes(&config).await.unwrap(), CONFIG);
    let blob = repo.open_blob(&layers[0]).await.unwrap();
    assert_eq!(blob.size, Some(LAYER.len() as u64));
    assert_eq!(collect(blob.stream).await.unwrap(), LAYER);
    // By digest too, with the same (cached) token.
    let by_digest = repo.get_manifest(&m.digest.to_string()).await.unwrap();
    assert_eq!(by_digest.bytes, m.bytes);

    let reqs = srv.requests();
    let tokens: Vec<&Req> = reqs.iter().filter(|r| r.path_only() == "/token").collect();
    assert_eq!(tokens.len(), 1, "token cached: {:?}", srv.paths());
    assert!(
        tokens[0].path.contains("service=test+registry")
            || tokens[0].path.contains("service=test%20registry")
    );
    assert!(
        tokens[0]
            .path
            .contains("scope=repository%3Alibrary%2Fapp%3Apull"),
        "{}",
        tokens[0].path
    );
    // Only the very first request was challenged; later ones carried the token up front.
    let unauthorized = reqs
        .iter()
        .filter(|r| r.path_only() != "/token" && r.header("authorization").is_none());
    let unauthorized: Vec<&str> = unauthorized.map(|r| r.path_only()).collect();
    assert_eq!(
        unauthorized,
        vec!["/v2/library/app/manifests/v1", "/storage/layer"]
    );
    let storage = reqs
        .iter()
        .find(|r| r.path_only() == "/storage/layer")
        .unwrap();
    assert!(
        storage.header("authorization").is_none(),
        "Authorization leaked across hosts"
    );
    assert!(reqs[0].header("accept").unwrap().contains(mt::OCI_INDEX));
}

#[tokio::test]
async fn identity_token_uses_oauth2_post() {
    let srv = Server::start(|req, base| {
        if req.path_only() == "/token" {
            let body = String::from_utf8_lossy(&req.body);
            let ok = req.method == "POST"
                && [
                    "grant_type=refresh_token",
                    "refresh_token=idt",
                    "client_id=crius",
                    "service=reg",
                ]
                .iter()
                .all(|p| body.contains(p))
                && body.contains("scope=repository%3Alibrary%2Fapp%3Apull");
            return if ok {
                Resp::new(200).body(r#"{"access_token":"tok-2"}"#)
            } else {
                Resp::new(400).body(format!("bad token request: {body}"))
            };
        }
        if req.header("authorization") != Some("Bearer tok-2") {
            return Resp::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{base}/token",service="reg""#),
            );
        }
        serve_content(req, "library/app").unwrap_or_else(not_found)
    })
    .await;
    let repo = client(vec![]).repository(
        &reference(&srv.host(), "library/app:v1"),
        Some(Credentials::IdentityToken("idt".into())),
    );
    repo.get_manifest("v1").await.unwrap();
}

#[tokio::test]
async fn basic_challenge_and_registry_token() {
    let srv = Server::start(|req, _| {
        let want = if req.path_only().starts_with("/v2/tok/") {
            "Bearer rt".to_string()
        } else {
            basic("u", "p")
        };
        if req.header("authorization") != Some(want.as_str()) {
            return Resp::new(401).header("WWW-Authenticate", r#"Basic realm="Registry Realm""#);
        }
        serve_content(req, "library/app")
            .or_else(|| serve_content(req, "tok/app"))
            .unwrap_or_else(not_found)
    })
    .await;
    let c = client(vec![]);
    let creds = Credentials::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    c.repository(&reference(&srv.host(), "library/app:v1"), Some(creds))
        .get_manifest("v1")
        .await
        .unwrap();

    // A registry token is sent directly, without waiting for a challenge.
    let before = srv.requests().len();
    let repo = c.repository(
        &reference(&srv.host(), "tok/app:v1"),
        Some(Credentials::RegistryToken("rt".into())),
    );
    repo.get_manifest("v1").await.unwrap();
    assert_eq!(srv.requests().len(), before + 1);

    // No credentials: Unauthenticated, naming the registry and repository.
    let err = c
        .repository(&reference(&srv.host(), "library/app:v1"), None)
        .get_manifest("v1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/library/app:v1", srv.host())) && msg.contains(&srv.url()),
        "{msg}"
    );
    assert!(msg.contains("401 Unauthorized"), "{msg}");
}

#[tokio::test]
async fn rejected_and_forbidden_credentials() {
    let srv = Server::start(|req, base| {
        if req.path_only() == "/token" {
            return if req.header("authorization") == Some(basic("u", "good").as_str()) {
                Resp::new(200).body(r#"{"token":"t"}"#)
            } else {
                Resp::new(401).body(r#"{"details":"incorrect username or password"}"#)
            };
        }
        if req.header("authorization") != Some("Bearer t") {
            return Resp::new(401).header("WWW-Authenticate", &format!(r#"Bearer realm="{base}/token""#));
        }
        Resp::new(403).body(r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#)
    })
    .await;
    let c = client(vec![]);
    let r = reference(&srv.host(), "library/x:v1");
    let bad = Credentials::Basic {
        username: "u".into(),
        password: "bad".into(),
    };
    let err = c
        .repository(&r, Some(bad))
        .get_manifest("v1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pulling {}/library/x:v1: registry {} rejected credentials: 401",
            srv.host(),
            srv.url()
        )),
        "{msg}"
    );
    assert!(msg.contains("incorrect username or password"), "{msg}");

    let good = Credentials::Basic {
        username: "u".into(),
        password: "good".into(),
    };
    let err = c
        .repository(&r, Some(good))
        .get_manifest("v1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(
        err.to_string()
            .contains("DENIED: requested access to the resource is denied"),
        "{err}"
    );
}

#[tokio::test]
async fn mirror_with_prefix_then_upstream() {
    let upstream =
        Server::start(|req, _| serve_content(req, "library/app").unwrap_or_else(not_found)).await;
    let mirror = Server::start(|req, _| {
        // The mirror has the manifest but not the config blob, and no tag v2.
        if req.path_only().contains("/blobs/") {
            return Resp::new(404)
                .body(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#);
        }
        if req.path_only().ends_with("/manifests/v1") {
            return serve_content(req, "cache/library/app").unwrap_or_else(not_found);
        }
        not_found()
    })
    .await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = HostOptions {
        mirrors: vec![format!("http://{dead}"), format!("{}/cache/", mirror.url())],
        fallback_to_upstream: true,
        ..Default::default()
    };
    let c = client(vec![(upstream.host(), cfg.clone())]);
    let repo = c.repository(&reference(&upstream.host(), "library/app:v1"), None);

    let m = repo.get_manifest("v1").await.unwrap();
    assert_eq!(m.digest, Digest::sha256_of(&manifest()));
    assert_eq!(mirror.paths(), vec!["/v2/cache/library/app/manifests/v1"]);
    let ns = format!("ns={}", upstream.host().replace(':', "%3A"));
    assert!(
        mirror.requests()[0].path.ends_with(&format!("?{ns}")),
        "{}",
        mirror.requests()[0].path
    );
    assert!(upstream.paths().is_empty());
    // The blob is asked of the mirror that answered first, then of the next endpoints.
    let config = desc(mt::DOCKER_CONFIG, CONFIG);
    assert_eq!(repo.get_blob_bytes(&config).await.unwrap(), CONFIG);
    assert_eq!(
        mirror.paths()[1],
        format!("/v2/cache/library/app/blobs/{}", config.digest)
    );
    assert_eq!(
        upstream.paths(),
        vec![format!("/v2/library/app/blobs/{}", config.digest)]
    );

    // Tag v2 is on no endpoint: the dead mirror's error says more than the 404s.
    let err = repo.get_manifest("v2").await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unavailable,
        "first non-404 error wins: {err}"
    );
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
    assert!(
        upstream
            .paths()
            .contains(&"/v2/library/app/manifests/v2".to_string())
    );

    // Without fallback the upstream is never asked.
    let cfg = HostOptions {
        mirrors: vec![format!("{}/cache", mirror.url())],
        fallback_to_upstream: false,
        ..cfg
    };
    let repo = client(vec![(upstream.host(), cfg)])
        .repository(&reference(&upstream.host(), "library/app:v2"), None);
    let before = upstream.requests().len();
    let err = repo.get_manifest("v2").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("library/app:v2") && err.to_string().contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
    assert_eq!(upstream.requests().len(), before);
}

#[tokio::test]
async fn digests_are_verified() {
    let other = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let srv = Server::start(move |req, _| {
        let p = req.path_only();
        if p.ends_with("/manifests/badheader") {
            let wrong = Digest::sha256_of(b"x").to_string();
            return Resp::new(200)
                .header("Content-Type", mt::OCI_INDEX)
                .header("Docker-Content-Digest", &wrong)
                .body(&other[..]);
        }
        if p.ends_with("/manifests/noheader") {
            // Generic content type: the media type comes from the document.
            return Resp::new(200)
                .header("Content-Type", "application/json")
                .body(&other[..]);
        }
        if p.contains("/manifests/sha256:") || p.contains("/blobs/") {
            // Always the wrong content (same length for blobs).
            return Resp::new(200).body(if p.contains("/blobs/") {
                CONFIG.to_ascii_uppercase()
            } else {
                other.to_vec()
            });
        }
        if p.ends_with("/manifests/huge") {
            return Resp::new(200).body(vec![b' '; MAX_MANIFEST_SIZE as usize + 1]);
        }
        not_found()
    })
    .await;
    let repo = client(vec![]).repository(&reference(&srv.host(), "a/b:v1"), None);
    let err = repo.get_manifest("badheader").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let m = repo.get_manifest("noheader").await.unwrap();
    assert_eq!(
        (m.digest, m.media_type.as_str()),
        (Digest::sha256_of(other), mt::OCI_INDEX)
    );
    let want = Digest::sha256_of(&manifest());
    let err = repo.get_manifest(&want.to_string()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(
        err.to_string().contains(&format!("expected {want}")),
        "{err}"
    );
    let err = repo.get_manifest("huge").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");

    let config = desc(mt::DOCKER_CONFIG, CONFIG);
    let err = repo.get_blob_bytes(&config).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    // A Content-Length that disagrees with the descriptor, and a body longer than it.
    let mut short = config.clone();
    short.size -= 1;
    assert!(matches!(
        repo.get_blob(&short).await.err().unwrap(),
        RegistryError::SizeMismatch { .. }
    ));
    let mut huge = config.clone();
    huge.size = MAX_BLOB_BYTES_SIZE + 1;
    assert_eq!(
        repo.get_blob_bytes(&huge).await.unwrap_err().kind(),
        ErrorKind::ResourceExhausted
    );
    // Bad tag or digest syntax never reaches the network.
    assert_eq!(
        repo.get_manifest("sha256:abc").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        repo.get_manifest("-bad").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn body_longer_than_descriptor_fails_the_stream() {
    // Without a Content-Length only the stream itself can notice.
    let srv = Server::start(|_, _| {
        Resp::new(200)
            .header("X-No-Length", "1")
            .body([LAYER, b"extra"].concat())
    })
    .await;
    let repo = client(vec![]).repository(&reference(&srv.host(), "a/b:v1"), None);
    let layer = desc(mt::DOCKER_LAYER_GZIP, LAYER);
    let blob = repo.open_blob(&layer).await.unwrap();
    assert_eq!(blob.size, None);
    let err = collect(blob.stream).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::SizeMismatch { actual, .. } if actual == LAYER.len() as u64 + 5),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::DataLoss);
}

#[tokio::test]
async fn foreign_layer_urls_after_404() {
    let foreign = Server::start(|req, _| {
        if req.path_only() == "/foreign/layer" {
            Resp::new(200).body(LAYER)
        } else {
            Resp::new(404)
        }
    })
    .await;
    let srv =
        Server::start(|_, _| Resp::new(404).body(r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#)).await;
    let repo = client(vec![])
        .with_foreign_layer_hosts(&[foreign.host()])
        .unwrap()
        .allow_foreign_loopback()
        .repository(
            &reference(&srv.host(), "a/b:v1"),
            Some(Credentials::RegistryToken("rt".into())),
        );
    let mut layer = desc(mt::DOCKER_FOREIGN_LAYER_GZIP, LAYER);
    layer.urls = vec![
        "ftp://example.com/x".into(),
        format!("{}/missing", foreign.url()),
        format!("{}/foreign/layer", foreign.url()),
    ];
    assert_eq!(
        collect(repo.get_blob(&layer).await.unwrap()).await.unwrap(),
        LAYER
    );
    assert!(
        foreign
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
    assert_eq!(srv.requests()[0].header("authorization"), Some("Bearer rt"));

    layer.urls.clear();
    let err = repo.get_blob(&layer).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&layer.digest.to_string())
            && err.to_string().contains("BLOB_UNKNOWN"),
        "{err}"
    );
}

#[tokio::test]
async fn foreign_urls_need_an_allowed_host_never_reach_loopback_nor_leak_bodies() {
    let foreign = Server::start(|_, _| Resp::new(500).body("SECRET-BODY-BYTES")).await;
    let srv =
        Server::start(|_, _| Resp::new(404).body(r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#)).await;
    let mut layer = desc(mt::DOCKER_FOREIGN_LAYER_GZIP, LAYER);
    layer.urls = vec![format!("{}/layer", foreign.url())];
    let r = reference(&srv.host(), "a/b:v1");

    // Default: no host is allowed.
    let err = client(vec![])
        .repository(&r, None)
        .get_blob(&layer)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("foreign_layer_hosts"), "{err}");
    // Allowed by name, but it is this host's loopback.
    let allowed = client(vec![])
        .with_foreign_layer_hosts(&[foreign.host()])
        .unwrap();
    let err = allowed
        .repository(&r, None)
        .get_blob(&layer)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(foreign.requests().is_empty(), "a refused url was fetched");

    // Reached (loopback allowed for the test): the error has the status, not the body.
    let err = client(vec![])
        .with_foreign_layer_hosts(&[foreign.host()])
        .unwrap()
        .allow_foreign_loopback()
        .repository(&r, None)
        .get_blob(&layer)
        .await
        .err()
        .unwrap();
    assert_eq!(foreign.requests().len(), 1);
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

/// Issue 10 item 5: the pull's credentials go to the registry, not to whoever else a
/// configuration or a challenge names.
#[tokio::test]
async fn credentials_reach_mirrors_only_when_configured_and_never_in_clear_by_default() {
    // A mirror that wants Basic credentials and records what it got.
    let mirror = Server::start(|req, _| {
        if req.header("authorization") == Some(basic("user", "pass").as_str()) {
            return serve_content(req, "library/app").unwrap_or_else(not_found);
        }
        Resp::new(401).header("WWW-Authenticate", r#"Basic realm="mirror""#)
    })
    .await;
    let creds = Credentials::Basic {
        username: "user".into(),
        password: "pass".into(),
    };
    let mirrored = |mirror_credentials: bool, declare_insecure: bool| {
        let mut hosts = vec![(
            "registry.example.test".to_string(),
            HostOptions {
                mirrors: vec![mirror.url()],
                fallback_to_upstream: false,
                mirror_credentials,
                ..Default::default()
            },
        )];
        if declare_insecure {
            hosts.push((
                mirror.host(),
                HostOptions {
                    insecure: true,
                    ..Default::default()
                },
            ));
        }
        client(hosts).repository(
            &reference("registry.example.test", "library/app:v1"),
            Some(creds.clone()),
        )
    };
    let sent_creds = || {
        mirror
            .requests()
            .iter()
            .filter(|r| r.header("authorization").is_some())
            .count()
    };

    // Not configured: the mirror never sees them.
    let err = mirrored(false, false).get_manifest("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    // Configured, but the mirror is plain HTTP without being declared insecure.
    let err = mirrored(true, false).get_manifest("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert_eq!(sent_creds(), 0, "credentials went to the mirror");
    // Configured and explicitly insecure.
    mirrored(true, true).get_manifest("v1").await.unwrap();
    assert!(sent_creds() > 0);
}

#[tokio::test]
async fn credentials_go_to_a_token_service_only_on_the_registry_host() {
    // A token service on another host name ("localhost" vs the registry's 127.0.0.1).
    let tokens = Server::start(|req, _| {
        if req.header("authorization").is_some() {
            Resp::new(200).body(r#"{"token":"with-creds"}"#)
        } else {
            Resp::new(200).body(r#"{"token":"anonymous"}"#)
        }
    })
    .await;
    let token_port = tokens.host().rsplit(':').next().unwrap().to_string();
    let srv = Server::start(move |req, _| match req.header("authorization") {
        Some("Bearer with-creds") | Some("Bearer anonymous") => {
            serve_content(req, "library/app").unwrap_or_else(not_found)
        }
        _ => {
            let challenge =
                format!(r#"Bearer realm="http://localhost:{token_port}/token",service="reg""#);
            Resp::new(401).header("WWW-Authenticate", &challenge)
        }
    })
    .await;
    let creds = Credentials::Basic {
        username: "user".into(),
        password: "pass".into(),
    };
    let repo = client(vec![]).repository(&reference(&srv.host(), "library/app:v1"), Some(creds));
    repo.get_manifest("v1").await.unwrap();
    assert!(!tokens.requests().is_empty());
    assert!(
        tokens
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "credentials went to a token service on another host"
    );
    assert!(
        srv.requests()
            .iter()
            .any(|r| r.header("authorization") == Some("Bearer anonymous"))
    );
}

#[test]
fn token_realm_rules() {
    let ep = |origin: &str, realms: &[&str]| Endpoint {
        origin: origin.into(),
        prefix: String::new(),
        http: reqwest::Client::new(),
        ns: None,
        creds: true,
        token_realms: realms.iter().map(|s| s.to_string()).collect(),
    };
    let ok =
        |ep: &Endpoint, realm: &str| realm_may_get_credentials(ep, &Url::parse(realm).unwrap());
    let hub = ep("https://registry-1.docker.io", &["auth.docker.io"]);
    assert!(ok(&hub, "https://auth.docker.io/token"));
    assert!(!ok(&hub, "http://auth.docker.io/token"), "clear text");
    assert!(!ok(&hub, "https://evil.example/token"));
    let own = ep("https://reg.example:5000", &[]);
    assert!(ok(&own, "https://reg.example/token"));
    assert!(ok(&own, "https://REG.example:8443/token"));
    assert!(!ok(&own, "https://other.example/token"));
    assert!(
        !ok(&own, "http://reg.example/token"),
        "https registry, http realm"
    );
    let plain = ep("http://127.0.0.1:5000", &[]);
    assert!(ok(&plain, "http://127.0.0.1:5001/token"));
    assert!(!ok(&plain, "http://localhost:5001/token"));
}

#[test]
fn internal_addresses_are_recognised() {
    for ip in [
        "127.0.0.1",
        "127.1.2.3",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ] {
        assert!(is_internal(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["10.0.0.1", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"] {
        assert!(!is_internal(ip.parse().unwrap()), "{ip}");
    }
}

#[tokio::test]
async fn unreachable_registry_is_unavailable() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let repo = client(vec![]).repository(&reference(&dead.to_string(), "a/b:v1"), None);
    let err = repo.get_manifest("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("http://{dead}")) && msg.contains("a/b:v1"),
        "{msg}"
    );
}

#[test]
fn endpoints_follow_config() {
    let eps = |c: &Client, r: &str| -> Vec<String> {
        let repo = c.repository(&Reference::parse(r).unwrap(), None);
        repo.inner
            .endpoints
            .iter()
            .map(|e| e.url("R", "manifests", "t"))
            .collect()
    };
    let c = client(vec![
        (
            "docker.io".into(),
            HostOptions {
                mirrors: vec!["https://m.example/pre/fix".into()],
                ..Default::default()
            },
        ),
        (
            "insecure.example".into(),
            HostOptions {
                insecure: true,
                ..Default::default()
            },
        ),
        (
            "airgap.example".into(),
            HostOptions {
                mirrors: vec!["http://10.0.0.1:5000".into()],
                fallback_to_upstream: false,
                skip_verify: true,
                ..Default::default()
            },
        ),
        (
            "127.0.0.1:5443".into(),
            HostOptions {
                skip_verify: true,
                ..Default::default()
            },
        ),
    ]);
    assert_eq!(
        eps(&c, "busybox"),
        vec![
            "https://m.example/v2/pre/fix/R/manifests/t?ns=docker.io",
            "https://registry-1.docker.io/v2/R/manifests/t"
        ]
    );
    assert_eq!(
        eps(&c, "localhost:5000/x"),
        vec!["http://localhost:5000/v2/R/manifests/t"]
    );
    assert_eq!(
        eps(&c, "127.0.0.1/x"),
        vec!["http://127.0.0.1/v2/R/manifests/t"]
    );
    // A loopback registry configured with TLS settings speaks HTTPS.
    assert_eq!(
        eps(&c, "127.0.0.1:5443/x"),
        vec!["https://127.0.0.1:5443/v2/R/manifests/t"]
    );
    assert_eq!(
        eps(&c, "[::1]:5000/x"),
        vec!["http://[::1]:5000/v2/R/manifests/t"]
    );
    assert_eq!(
        eps(&c, "quay.io/x"),
        vec!["https://quay.io/v2/R/manifests/t"]
    );
    assert_eq!(
        eps(&c, "insecure.example/x"),
        vec!["http://insecure.example/v2/R/manifests/t"]
    );
    assert_eq!(
        eps(&c, "airgap.example/x"),
        vec!["http://10.0.0.1:5000/v2/R/manifests/t?ns=airgap.example"]
    );
    let repo = c.repository(&Reference::parse("m.example/a/b").unwrap(), None);
    assert_eq!(repo.inner.endpoints[0].repo_path("a/b"), "a/b");
    assert_eq!(repo.name(), "m.example/a/b");
}

#[test]
fn bad_config_names_the_file() {
    let with =
        |cfg: HostOptions| Client::new(&[("r.example".to_string(), cfg)].into()).unwrap_err();
    let err = with(HostOptions {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    });
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("/nonexistent/ca.pem") && err.to_string().contains("r.example"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("crius-registry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = with(HostOptions {
        ca_file: Some(junk.clone()),
        ..Default::default()
    });
    assert!(err.to_string().contains("junk.pem"), "{err}");
    let err = with(HostOptions {
        client_cert: Some(junk.clone()),
        client_key: Some(junk.clone()),
        ..Default::default()
    });
    assert!(err.to_string().contains("junk.pem"), "{err}");
    let err = with(HostOptions {
        client_cert: Some(junk),
        ..Default::default()
    });
    assert!(err.to_string().contains("together"), "{err}");
    let err = with(HostOptions {
        mirrors: vec!["ftp://x".into()],
        ..Default::default()
    });
    assert!(err.to_string().contains("ftp://x"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn error_bodies_are_summarised() {
    assert_eq!(
        describe_error_body(br#"{"errors":[{"code":"A","message":"x"},{"code":"B"}]}"#),
        "A: x; B"
    );
    assert_eq!(
        describe_error_body(br#"{"details":"bad password"}"#),
        "bad password"
    );
    assert_eq!(
        describe_error_body(br#"{"error":"invalid_grant","error_description":"expired"}"#),
        "invalid_grant: expired"
    );
    assert_eq!(
        describe_error_body(b"  <html>oops</html> "),
        "<html>oops</html>"
    );
    assert_eq!(describe_error_body(b""), "empty body");
}

#[tokio::test]
async fn rejected_cached_token_is_refreshed_once() {
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = issued.clone();
    let srv = Server::start(move |req, base| {
        if req.path_only() == "/token" {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            return Resp::new(200).body(format!(r#"{{"token":"tok-{n}","expires_in":600}}"#));
        }
        // Blobs want a token newer than the one the manifest was fetched with.
        let want = if req.path_only().contains("/blobs/") {
            "Bearer tok-2"
        } else {
            "Bearer tok-1"
        };
        if req.header("authorization") != Some(want) {
            return Resp::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{base}/token",service="s""#),
            );
        }
        serve_content(req, "library/app").unwrap_or_else(not_found)
    })
    .await;
    let repo = client(vec![]).repository(&reference(&srv.host(), "library/app:v1"), None);
    repo.get_manifest("v1").await.unwrap();
    assert_eq!(
        repo.get_blob_bytes(&desc(mt::DOCKER_CONFIG, CONFIG))
            .await
            .unwrap(),
        CONFIG
    );
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Pushes with the plain registry API (monolithic blob uploads), then pulls with our client.
#[tokio::test]
async fn real_distribution_registry() {
    const BIN: &str = "/usr/bin/docker-registry";
    if !std::path::Path::new(BIN).exists() {
        eprintln!("skipping: {BIN} is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "crius-registry-distribution-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let _registry = tokio::process::Command::new(BIN)
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/v2/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "docker-registry did not start on {base}");

    let push_blob = |data: &'static [u8]| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/v2/test/img/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            let loc = if loc.starts_with('/') {
                format!("{base}{loc}")
            } else {
                loc
            };
            let sep = if loc.contains('?') { '&' } else { '?' };
            let url = format!("{loc}{sep}digest={}", Digest::sha256_of(data));
            let r = http.put(url).body(data).send().await.unwrap();
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
        }
    };
    push_blob(CONFIG).await;
    push_blob(LAYER).await;
    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": desc(mt::OCI_CONFIG, CONFIG),
        "layers": [desc(mt::OCI_LAYER_GZIP, LAYER)],
    }))
    .unwrap();
    let mut image_desc = desc(mt::OCI_MANIFEST, &image);
    image_desc.platform = Some(crate::manifest::host_platform());
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": [image_desc],
    }))
    .unwrap();
    for (tag, body, ct) in [
        ("img", &image, mt::OCI_MANIFEST),
        ("multi", &index, mt::OCI_INDEX),
    ] {
        let r = http
            .put(format!("{base}/v2/test/img/manifests/{tag}"))
            .header("Content-Type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }

    let repo = client(vec![]).repository(
        &reference(&format!("127.0.0.1:{port}"), "test/img:multi"),
        None,
    );
    let top = repo.get_manifest("multi").await.unwrap();
    assert_eq!(top.digest, Digest::sha256_of(&index));
    let Manifest::Index(list) = parse_manifest(&top.media_type, &top.bytes).unwrap() else {
        panic!()
    };
    let chosen =
        crate::manifest::select_platform(&list, &crate::manifest::host_platform()).unwrap();
    let m = repo.get_manifest(&chosen.digest.to_string()).await.unwrap();
    let Manifest::Image { config, layers } = parse_manifest(&m.media_type, &m.bytes).unwrap()
    else {
        panic!()
    };
    assert_eq!(repo.get_blob_bytes(&config).await.unwrap(), CONFIG);
    let blob = repo.open_blob(&layers[0]).await.unwrap();
    assert_eq!(blob.size, Some(LAYER.len() as u64));
    assert_eq!(collect(blob.stream).await.unwrap(), LAYER);

    let err = repo.get_manifest("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    let err = repo
        .get_blob(&desc(mt::OCI_LAYER, b"missing"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS mirror (docker-registry with a certificate from a throw-away CA): trusted through
/// `ca_file`, or with `skip_verify`, and refused otherwise.
#[tokio::test]
async fn tls_mirror_with_ca_file() {
    const BIN: &str = "/usr/bin/docker-registry";
    if !std::path::Path::new(BIN).exists() || !std::path::Path::new("/usr/bin/openssl").exists() {
        eprintln!("skipping: {BIN} or openssl is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("crius-registry-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let st = std::process::Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr && \
        printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext && \
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out srv.pem",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {d}/srv.pem\n    key: {d}/srv.key\n"
        ),
    )
    .unwrap();
    let _registry = tokio::process::Command::new(BIN)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mirror = format!("https://127.0.0.1:{port}");
    let with = |cfg: HostOptions| {
        let cfg = HostOptions {
            mirrors: vec![mirror.clone()],
            fallback_to_upstream: false,
            ..cfg
        };
        client(vec![("tls.example".into(), cfg)])
            .repository(&Reference::parse("tls.example/a/b").unwrap(), None)
    };
    let trusted = with(HostOptions {
        ca_file: Some(dir.join("ca.pem")),
        ..Default::default()
    });
    let mut last = None;
    for _ in 0..100 {
        match trusted.get_manifest("v1").await {
            Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
            other => {
                last = other.err();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The registry is empty: reaching "not found" proves the TLS handshake worked.
    assert_eq!(
        last.as_ref().map(|e| e.kind()),
        Some(ErrorKind::NotFound),
        "{last:?}"
    );
    let insecure = with(HostOptions {
        skip_verify: true,
        ..Default::default()
    });
    assert_eq!(
        insecure.get_manifest("v1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let untrusted = with(HostOptions::default());
    let err = untrusted.get_manifest("v1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains(&mirror), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repository_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Client>();
    shared::<Repository>();
    let repo = client(vec![]).repository(&Reference::parse("a/b").unwrap(), None);
    let d = desc(mt::OCI_LAYER, LAYER);
    send(&repo.get_manifest("v1"));
    send(&repo.get_blob(&d));
    send(&repo.open_blob(&d));
    send(&repo.get_blob_bytes(&d));
}
