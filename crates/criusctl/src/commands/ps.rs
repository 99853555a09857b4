//! `criusctl ps`: ListContainers as crictl's table, ids, JSON or YAML; without `-a` only
//! running containers, as crictl.

use std::time::SystemTime;

use anyhow::Result;
use k8s_cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
};

use super::print_listing;
use crate::cli::{ContainerStateArg, PsArgs};
use crate::client::Context;
use crate::format::{self, Table};

/// The label kubelet puts the pod's name under.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

pub async fn run(ctx: &Context, args: &PsArgs) -> Result<()> {
    let request = ListContainersRequest {
        filter: Some(filter(args)),
    };
    ctx.trace("ListContainersRequest", &request);
    let response = ctx
        .runtime()
        .await?
        .list_containers(request)
        .await?
        .into_inner();
    ctx.trace("ListContainersResponse", &response);
    let mut containers = response.containers;
    if let Some(name) = &args.name {
        containers.retain(|c| {
            c.metadata
                .as_ref()
                .is_some_and(|m| m.name.contains(name.as_str()))
        });
    }
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    print_listing(
        &containers,
        |c| c.id.as_str(),
        args.quiet,
        args.listing.output,
        "containers",
        |containers| table(containers, args.listing.no_trunc, SystemTime::now()),
    )
}

fn filter(args: &PsArgs) -> ContainerFilter {
    let state = match (args.state, args.all) {
        (Some(ContainerStateArg::Created), _) => Some(ContainerState::ContainerCreated),
        (Some(ContainerStateArg::Running), _) | (None, false) => {
            Some(ContainerState::ContainerRunning)
        }
        (Some(ContainerStateArg::Exited), _) => Some(ContainerState::ContainerExited),
        (Some(ContainerStateArg::Unknown), _) => Some(ContainerState::ContainerUnknown),
        (None, true) => None,
    };
    ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state.map(|s| ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        label_selector: args.labels.iter().cloned().collect(),
    }
}

/// `Created`, `Running`, `Exited`, `Unknown`, as crictl's table.
pub fn state_label(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        Ok(ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

/// The image column: the reference, or a digest-like id truncated as crictl does.
fn image_column(container: &Container, no_trunc: bool) -> String {
    let image = container
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .unwrap_or_default();
    let is_digest = image
        .split_once(':')
        .is_some_and(|(algo, hex)| algo == "sha256" && hex.len() == 64);
    if is_digest && !no_trunc {
        format::truncate_id(image).to_owned()
    } else {
        image.to_owned()
    }
}

/// crictl's container table.
pub fn table(containers: &[Container], no_trunc: bool, now: SystemTime) -> String {
    let mut t = Table::new();
    t.row([
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]);
    for c in containers {
        let metadata = c.metadata.clone().unwrap_or_default();
        let (id, pod_id) = if no_trunc {
            (c.id.as_str(), c.pod_sandbox_id.as_str())
        } else {
            (
                format::truncate_id(&c.id),
                format::truncate_id(&c.pod_sandbox_id),
            )
        };
        let pod_name = c
            .labels
            .get(POD_NAME_LABEL)
            .map_or("unknown", String::as_str);
        t.row([
            id.to_owned(),
            image_column(c, no_trunc),
            format::ago(c.created_at, now),
            state_label(c.state).to_owned(),
            metadata.name,
            metadata.attempt.to_string(),
            pod_id.to_owned(),
            pod_name.to_owned(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use k8s_cri::v1::{ContainerMetadata, ImageSpec};

    use super::*;
    use crate::cli::{ListFormat, ListOutput};

    const NOW: u64 = 1_700_000_000;

    fn container(id: &str, image: &str, name: &str, state: ContainerState, age: u64) -> Container {
        Container {
            id: id.into(),
            pod_sandbox_id: "fedcba9876543210fedcba9876543210".into(),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            state: state as i32,
            created_at: ((NOW - age) * 1_000_000_000) as i64,
            ..Default::default()
        }
    }

    #[test]
    fn crictl_layout() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut shell = container(
            "0123456789abcdef0123456789abcdef",
            "docker.io/library/busybox:latest",
            "shell",
            ContainerState::ContainerRunning,
            45,
        );
        shell
            .labels
            .insert(POD_NAME_LABEL.into(), "nginx-sandbox".into());
        let containers = [
            shell,
            container(
                "abcdefabcdefabcdefabcdef",
                "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a",
                "init",
                ContainerState::ContainerExited,
                2 * 86400 + 10,
            ),
        ];
        let expected = "\
CONTAINER           IMAGE                              CREATED             STATE               NAME                ATTEMPT             POD ID              POD
0123456789abc       docker.io/library/busybox:latest   45 seconds ago      Running             shell               0                   fedcba9876543       nginx-sandbox
abcdefabcdefa       beae173ccac6a                      2 days ago          Exited              init                0                   fedcba9876543       unknown
";
        assert_eq!(table(&containers, false, now), expected);
        let full = table(&containers, true, now);
        assert!(
            full.contains(
                "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a"
            )
        );
        assert!(full.contains("fedcba9876543210fedcba9876543210"));
    }

    #[test]
    fn only_running_without_all() {
        let args = |all, state| PsArgs {
            all,
            id: None,
            pod: Some("p".into()),
            name: None,
            state,
            labels: vec![],
            quiet: false,
            listing: ListFormat {
                output: ListOutput::Table,
                no_trunc: false,
            },
        };
        let running = Some(ContainerStateValue {
            state: ContainerState::ContainerRunning as i32,
        });
        assert_eq!(filter(&args(false, None)).state, running);
        assert_eq!(filter(&args(true, None)).state, None);
        assert_eq!(
            filter(&args(false, Some(ContainerStateArg::Exited))).state,
            Some(ContainerStateValue {
                state: ContainerState::ContainerExited as i32
            })
        );
        assert_eq!(filter(&args(true, None)).pod_sandbox_id, "p");
    }
}
