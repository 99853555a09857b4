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

    /// Timeout for the whole command, e.g. 30s, 2m, 1h30m; 0 means none
    /// [default: none for pull, 30s otherwise]
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
