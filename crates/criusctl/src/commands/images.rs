//! `criusctl images`: ListImages as crictl's table, ids, JSON or YAML.

use anyhow::Result;
use k8s_cri::v1::{Image, ImageFilter, ListImagesRequest};

use super::{image_spec, print_listing};
use crate::cli::ImagesArgs;
use crate::client::Context;
use crate::format::{self, Table};

const NONE: &str = "<none>";

pub async fn run(ctx: &Context, args: &ImagesArgs) -> Result<()> {
    let request = ListImagesRequest {
        filter: args.image.as_deref().map(|image| ImageFilter {
            image: Some(image_spec(image)),
        }),
    };
    ctx.trace("ListImagesRequest", &request);
    let response = ctx.image().await?.list_images(request).await?.into_inner();
    ctx.trace("ListImagesResponse", &response);
    print_listing(
        &response.images,
        |i| i.id.as_str(),
        args.quiet,
        args.output,
        "images",
        |images| table(images, args.digests, args.no_trunc),
    )
}

/// crictl's image table: one row per repo tag.
pub fn table(images: &[Image], digests: bool, no_trunc: bool) -> String {
    let mut t = Table::new();
    if digests {
        t.row(["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE"]);
    } else {
        t.row(["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    }
    for image in images {
        let (name, digest) = repo_digest(&image.repo_digests);
        let (id, digest) = if no_trunc {
            (image.id.as_str(), digest)
        } else {
            (format::truncate_id(&image.id), format::truncate_id(digest))
        };
        let size = format::human_size(image.size);
        for (repo, tag) in repo_tag_pairs(&image.repo_tags, name) {
            if digests {
                t.row([repo, tag, digest, id, size.as_str()]);
            } else {
                t.row([repo, tag, id, size.as_str()]);
            }
        }
    }
    t.render()
}

/// Name and digest of the first `name@digest`, `<none>` for both if there is none.
fn repo_digest(repo_digests: &[String]) -> (&str, &str) {
    match repo_digests.first() {
        None => (NONE, NONE),
        Some(d) => d.split_once('@').unwrap_or((d.as_str(), NONE)),
    }
}

/// Splits `repo:tag` pairs; an image pulled by digest has no tags and shows its name
/// with tag `<none>`.
fn repo_tag_pairs<'a>(repo_tags: &'a [String], name: &'a str) -> Vec<(&'a str, &'a str)> {
    if repo_tags.is_empty() {
        return vec![(name, NONE)];
    }
    repo_tags
        .iter()
        .map(|repo_tag| {
            // The tag follows the last ':' after the last '/', so a registry port is no tag.
            let slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
            match repo_tag[slash..].rfind(':') {
                Some(i) => {
                    let (repo, tag) = (&repo_tag[..slash + i], &repo_tag[slash + i + 1..]);
                    (if repo == NONE { name } else { repo }, tag)
                }
                None => (repo_tag.as_str(), NONE),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str], size: u64) -> Image {
        Image {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size,
            ..Default::default()
        }
    }

    const BUSYBOX_ID: &str =
        "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a";
    const BUSYBOX_DIGEST: &str = "docker.io/library/busybox@sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c";

    #[test]
    fn one_row_per_tag_and_none_for_untagged() {
        let images = [
            image(
                BUSYBOX_ID,
                &[
                    "docker.io/library/busybox:latest",
                    "docker.io/library/busybox:1.36",
                ],
                &[BUSYBOX_DIGEST],
                4_264_016,
            ),
            image(
                "sha256:0123456789abcdef0123",
                &[],
                &["localhost:5000/app@sha256:aaaabbbbccccddddeeee"],
                1_000_000_000,
            ),
        ];
        let expected = "\
IMAGE                       TAG                 IMAGE ID            SIZE
docker.io/library/busybox   latest              beae173ccac6a       4.26MB
docker.io/library/busybox   1.36                beae173ccac6a       4.26MB
localhost:5000/app          <none>              0123456789abc       1GB
";
        assert_eq!(table(&images, false, false), expected);
    }

    #[test]
    fn digest_column() {
        let images = [image(
            BUSYBOX_ID,
            &["docker.io/library/busybox:latest"],
            &[BUSYBOX_DIGEST],
            999,
        )];
        let expected = "\
IMAGE                       TAG                 DIGEST              IMAGE ID            SIZE
docker.io/library/busybox   latest              7b3ccabffc97d       beae173ccac6a       999B
";
        assert_eq!(table(&images, true, false), expected);
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        let tags = [
            "localhost:5000/app:v1".to_owned(),
            "localhost:5000/app".to_owned(),
        ];
        assert_eq!(
            repo_tag_pairs(&tags, "x"),
            [("localhost:5000/app", "v1"), ("localhost:5000/app", NONE)]
        );
    }
}
