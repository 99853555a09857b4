//! Runs the criusctl binary against fake CRI services on a temporary Unix socket.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};

use crius_proto::v1::images_server::{Images, ImagesServer};
use crius_proto::v1::{LayerProgress, LayerState, PullProgress, PullWithProgressRequest};
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use k8s_cri::v1::*;
use tokio::net::UnixListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const BUSYBOX_ID: &str = "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a";
const PAUSE_ID: &str = "sha256:e6f1816883972d4be47bd48879a08919b96afcd344132622e4d444987919323c";

#[derive(Clone, Default)]
struct FakeImages {
    images: Arc<Mutex<Vec<Image>>>,
    pulled: Arc<Mutex<Vec<String>>>,
}

impl FakeImages {
    fn with_sample() -> Self {
        let fake = Self::default();
        fake.images.lock().unwrap().extend([
            Image {
                id: BUSYBOX_ID.into(),
                repo_tags: vec![
                    "docker.io/library/busybox:latest".into(),
                    "docker.io/library/busybox:1.36".into(),
                ],
                repo_digests: vec!["docker.io/library/busybox@sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c".into()],
                size: 4_264_016,
                ..Default::default()
            },
            Image {
                id: PAUSE_ID.into(),
                repo_tags: vec!["registry.k8s.io/pause:3.10".into()],
                repo_digests: vec![],
                size: 320_368,
                pinned: true,
                ..Default::default()
            },
        ]);
        fake
    }

    fn find(&self, reference: &str) -> Option<Image> {
        self.images
            .lock()
            .unwrap()
            .iter()
            .find(|i| {
                i.id == reference
                    || i.id
                        .strip_prefix("sha256:")
                        .is_some_and(|h| h.starts_with(reference))
                    || i.repo_tags.iter().any(|t| t == reference)
            })
            .cloned()
    }
}

fn spec_image(spec: Option<ImageSpec>) -> String {
    spec.map(|s| s.image).unwrap_or_default()
}

#[tonic::async_trait]
impl ImageService for FakeImages {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .map(|f| spec_image(f.image))
            .unwrap_or_default();
        let images = if filter.is_empty() {
            self.images.lock().unwrap().clone()
        } else {
            self.find(&filter).into_iter().collect()
        };
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = self.find(&spec_image(request.image));
        let mut info = std::collections::HashMap::new();
        if request.verbose && image.is_some() {
            info.insert(
                "info".into(),
                r#"{"architecture":"amd64","os":"linux"}"#.into(),
            );
        }
        Ok(Response::new(ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        let auth = request.auth.unwrap_or_default();
        let image = spec_image(request.image);
        self.pulled
            .lock()
            .unwrap()
            .push(format!("cri {image} {}:{}", auth.username, auth.password));
        Ok(Response::new(PullImageResponse {
            image_ref: BUSYBOX_ID.into(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let id = spec_image(request.into_inner().image);
        // criusctl must send the resolved id, not the name the user typed.
        if !id.starts_with("sha256:") {
            return Err(Status::invalid_argument(format!(
                "expected an id, got {id}"
            )));
        }
        self.images.lock().unwrap().retain(|i| i.id != id);
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp: 1_700_000_000_000_000_000,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: "/var/lib/crius/images".into(),
                }),
                used_bytes: Some(UInt64Value { value: 123 }),
                inodes_used: Some(UInt64Value { value: 7 }),
            }],
            container_filesystems: vec![],
        }))
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<PullProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Images for FakeImages {
    type PullWithProgressStream = ProgressStream;

    async fn pull_with_progress(
        &self,
        request: Request<PullWithProgressRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let request = request.into_inner();
        if request.image.contains("missing") {
            return Err(Status::not_found(format!("{} not found", request.image)));
        }
        self.pulled.lock().unwrap().push(format!(
            "crius {} {}:{}",
            request.image, request.username, request.password
        ));
        let layer = |downloaded, state: LayerState| LayerProgress {
            digest: "sha256:aaaa".into(),
            downloaded,
            total: 100,
            state: state as i32,
        };
        let messages = vec![
            Ok(PullProgress {
                reference: request.image.clone(),
                layers: vec![layer(0, LayerState::Waiting)],
                ..Default::default()
            }),
            Ok(PullProgress {
                reference: request.image.clone(),
                layers: vec![layer(50, LayerState::Downloading)],
                ..Default::default()
            }),
            Ok(PullProgress {
                reference: request.image,
                layers: vec![layer(100, LayerState::Done)],
                image_id: BUSYBOX_ID.into(),
                done: true,
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }
}

/// Pods and containers the fake runtime keeps; containers remember their log path.
#[derive(Default)]
struct RuntimeState {
    pods: Vec<PodSandbox>,
    containers: Vec<(Container, String)>,
    next_id: u32,
    updates: Vec<(String, LinuxContainerResources)>,
}

#[derive(Clone, Default)]
struct FakeRuntime {
    state: Arc<Mutex<RuntimeState>>,
}

impl FakeRuntime {
    fn set_container_state(&self, id: &str, state: ContainerState) {
        let mut s = self.state.lock().unwrap();
        if let Some((c, _)) = s.containers.iter_mut().find(|(c, _)| c.id == id) {
            c.state = state as i32;
        }
    }
}

/// A 64-hex-digit id, distinct per call, with a recognisable prefix.
fn new_id(state: &mut RuntimeState, prefix: &str) -> String {
    state.next_id += 1;
    format!(
        "{prefix}{:0>width$x}",
        state.next_id,
        width = 64 - prefix.len()
    )
}

fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

const NANOS_2023: i64 = 1_700_000_000_000_000_000;

/// Implements RuntimeService with the given methods; the listed RPCs, which the tests do
/// not need, answer Unimplemented. The impl is emitted whole so that `async_trait` sees
/// the generated methods.
macro_rules! runtime_service {
    ({ $($item:item)* } $($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl RuntimeService for FakeRuntime {
            $($item)*
            $(
                async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

runtime_service! {
{
    type GetContainerEventsStream = EventStream;

    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crius".into(),
            runtime_version: "0.1.0-test".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                }],
            }),
            info: [("config".to_owned(), r#"{"root":"/var/lib/crius"}"#.to_owned())].into(),
            runtime_handlers: vec![],
            features: None,
        }))
    }

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("get_container_events"))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("no config"))?;
        let mut state = self.state.lock().unwrap();
        let id = new_id(&mut state, "b0d");
        state.pods.push(PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: PodSandboxState::SandboxReady as i32,
            created_at: NANOS_2023,
            labels: config.labels,
            annotations: config.annotations,
            runtime_handler: request.runtime_handler,
        });
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let mut state = self.state.lock().unwrap();
        let pod = state
            .pods
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| Status::not_found(format!("pod {id} not found")))?;
        pod.state = PodSandboxState::SandboxNotready as i32;
        for (c, _) in state.containers.iter_mut().filter(|(c, _)| c.pod_sandbox_id == id) {
            c.state = ContainerState::ContainerExited as i32;
        }
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let mut state = self.state.lock().unwrap();
        state.pods.retain(|p| p.id != id);
        state.containers.retain(|(c, _)| c.pod_sandbox_id != id);
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let pod = state
            .pods
            .iter()
            .find(|p| p.id == request.pod_sandbox_id)
            .ok_or_else(|| Status::not_found(format!("pod {} not found", request.pod_sandbox_id)))?;
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            info.insert("info".to_owned(), r#"{"pid":4242,"runtimeSpec":{"ociVersion":"1.2.0"}}"#.to_owned());
        }
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: pod.id.clone(),
                metadata: pod.metadata.clone(),
                state: pod.state,
                created_at: pod.created_at,
                network: Some(PodSandboxNetworkStatus {
                    ip: "10.88.0.5".into(),
                    additional_ips: vec![],
                }),
                linux: Some(LinuxPodSandboxStatus {
                    namespaces: Some(Namespace {
                        options: Some(NamespaceOption {
                            network: NamespaceMode::Pod as i32,
                            pid: NamespaceMode::Container as i32,
                            ipc: NamespaceMode::Pod as i32,
                            ..Default::default()
                        }),
                    }),
                }),
                labels: pod.labels.clone(),
                annotations: pod.annotations.clone(),
                runtime_handler: pod.runtime_handler.clone(),
            }),
            info,
            containers_statuses: vec![],
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .state
            .lock()
            .unwrap()
            .pods
            .iter()
            .filter(|p| p.id.starts_with(&filter.id))
            .filter(|p| filter.state.as_ref().is_none_or(|s| s.state == p.state))
            .filter(|p| labels_match(&p.labels, &filter.label_selector))
            .cloned()
            .collect();
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let sandbox = request.sandbox_config.unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        if !state.pods.iter().any(|p| p.id == request.pod_sandbox_id) {
            return Err(Status::not_found("no such pod"));
        }
        let id = new_id(&mut state, "c0c");
        let mut labels = config.labels.clone();
        if let Some(m) = &sandbox.metadata {
            labels.insert("io.kubernetes.pod.name".into(), m.name.clone());
        }
        let log_path = Path::new(&sandbox.log_directory)
            .join(&config.log_path)
            .display()
            .to_string();
        state.containers.push((
            Container {
                id: id.clone(),
                pod_sandbox_id: request.pod_sandbox_id,
                metadata: config.metadata,
                image: config.image,
                image_ref: BUSYBOX_ID.into(),
                state: ContainerState::ContainerCreated as i32,
                created_at: NANOS_2023,
                labels,
                annotations: config.annotations,
                image_id: BUSYBOX_ID.into(),
            },
            log_path,
        ));
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.set_container_state(&id, ContainerState::ContainerRunning);
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.set_container_state(&id, ContainerState::ContainerExited);
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.state.lock().unwrap().containers.retain(|(c, _)| c.id != id);
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .state
            .lock()
            .unwrap()
            .containers
            .iter()
            .map(|(c, _)| c)
            .filter(|c| c.id.starts_with(&filter.id))
            .filter(|c| c.pod_sandbox_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| filter.state.as_ref().is_none_or(|s| s.state == c.state))
            .filter(|c| labels_match(&c.labels, &filter.label_selector))
            .cloned()
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let state = self.state.lock().unwrap();
        let (c, log_path) = state
            .containers
            .iter()
            .find(|(c, _)| c.id == request.container_id)
            .ok_or_else(|| Status::not_found(format!("container {} not found", request.container_id)))?;
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            info.insert("info".to_owned(), r#"{"pid":4343}"#.to_owned());
        }
        Ok(Response::new(ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: c.id.clone(),
                metadata: c.metadata.clone(),
                state: c.state,
                created_at: c.created_at,
                image: c.image.clone(),
                image_ref: c.image_ref.clone(),
                labels: c.labels.clone(),
                log_path: log_path.clone(),
                ..Default::default()
            }),
            info,
        }))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let (stdout, stderr, exit_code) = match request.cmd.first().map(String::as_str) {
            Some("echo") => (format!("{}\n", request.cmd[1..].join(" ")), String::new(), 0),
            Some("fail") => (String::new(), format!("failing after {}s\n", request.timeout), 3),
            _ => (String::new(), "unknown command\n".to_owned(), 127),
        };
        Ok(Response::new(ExecSyncResponse {
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            exit_code,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        self.state
            .lock()
            .unwrap()
            .updates
            .push((request.container_id, request.linux.unwrap_or_default()));
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }
}
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
}

/// A fake runtime on a fresh socket; `with_crius` adds crius's own Images service.
struct Fake {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    images: FakeImages,
    runtime: FakeRuntime,
}

async fn start(with_crius: bool) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("crius.sock");
    let images = FakeImages::with_sample();
    let runtime = FakeRuntime::default();
    let listener = UnixListener::bind(&socket).unwrap();
    let mut router = tonic::transport::Server::builder()
        .add_service(ImageServiceServer::new(images.clone()))
        .add_service(RuntimeServiceServer::new(runtime.clone()));
    if with_crius {
        router = router.add_service(ImagesServer::new(images.clone()));
    }
    tokio::spawn(router.serve_with_incoming(UnixListenerStream::new(listener)));
    Fake {
        _dir: dir,
        socket,
        images,
        runtime,
    }
}

async fn criusctl(socket: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_criusctl"))
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env_remove("CRIUS_ENDPOINT")
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .env_remove("IMAGE_SERVICE_ENDPOINT")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn version_prints_like_crictl() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["version"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Version:  0.1.0\nRuntimeName:  crius\nRuntimeVersion:  0.1.0-test\nRuntimeApiVersion:  v1\n"
    );
}

#[tokio::test]
async fn images_table_quiet_and_json() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["images"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
IMAGE                       TAG                 IMAGE ID            SIZE
docker.io/library/busybox   latest              beae173ccac6a       4.26MB
docker.io/library/busybox   1.36                beae173ccac6a       4.26MB
registry.k8s.io/pause       3.10                e6f1816883972       320kB
"
    );

    let out = criusctl(&fake.socket, &["images", "-q"]).await;
    assert_eq!(stdout(&out), format!("{BUSYBOX_ID}\n{PAUSE_ID}\n"));

    let out = criusctl(
        &fake.socket,
        &["images", "-o", "json", "registry.k8s.io/pause:3.10"],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["images"][0]["id"], PAUSE_ID);
    assert_eq!(doc["images"][0]["size"], "320368");
    assert_eq!(doc["images"][0]["pinned"], true);
    assert_eq!(doc["images"][0]["repoDigests"], serde_json::json!([]));
}

#[tokio::test]
async fn rmi_resolves_the_id_and_reports_tags() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["rmi", "docker.io/library/busybox:latest"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Deleted: docker.io/library/busybox:latest\nDeleted: docker.io/library/busybox:1.36\n"
    );
    assert!(fake.images.find(BUSYBOX_ID).is_none());

    let out = criusctl(&fake.socket, &["rmi", "nope:latest"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such image nope:latest"),
        "{}",
        stderr(&out)
    );

    let out = criusctl(&fake.socket, &["rmi", "-a", "-q"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(fake.images.images.lock().unwrap().is_empty());
}

#[tokio::test]
async fn inspecti_found_and_missing() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["inspecti", "registry.k8s.io/pause:3.10"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["id"], PAUSE_ID);
    assert_eq!(doc["info"]["imageSpec"]["os"], "linux");

    let out = criusctl(&fake.socket, &["inspecti", "docker.io/library/missing:1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "criusctl: no such image \"docker.io/library/missing:1\" present\n"
    );
}

#[tokio::test]
async fn imagefsinfo_is_protojson() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["imagefsinfo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fs = &doc["status"]["imageFilesystems"][0];
    assert_eq!(fs["usedBytes"]["value"], "123");
    assert_eq!(fs["inodesUsed"]["value"], "7");
    assert_eq!(fs["fsId"]["mountpoint"], "/var/lib/crius/images");
    assert_eq!(fs["timestamp"], "1700000000000000000");
    assert_eq!(doc["status"]["containerFilesystems"], serde_json::json!([]));
}

#[tokio::test]
async fn info_merges_config() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["info"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["conditions"][0]["type"], "RuntimeReady");
    assert_eq!(doc["config"]["root"], "/var/lib/crius");
}

#[tokio::test]
async fn pull_streams_progress_then_falls_back_to_cri() {
    let fake = start(true).await;
    let out = criusctl(&fake.socket, &["pull", "busybox", "--creds", "me:pw"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Image is up to date for {BUSYBOX_ID}\n")
    );
    assert_eq!(*fake.images.pulled.lock().unwrap(), ["crius busybox me:pw"]);

    let out = criusctl(&fake.socket, &["pull", "missing"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "criusctl: NotFound: missing not found\n");

    // Another CRI runtime: no crius.v1.Images, so PullImage is used.
    let plain = start(false).await;
    let out = criusctl(&plain.socket, &["pull", "busybox", "--no-progress"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Image is up to date for {BUSYBOX_ID}\n")
    );
    assert_eq!(*plain.images.pulled.lock().unwrap(), ["cri busybox :"]);
}

#[tokio::test]
async fn connection_failure_names_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let out = criusctl(&socket, &["images"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "criusctl: connecting to unix://{}",
            socket.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn pull_draws_bars_on_a_terminal() {
    // util-linux `script` gives the binary a pseudo-terminal; skip where it is missing.
    if !Path::new("/usr/bin/script").exists() {
        return;
    }
    let fake = start(true).await;
    let command = format!(
        "{} -r unix://{} pull busybox",
        env!("CARGO_BIN_EXE_criusctl"),
        fake.socket.display()
    );
    let out = tokio::process::Command::new("/usr/bin/script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("aaaa"), "no bar for the layer: {text:?}");
    // The result gets its own line below the bars.
    assert!(text.contains("\nImage is up to date for"), "{text:?}");
}

/// Writes crictl-style configs into `dir`; the pod's log directory is `dir` itself.
fn write_configs(dir: &Path, image: &str) -> (String, String) {
    let pod = dir.join("pod.json");
    std::fs::write(
        &pod,
        format!(
            r#"{{
    "metadata": {{"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "u1"}},
    "log_directory": "{}",
    "labels": {{"app": "web"}},
    "linux": {{"security_context": {{"namespace_options": {{"network": 2}}}}}}
}}"#,
            dir.display()
        ),
    )
    .unwrap();
    let container = dir.join("container.yaml");
    std::fs::write(
        &container,
        format!(
            "metadata:\n  name: shell\nimage:\n  image: {image}\ncommand: [top]\nlog_path: shell.log\n"
        ),
    )
    .unwrap();
    (container.display().to_string(), pod.display().to_string())
}

fn line(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out).trim_end().to_owned()
}

#[tokio::test]
async fn pod_and_container_lifecycle() {
    let fake = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let (container_config, pod_config) =
        write_configs(dir.path(), "docker.io/library/busybox:latest");
    let s = &fake.socket;

    let pod = line(&criusctl(s, &["runp", &pod_config, "--runtime", "runc"]).await);
    assert!(pod.starts_with("b0d") && pod.len() == 64, "{pod}");

    let out = criusctl(s, &["pods"]).await;
    let table = line(&out);
    let mut rows = table.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("POD ID              CREATED")
    );
    let row = rows.next().unwrap();
    assert!(row.starts_with(&pod[..13]), "{row}");
    assert!(row.contains(" ago ") && row.contains("Ready") && row.contains("nginx-sandbox"));
    assert!(row.ends_with("runc"), "{row}");
    assert_eq!(line(&criusctl(s, &["pods", "-q"]).await), pod);
    assert_eq!(
        line(&criusctl(s, &["pods", "-q", "--state", "notready"]).await),
        ""
    );
    assert_eq!(
        line(&criusctl(s, &["pods", "-q", "--label", "app=web"]).await),
        pod
    );
    assert_eq!(
        line(&criusctl(s, &["pods", "-q", "--name", "redis"]).await),
        ""
    );

    let out = criusctl(s, &["pods", "-o", "json"]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["items"][0]["state"], "SANDBOX_READY");
    assert_eq!(doc["items"][0]["createdAt"], "1700000000000000000");
    assert_eq!(doc["items"][0]["runtimeHandler"], "runc");

    let out = criusctl(s, &["inspectp", &pod]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["state"], "SANDBOX_READY");
    assert_eq!(
        doc["status"]["linux"]["namespaces"]["options"]["pid"],
        "CONTAINER"
    );
    assert_eq!(doc["info"]["pid"], 4242);

    let ctr = line(&criusctl(s, &["create", &pod, &container_config, &pod_config]).await);
    assert!(ctr.starts_with("c0c"), "{ctr}");
    // Without -a only running containers are listed.
    assert_eq!(line(&criusctl(s, &["ps", "-q"]).await), "");
    assert_eq!(line(&criusctl(s, &["ps", "-a", "-q"]).await), ctr);
    assert_eq!(line(&criusctl(s, &["start", &ctr]).await), ctr);

    let table = line(&criusctl(s, &["ps"]).await);
    let mut rows = table.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("CONTAINER           IMAGE")
    );
    let row = rows.next().unwrap();
    assert!(row.starts_with(&ctr[..13]), "{row}");
    assert!(row.contains("docker.io/library/busybox:latest"));
    assert!(row.contains("Running") && row.contains("shell"));
    assert!(
        row.contains(&pod[..13]) && row.ends_with("nginx-sandbox"),
        "{row}"
    );
    assert_eq!(line(&criusctl(s, &["ps", "-q", "--pod", &pod]).await), ctr);
    assert_eq!(
        line(&criusctl(s, &["ps", "-q", "--state", "exited"]).await),
        ""
    );

    let out = criusctl(s, &["ps", "-o", "json"]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["containers"][0]["state"], "CONTAINER_RUNNING");
    assert_eq!(doc["containers"][0]["podSandboxId"], pod);

    let out = criusctl(s, &["inspect", &ctr]).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"]["state"], "CONTAINER_RUNNING");
    assert_eq!(doc["info"]["pid"], 4343);

    // exec: output passed through, the command's exit status kept.
    let out = criusctl(s, &["exec", "-s", &ctr, "echo", "-n", "hi"]).await;
    assert_eq!(line(&out), "-n hi");
    let out = criusctl(s, &["exec", "--timeout", "5", &ctr, "fail"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "failing after 5s\n");

    // logs: the file from ContainerStatus.log_path, streams split, --tail.
    std::fs::write(
        dir.path().join("shell.log"),
        "2024-01-01T00:00:00.1Z stdout F one\n\
         2024-01-01T00:00:00.2Z stderr F err\n\
         2024-01-01T00:00:00.3Z stdout P tw\n\
         2024-01-01T00:00:00.4Z stdout F o\n",
    )
    .unwrap();
    let out = criusctl(s, &["logs", &ctr]).await;
    assert_eq!(line(&out), "one\ntwo");
    assert_eq!(stderr(&out), "err\n");
    let out = criusctl(s, &["logs", "--tail", "1", "--timestamps", &ctr]).await;
    assert_eq!(line(&out), "2024-01-01T00:00:00.3Z two");

    let out = criusctl(
        s,
        &[
            "update",
            "--memory",
            "1048576",
            "--cpu-quota",
            "50000",
            &ctr,
        ],
    )
    .await;
    assert_eq!(line(&out), ctr);
    {
        let state = fake.runtime.state.lock().unwrap();
        let (id, resources) = &state.updates[0];
        assert_eq!(id, &ctr);
        assert_eq!(resources.memory_limit_in_bytes, 1_048_576);
        assert_eq!(resources.cpu_quota, 50_000);
    }

    // rm of a running container needs -f.
    let out = criusctl(s, &["rm", &ctr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    assert_eq!(line(&criusctl(s, &["stop", "-t", "2", &ctr]).await), ctr);
    assert_eq!(
        line(&criusctl(s, &["ps", "-a", "--state", "exited", "-q"]).await),
        ctr
    );
    assert_eq!(line(&criusctl(s, &["rm", &ctr]).await), ctr);
    assert_eq!(line(&criusctl(s, &["ps", "-a", "-q"]).await), "");

    // rmp of a ready pod needs -f; stopp then rmp works.
    let out = criusctl(s, &["rmp", &pod]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        line(&criusctl(s, &["stopp", &pod]).await),
        format!("Stopped sandbox {pod}")
    );
    assert_eq!(
        line(&criusctl(s, &["rmp", &pod]).await),
        format!("Removed sandbox {pod}")
    );
    assert_eq!(line(&criusctl(s, &["pods", "-q"]).await), "");
}

#[tokio::test]
async fn rm_and_rmp_force_all() {
    let fake = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let (container_config, pod_config) =
        write_configs(dir.path(), "docker.io/library/busybox:latest");
    let s = &fake.socket;
    let pod = line(&criusctl(s, &["runp", &pod_config]).await);
    let ctr = line(&criusctl(s, &["create", &pod, &container_config, &pod_config]).await);
    line(&criusctl(s, &["start", &ctr]).await);
    assert_eq!(line(&criusctl(s, &["rm", "-a", "-f"]).await), ctr);
    assert_eq!(
        line(&criusctl(s, &["rmp", "-a", "--force"]).await),
        format!("Removed sandbox {pod}")
    );
    let state = fake.runtime.state.lock().unwrap();
    assert!(state.pods.is_empty() && state.containers.is_empty());
}

#[tokio::test]
async fn run_pulls_a_missing_image() {
    let fake = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let (container_config, pod_config) =
        write_configs(dir.path(), "docker.io/library/nginx:latest");
    let s = &fake.socket;
    let ctr = line(&criusctl(s, &["run", &container_config, &pod_config]).await);
    assert_eq!(
        *fake.images.pulled.lock().unwrap(),
        ["crius docker.io/library/nginx:latest :"]
    );
    assert_eq!(line(&criusctl(s, &["ps", "-q"]).await), ctr);

    // Present already: no second pull.
    let (container_config, _) = write_configs(dir.path(), "docker.io/library/busybox:latest");
    line(&criusctl(s, &["run", &container_config, &pod_config]).await);
    assert_eq!(fake.images.pulled.lock().unwrap().len(), 1);
    assert_eq!(fake.runtime.state.lock().unwrap().pods.len(), 2);
}

#[tokio::test]
async fn logs_follow_until_the_container_exits() {
    let fake = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let (container_config, pod_config) =
        write_configs(dir.path(), "docker.io/library/busybox:latest");
    let s = &fake.socket;
    let pod = line(&criusctl(s, &["runp", &pod_config]).await);
    let ctr = line(&criusctl(s, &["create", &pod, &container_config, &pod_config]).await);
    line(&criusctl(s, &["start", &ctr]).await);
    let log = dir.path().join("shell.log");
    std::fs::write(&log, "2024-01-01T00:00:00Z stdout F before\n").unwrap();

    let follower = tokio::spawn({
        let socket = fake.socket.clone();
        let ctr = ctr.clone();
        async move { criusctl(&socket, &["logs", "-f", &ctr]).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"2024-01-01T00:00:01Z stdout F after\n2024-01-01T00:00:02Z stderr F bye\n")
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        !follower.is_finished(),
        "logs -f ended while the container runs"
    );
    fake.runtime
        .set_container_state(&ctr, ContainerState::ContainerExited);
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), follower)
        .await
        .expect("logs -f did not end after the container exited")
        .unwrap();
    assert_eq!(line(&out), "before\nafter");
    assert_eq!(stderr(&out), "bye\n");
}

#[tokio::test]
async fn bad_config_names_the_file() {
    let fake = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.json");
    std::fs::write(
        &pod,
        r#"{"linux": {"security_context": {"namespace_options": {"network": "SIDEWAYS"}}}}"#,
    )
    .unwrap();
    let out = criusctl(&fake.socket, &["runp", pod.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("pod.json") && err.contains("SIDEWAYS"),
        "{err}"
    );
    assert!(fake.runtime.state.lock().unwrap().pods.is_empty());
}
