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

struct FakeRuntime;

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
}
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
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
}

async fn start(with_crius: bool) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("crius.sock");
    let images = FakeImages::with_sample();
    let listener = UnixListener::bind(&socket).unwrap();
    let mut router = tonic::transport::Server::builder()
        .add_service(ImageServiceServer::new(images.clone()))
        .add_service(RuntimeServiceServer::new(FakeRuntime));
    if with_crius {
        router = router.add_service(ImagesServer::new(images.clone()));
    }
    tokio::spawn(router.serve_with_incoming(UnixListenerStream::new(listener)));
    Fake {
        _dir: dir,
        socket,
        images,
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
