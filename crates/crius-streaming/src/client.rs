//! The client side: upgrading a streaming URL to a SPDY session (criusctl uses it).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spdy::SpdyError;
use crate::spdy::session::Session;

/// Largest response head accepted from the server.
const MAX_HEAD: usize = 16 * 1024;

fn err(m: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(m.into())
}

/// Connects to `url` (http or https), asks to upgrade to SPDY/3.1 with `protocols` (most
/// preferred first), and returns the session and the protocol the server chose.
///
/// An https server's certificate is not verified, as crictl does not: the URL came over the
/// CRI socket, and its single-use token is the credential.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Session, String), SpdyError> {
    if let Some(rest) = url.strip_prefix("https://") {
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let tcp = tokio::net::TcpStream::connect(host).await?;
        let _ = tcp.set_nodelay(true);
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| err(format!("{url}: {e}")))?;
        let tls = tls_connector()?
            .connect(server, tcp)
            .await
            .map_err(|e| err(format!("TLS to {host}: {e}")))?;
        return upgrade(tls, host, path, protocols).await;
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err(format!("{url}: not an http:// or https:// streaming URL")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let s = tokio::net::TcpStream::connect(host).await?;
    let _ = s.set_nodelay(true);
    upgrade(s, host, path, protocols).await
}

use tokio_rustls::rustls;

/// Accepts any server certificate (see [`connect`]); signatures are still checked.
#[derive(Debug)]
struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, SpdyError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

async fn upgrade<S>(
    mut s: S,
    host: &str,
    path: &str,
    protocols: &[&str],
) -> Result<(Session, String), SpdyError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Byte by byte: nothing after the head may be swallowed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || head.len() > MAX_HEAD {
            return Err(err("the streaming server closed the connection"));
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        let status = head.lines().next().unwrap_or("").to_string();
        // The body, if any, says why.
        let mut body = vec![0u8; 1024];
        let n = s.read(&mut body).await.unwrap_or(0);
        return Err(err(format!(
            "upgrade refused: {status}: {}",
            String::from_utf8_lossy(&body[..n]).trim()
        )));
    }
    let protocol = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((Session::start(s)?, protocol))
}
