//! `criusctl pods`: ListPodSandbox as crictl's table, ids, JSON or YAML.

use std::time::SystemTime;

use anyhow::Result;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
};

use super::print_listing;
use crate::cli::{PodState, PodsArgs};
use crate::client::Context;
use crate::format::{self, Table};

pub async fn run(ctx: &Context, args: &PodsArgs) -> Result<()> {
    let request = ListPodSandboxRequest {
        filter: Some(filter(args)),
    };
    ctx.trace("ListPodSandboxRequest", &request);
    let response = ctx
        .runtime()
        .await?
        .list_pod_sandbox(request)
        .await?
        .into_inner();
    ctx.trace("ListPodSandboxResponse", &response);
    let mut pods = response.items;
    pods.retain(|pod| matches_names(pod, args));
    // Newest first, as crictl.
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    print_listing(
        &pods,
        |p| p.id.as_str(),
        args.quiet,
        args.listing.output,
        "items",
        |pods| table(pods, args.listing.no_trunc, SystemTime::now()),
    )
}

/// What the runtime filters: id, state, labels.
fn filter(args: &PodsArgs) -> PodSandboxFilter {
    PodSandboxFilter {
        id: args.id.clone().unwrap_or_default(),
        state: args.state.map(|state| PodSandboxStateValue {
            state: match state {
                PodState::Ready => PodSandboxState::SandboxReady,
                PodState::Notready => PodSandboxState::SandboxNotready,
            } as i32,
        }),
        label_selector: args.labels.iter().cloned().collect(),
    }
}

/// What crictl filters itself: name and namespace (substring matches).
fn matches_names(pod: &PodSandbox, args: &PodsArgs) -> bool {
    let metadata = pod.metadata.clone().unwrap_or_default();
    args.name
        .as_deref()
        .is_none_or(|name| metadata.name.contains(name))
        && args
            .namespace
            .as_deref()
            .is_none_or(|ns| metadata.namespace.contains(ns))
}

/// `Ready` / `NotReady`, as crictl's table.
pub fn state_label(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

/// crictl's pod table.
pub fn table(pods: &[PodSandbox], no_trunc: bool, now: SystemTime) -> String {
    let mut t = Table::new();
    t.row([
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for pod in pods {
        let metadata = pod.metadata.clone().unwrap_or_default();
        let id = if no_trunc {
            pod.id.as_str()
        } else {
            format::truncate_id(&pod.id)
        };
        let runtime = if pod.runtime_handler.is_empty() {
            "(default)"
        } else {
            pod.runtime_handler.as_str()
        };
        t.row([
            id.to_owned(),
            format::ago(pod.created_at, now),
            state_label(pod.state).to_owned(),
            metadata.name,
            metadata.namespace,
            metadata.attempt.to_string(),
            runtime.to_owned(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use k8s_cri::v1::PodSandboxMetadata;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn pod(id: &str, name: &str, ns: &str, state: PodSandboxState, age: u64) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: "uid".into(),
                namespace: ns.into(),
                attempt: 1,
            }),
            state: state as i32,
            created_at: ((NOW - age) * 1_000_000_000) as i64,
            ..Default::default()
        }
    }

    #[test]
    fn crictl_layout() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut kata = pod(
            "0123456789abcdef0123456789abcdef",
            "nginx-sandbox",
            "default",
            PodSandboxState::SandboxReady,
            150,
        );
        kata.runtime_handler = "kata".into();
        let pods = [
            kata,
            pod(
                "fedcba9876543210fedcba9876543210",
                "a-pod-with-a-rather-long-name",
                "kube-system",
                PodSandboxState::SandboxNotready,
                3 * 3600,
            ),
        ];
        let expected = "\
POD ID              CREATED             STATE               NAME                            NAMESPACE           ATTEMPT             RUNTIME
0123456789abc       2 minutes ago       Ready               nginx-sandbox                   default             1                   kata
fedcba9876543       3 hours ago         NotReady            a-pod-with-a-rather-long-name   kube-system         1                   (default)
";
        assert_eq!(table(&pods, false, now), expected);
        assert!(table(&pods, true, now).contains("0123456789abcdef0123456789abcdef   "));
    }

    #[test]
    fn client_side_name_filters() {
        let p = pod(
            "a",
            "nginx-sandbox",
            "default",
            PodSandboxState::SandboxReady,
            1,
        );
        let args = |name: Option<&str>, ns: Option<&str>| PodsArgs {
            id: None,
            name: name.map(Into::into),
            namespace: ns.map(Into::into),
            state: None,
            labels: vec![],
            quiet: false,
            listing: crate::cli::ListFormat {
                output: crate::cli::ListOutput::Table,
                no_trunc: false,
            },
        };
        assert!(matches_names(&p, &args(None, None)));
        assert!(matches_names(&p, &args(Some("nginx"), Some("default"))));
        assert!(!matches_names(&p, &args(Some("redis"), None)));
        assert!(!matches_names(&p, &args(None, Some("kube-system"))));
        let f = filter(&PodsArgs {
            state: Some(PodState::Notready),
            labels: vec![("app".into(), "web".into())],
            ..args(None, None)
        });
        assert_eq!(
            f.state.unwrap().state,
            PodSandboxState::SandboxNotready as i32
        );
        assert_eq!(f.label_selector["app"], "web");
    }
}
