//! Command-line definitions only; behaviour lives in `commands`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The socket criusd listens on.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/crius/crius.sock";

#[derive(Debug, Parser)]
#[command(name = "criusctl", version, about = "Client for the crius CRI runtime")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Runtime endpoint: unix:///path or a plain socket path
    /// [default: $CONTAINER_RUNTIME_ENDPOINT, else unix:///run/crius/crius.sock]
    #[arg(
        short = 'r',
        long,
        env = "CRIUS_ENDPOINT",
        global = true,
        help_heading = "Global options"
    )]
    pub runtime_endpoint: Option<String>,

    /// Image endpoint [default: the runtime endpoint]
    #[arg(
        short = 'i',
        long,
        env = "IMAGE_SERVICE_ENDPOINT",
        global = true,
        help_heading = "Global options"
    )]
    pub image_endpoint: Option<String>,

    /// Timeout for the whole command, e.g. 30s, 2m, 1h30m; 0 means none. For exec it is
    /// the command's own timeout, for stop the grace period (as crictl's --timeout)
    /// [default: none for pull, run and logs -f; 30s otherwise]
    #[arg(long, global = true, help_heading = "Global options", value_parser = crate::format::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Print requests and responses to stderr
    #[arg(short = 'D', long, global = true, help_heading = "Global options")]
    pub debug: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the runtime's name and versions
    Version,
    /// Show the runtime's status and configuration
    Info(InfoArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// List images
    Images(ImagesArgs),
    /// Show the status of one or more images
    Inspecti(InspectiArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Show the image filesystem usage
    Imagefsinfo(ImagefsinfoArgs),
    /// Run a new pod sandbox from a config file
    Runp(RunpArgs),
    /// List pod sandboxes
    Pods(PodsArgs),
    /// Show the status of one or more pod sandboxes
    Inspectp(InspectpArgs),
    /// Stop one or more pod sandboxes
    Stopp(StoppArgs),
    /// Remove one or more pod sandboxes
    Rmp(RmpArgs),
    /// Create a container in a pod sandbox
    Create(CreateArgs),
    /// Start one or more created containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// List containers
    Ps(PsArgs),
    /// Show the status of one or more containers
    Inspect(InspectArgs),
    /// Print a container's logs
    Logs(LogsArgs),
    /// Run a command in a running container
    ///
    /// Without --interactive or -t this is ExecSync: the output is shown once the command
    /// has finished, and the global --timeout is the command's timeout (0 or unset: none).
    /// With them it is the streaming Exec (SPDY, `v4.channel.k8s.io`).
    Exec(ExecArgs),
    /// Attach to a running container's stdio (its output, and with --stdin its input)
    Attach(AttachArgs),
    /// Forward local ports to ports in a pod until interrupted
    PortForward(PortForwardArgs),
    /// Run a new pod sandbox and a container in it (runp, pull, create, start)
    Run(RunArgs),
    /// Update the resources of a running container
    Update(UpdateArgs),
    /// Show containers' resource usage (CPU %, memory working set, writable layer)
    Stats(StatsArgs),
    /// Stream container and pod sandbox events (created, started, stopped, deleted)
    Events(EventsArgs),
}

/// Output format for structured results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
}

/// Output format for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    Table,
    Json,
    Yaml,
}

// The last flags of `pods` and `ps`, the same in both. (No doc comment: on a flattened
// struct clap could take it for the subcommand's about.)
#[derive(Debug, Args)]
pub struct ListFormat {
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: ListOutput,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. docker.io/library/busybox:latest
    pub image: String,
    /// Registry credentials as USERNAME[:PASSWORD]
    #[arg(long, conflicts_with_all = ["auth", "username"])]
    pub creds: Option<String>,
    /// Base64-encoded USERNAME:PASSWORD
    #[arg(long, conflicts_with = "username")]
    pub auth: Option<String>,
    /// Registry user name (needs --password)
    #[arg(short, long, requires = "password")]
    pub username: Option<String>,
    /// Registry password
    #[arg(short, long, requires = "username")]
    pub password: Option<String>,
    /// Do not draw progress bars
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only list images matching this reference
    pub image: Option<String>,
    /// Only print image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Show the repo digest column
    #[arg(long)]
    pub digests: bool,
    /// Show full image ids and digests
    #[arg(long)]
    pub no_trunc: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: ListOutput,
}

#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// Image ids or references
    #[arg(required = true)]
    pub images: Vec<String>,
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image ids or references
    #[arg(required_unless_present = "all")]
    pub images: Vec<String>,
    /// Remove all images
    #[arg(short, long)]
    pub all: bool,
    /// Do not print the removed references
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImagefsinfoArgs {
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RunpArgs {
    /// PodSandboxConfig as JSON or YAML (crictl's format, snake_case keys)
    pub config: std::path::PathBuf,
    /// Runtime handler to use
    #[arg(long)]
    pub runtime: Option<String>,
}

/// `Ready` or `NotReady`, as crictl's `--state` for pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodState {
    #[value(alias = "Ready", alias = "SANDBOX_READY")]
    Ready,
    #[value(alias = "NotReady", alias = "SANDBOX_NOTREADY")]
    Notready,
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Only the pod with this id (or id prefix)
    #[arg(long)]
    pub id: Option<String>,
    /// Only pods whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// Only pods whose namespace contains this
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only pods in this state
    #[arg(short, long, value_enum)]
    pub state: Option<PodState>,
    /// Only pods with this label, KEY=VALUE; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Only print pod ids
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub listing: ListFormat,
}

#[derive(Debug, Args)]
pub struct InspectpArgs {
    /// Pod sandbox ids
    #[arg(required = true)]
    pub pods: Vec<String>,
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StoppArgs {
    /// Pod sandbox ids
    #[arg(required = true)]
    pub pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmpArgs {
    /// Pod sandbox ids
    #[arg(required_unless_present = "all")]
    pub pods: Vec<String>,
    /// Stop ready pods before removing them
    #[arg(short, long)]
    pub force: bool,
    /// Remove all pods
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Id of the pod sandbox to create the container in
    pub pod: String,
    /// ContainerConfig as JSON or YAML
    pub container_config: std::path::PathBuf,
    /// The PodSandboxConfig the pod was run with
    pub pod_config: std::path::PathBuf,
    /// Pull the image first if it is not present
    #[arg(long)]
    pub with_pull: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Container ids
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Container ids
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Seconds to wait before killing the container [the global --timeout is also taken]
    #[arg(short = 't', value_name = "SECS")]
    pub grace: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Container ids
    #[arg(required_unless_present = "all")]
    pub containers: Vec<String>,
    /// Stop running containers before removing them
    #[arg(short, long)]
    pub force: bool,
    /// Remove all containers
    #[arg(short, long)]
    pub all: bool,
}

/// A container state for `ps --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContainerStateArg {
    #[value(alias = "Created", alias = "CONTAINER_CREATED")]
    Created,
    #[value(alias = "Running", alias = "CONTAINER_RUNNING")]
    Running,
    #[value(alias = "Exited", alias = "CONTAINER_EXITED")]
    Exited,
    #[value(alias = "Unknown", alias = "CONTAINER_UNKNOWN")]
    Unknown,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only the container with this id (or id prefix)
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod sandbox
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers whose name contains this
    #[arg(long)]
    pub name: Option<String>,
    /// Only containers in this state
    #[arg(short, long, value_enum)]
    pub state: Option<ContainerStateArg>,
    /// Only containers with this label, KEY=VALUE; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Only print container ids
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub listing: ListFormat,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Container ids
    #[arg(required = true)]
    pub containers: Vec<String>,
    #[arg(short, long, value_enum, default_value = "json")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Container id
    pub container: String,
    /// Keep printing new output until the container stops
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Use ExecSync (the default unless -i or -t is given)
    #[arg(short, long)]
    pub sync: bool,
    /// Stream stdin to the command (streaming Exec; long form only: -i is the global
    /// --image-endpoint)
    #[arg(long)]
    pub interactive: bool,
    /// Give the command a terminal (streaming Exec)
    #[arg(short, long)]
    pub tty: bool,
    /// Container id
    pub container: String,
    /// Command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Send stdin to the container (long form only: -i is the global --image-endpoint)
    #[arg(long)]
    pub stdin: bool,
    /// The container has a terminal: raw mode, and the terminal's size sent
    #[arg(short, long)]
    pub tty: bool,
    /// Container id
    pub container: String,
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Pod sandbox id
    pub pod: String,
    /// [LOCAL:]REMOTE port pairs (LOCAL empty or 0: a free port)
    #[arg(required = true)]
    pub ports: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// ContainerConfig as JSON or YAML
    pub container_config: std::path::PathBuf,
    /// PodSandboxConfig as JSON or YAML
    pub pod_config: std::path::PathBuf,
    /// Runtime handler to use
    #[arg(long)]
    pub runtime: Option<String>,
    /// Do not pull the image when it is missing
    #[arg(long)]
    pub no_pull: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Container ids
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Memory limit in bytes
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<i64>,
    /// CPU CFS quota in microseconds per period
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_shares: Option<i64>,
    /// CPUs the container may run on, e.g. 0-3,5
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use
    #[arg(long)]
    pub cpuset_mems: Option<String>,
}

/// `KEY=VALUE` for `--label`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only the container with this id (or id prefix)
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod sandbox
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers with this label, KEY=VALUE; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Seconds between the two samples CPU % is computed from (and between redraws)
    #[arg(short, long, default_value_t = 1)]
    pub seconds: u64,
    /// Redraw the table in place every --seconds until interrupted
    #[arg(short, long)]
    pub watch: bool,
    #[command(flatten)]
    pub listing: ListFormat,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// table: one row per event; json: one JSON document per line
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: EventsOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsOutput {
    Table,
    Json,
}
