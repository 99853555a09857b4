//! Pushing images to a [`Registry`] with the registry HTTP API (reqwest, no external tools).

use anyhow::{Context, Result, bail};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Client, RequestBuilder, StatusCode};

use crate::image::{Image, Index};
use crate::registry::Registry;

/// What a push stored.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:PORT/<repo>:<tag>`.
    pub reference: String,
    pub repo: String,
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Compressed layer blobs `(digest, size)` in manifest order.
    pub layers: Vec<(String, u64)>,
}

impl PushedImage {
    /// `127.0.0.1:PORT/<repo>@<manifest digest>`.
    pub fn by_digest(&self) -> String {
        let base = self
            .reference
            .rsplit_once(':')
            .map(|(b, _)| b)
            .unwrap_or(&self.reference);
        format!("{base}@{}", self.manifest_digest)
    }
}

#[derive(Debug, Clone)]
pub struct PushedIndex {
    pub reference: String,
    pub index_digest: String,
    pub images: Vec<PushedImage>,
}

/// An HTTP client for `registry`: trusts its CA and sends its Basic credentials.
pub struct RegistryClient {
    client: Client,
    base: String,
    creds: Option<(String, String)>,
}

impl RegistryClient {
    pub fn new(registry: &Registry) -> Result<RegistryClient> {
        let mut b = Client::builder().timeout(std::time::Duration::from_secs(120));
        if let Some(ca) = registry.ca_path() {
            let pem = std::fs::read(ca)?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(RegistryClient {
            client: b.build()?,
            base: registry.url(),
            creds: registry
                .credentials()
                .map(|(u, p)| (u.to_string(), p.to_string())),
        })
    }

    fn auth(&self, r: RequestBuilder) -> RequestBuilder {
        match &self.creds {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Uploads `data` as a blob (monolithic POST + PUT), skipping it if present. Returns its digest.
    /// The digest is computed from `data`; use [`RegistryClient::push_blob_as`] to lie.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Result<String> {
        let digest = crate::image::sha256_digest(data);
        self.push_blob_as(repo, &digest, data).await?;
        Ok(digest)
    }

    /// Uploads `data` claiming `digest`. The registry verifies it, so a mismatch fails here.
    pub async fn push_blob_as(&self, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
        let head = self
            .auth(
                self.client
                    .head(format!("{}/v2/{repo}/blobs/{digest}", self.base)),
            )
            .send()
            .await?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let start = self
            .auth(
                self.client
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
            )
            .send()
            .await
            .context("starting blob upload")?;
        if start.status() != StatusCode::ACCEPTED {
            bail!(
                "POST blobs/uploads/: {} {}",
                start.status(),
                start.text().await.unwrap_or_default()
            );
        }
        let loc = start
            .headers()
            .get(LOCATION)
            .context("upload without Location")?
            .to_str()?
            .to_string();
        let mut url = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let put = self
            .auth(self.client.put(url))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .context("finishing blob upload")?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "PUT blob {digest}: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// PUTs manifest bytes under `reference` (a tag or a digest) with `media_type`; returns the
    /// digest the registry reports.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String> {
        let resp = self
            .auth(
                self.client
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header(CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        if resp.status() != StatusCode::CREATED {
            bail!(
                "PUT manifest {repo}:{reference}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let d = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| crate::image::sha256_digest(bytes));
        Ok(d)
    }

    /// GETs a blob's bytes as served (corruption included).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let r = self
            .auth(
                self.client
                    .get(format!("{}/v2/{repo}/blobs/{digest}", self.base)),
            )
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET blob {digest}: {}", r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }

    /// GETs a manifest `(bytes, content type)`, accepting every manifest type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String)> {
        let accept = [
            crate::image::MT_OCI_MANIFEST,
            crate::image::MT_OCI_INDEX,
            crate::image::MT_DOCKER_MANIFEST,
            crate::image::MT_DOCKER_LIST,
        ]
        .join(", ");
        let r = self
            .auth(
                self.client
                    .get(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header("Accept", accept)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("GET manifest {repo}:{reference}: {}", r.status());
        }
        let ct = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((r.bytes().await?.to_vec(), ct))
    }

    /// DELETEs a manifest by digest.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let r = self
            .auth(
                self.client
                    .delete(format!("{}/v2/{repo}/manifests/{digest}", self.base)),
            )
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("DELETE manifest {digest}: {}", r.status());
        }
        Ok(())
    }

    /// Pushes config, layers and manifest of `image` under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) -> Result<PushedImage> {
        self.push_blob_as(repo, &image.config_digest, &image.config)
            .await?;
        for l in &image.layers {
            self.push_blob_as(repo, &l.digest, &l.blob).await?;
        }
        let manifest_digest = self
            .push_manifest(repo, tag, &image.manifest, image.manifest_media_type())
            .await?;
        if manifest_digest != image.manifest_digest {
            bail!(
                "registry computed {manifest_digest}, expected {}",
                image.manifest_digest
            );
        }
        Ok(PushedImage {
            reference: format!(
                "{}/{repo}:{tag}",
                self.base.split("://").nth(1).unwrap_or(&self.base)
            ),
            repo: repo.into(),
            tag: tag.into(),
            manifest_digest,
            config_digest: image.config_digest.clone(),
            layers: image
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size()))
                .collect(),
        })
    }

    /// Pushes every image of `index` by digest, then the index under `tag`.
    pub async fn push_index(&self, repo: &str, tag: &str, index: &Index) -> Result<PushedIndex> {
        let mut images = Vec::new();
        for img in &index.images {
            images.push(self.push_image(repo, &img.manifest_digest, img).await?);
        }
        let index_digest = self
            .push_manifest(repo, tag, &index.manifest, index.media_type())
            .await?;
        Ok(PushedIndex {
            reference: format!(
                "{}/{repo}:{tag}",
                self.base.split("://").nth(1).unwrap_or(&self.base)
            ),
            index_digest,
            images,
        })
    }
}

/// Pushes `image` to `registry` as `<repo>:<tag>`.
pub async fn push_image(
    registry: &Registry,
    repo: &str,
    tag: &str,
    image: &Image,
) -> Result<PushedImage> {
    RegistryClient::new(registry)?
        .push_image(repo, tag, image)
        .await
}

/// Pushes an index / manifest list and all its images.
pub async fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    index: &Index,
) -> Result<PushedIndex> {
    RegistryClient::new(registry)?
        .push_index(repo, tag, index)
        .await
}

/// Uploads raw bytes as a blob; returns `sha256:<hex>`.
pub async fn push_blob(registry: &Registry, repo: &str, data: &[u8]) -> Result<String> {
    RegistryClient::new(registry)?.push_blob(repo, data).await
}

/// PUTs arbitrary manifest bytes (e.g. one whose descriptor size is wrong).
pub async fn push_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    bytes: &[u8],
    media_type: &str,
) -> Result<String> {
    RegistryClient::new(registry)?
        .push_manifest(repo, reference, bytes, media_type)
        .await
}
