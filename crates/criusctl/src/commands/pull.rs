//! `criusctl pull`: crius's streaming PullWithProgress with per-layer bars, falling back
//! to the CRI PullImage on runtimes that do not have it.

use std::collections::HashMap;
use std::io::IsTerminal as _;

use anyhow::{Result, bail};
use crius_proto::v1::{LayerProgress, LayerState, PullProgress, PullWithProgressRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_cri::v1::{AuthConfig, PullImageRequest};
use tonic::Code;

use super::image_spec;
use crate::cli::PullArgs;
use crate::client::Context;

pub async fn run(ctx: &Context, args: &PullArgs) -> Result<()> {
    let auth = auth_config(args)?;
    let show_bars = !args.no_progress && std::io::stdout().is_terminal();
    let image_id = match pull_with_progress(ctx, &args.image, &auth, show_bars).await? {
        Some(id) => id,
        None => pull_image(ctx, &args.image, auth).await?,
    };
    println!("Image is up to date for {image_id}");
    Ok(())
}

/// Pulls without bars or output (for `run` and `create --with-pull`); the image id.
pub async fn pull_quietly(ctx: &Context, image: &str) -> Result<String> {
    let auth = AuthConfig::default();
    match pull_with_progress(ctx, image, &auth, false).await? {
        Some(id) => Ok(id),
        None => pull_image(ctx, image, auth).await,
    }
}

/// Streams progress; `None` when the server does not implement the crius service.
async fn pull_with_progress(
    ctx: &Context,
    image: &str,
    auth: &AuthConfig,
    show_bars: bool,
) -> Result<Option<String>> {
    let request = PullWithProgressRequest {
        image: image.to_owned(),
        username: auth.username.clone(),
        password: auth.password.clone(),
        auth: auth.auth.clone(),
        identity_token: String::new(),
        registry_token: String::new(),
    };
    ctx.trace("PullWithProgressRequest", &redacted(image));
    let mut stream = match ctx.crius_images().await?.pull_with_progress(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Unimplemented => return Ok(None),
        Err(status) => return Err(status.into()),
    };
    let mut bars = Bars::new(show_bars);
    let mut first = true;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => bail!("pull of {image} ended without a result"),
            // A trailers-only Unimplemented can surface on the first read instead.
            Err(status) if first && status.code() == Code::Unimplemented => return Ok(None),
            Err(status) => {
                bars.abandon();
                return Err(status.into());
            }
        };
        first = false;
        ctx.trace("PullProgress", &message);
        bars.update(&message);
        if message.done {
            bars.finish();
            return Ok(Some(message.image_id));
        }
    }
}

async fn pull_image(ctx: &Context, image: &str, auth: AuthConfig) -> Result<String> {
    let has_auth = auth != AuthConfig::default();
    let request = PullImageRequest {
        image: Some(image_spec(image)),
        auth: has_auth.then_some(auth),
        sandbox_config: None,
    };
    ctx.trace("PullImageRequest", &redacted(image));
    let response = ctx.image().await?.pull_image(request).await?.into_inner();
    ctx.trace("PullImageResponse", &response);
    Ok(response.image_ref)
}

/// Debug output names the image only, so credentials never reach the terminal.
fn redacted(image: &str) -> String {
    format!("image={image:?} (auth not shown)")
}

/// Credentials from `--creds`, `--auth` or `--username/--password` (clap forbids mixing).
fn auth_config(args: &PullArgs) -> Result<AuthConfig> {
    let mut auth = AuthConfig::default();
    if let Some(creds) = &args.creds {
        let (user, pass) = parse_creds(creds)?;
        auth.username = user;
        auth.password = pass;
    } else if let Some(encoded) = &args.auth {
        auth.auth = encoded.clone();
    } else if let (Some(user), Some(pass)) = (&args.username, &args.password) {
        auth.username = user.clone();
        auth.password = pass.clone();
    }
    Ok(auth)
}

/// `USER[:PASSWORD]`, as crictl's `--creds`.
fn parse_creds(creds: &str) -> Result<(String, String)> {
    if creds.is_empty() {
        bail!("credentials can't be empty");
    }
    match creds.split_once(':') {
        None => Ok((creds.to_owned(), String::new())),
        Some(("", _)) => bail!("username can't be empty"),
        Some((user, pass)) => Ok((user.to_owned(), pass.to_owned())),
    }
}

/// A digest as shown next to its bar: the hex, 12 characters.
fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..12).unwrap_or(hex)
}

fn state_label(state: i32) -> &'static str {
    match LayerState::try_from(state) {
        Ok(LayerState::Waiting) => "waiting",
        Ok(LayerState::Downloading) => "downloading",
        Ok(LayerState::Exists) => "exists",
        Ok(LayerState::Done) => "done",
        Err(_) => "unknown",
    }
}

/// One bar per layer, keyed by digest; inert when not drawing.
struct Bars {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
}

impl Bars {
    fn new(show: bool) -> Self {
        Self {
            multi: show.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
            bars: HashMap::new(),
        }
    }

    fn update(&mut self, progress: &PullProgress) {
        let Some(multi) = &self.multi else { return };
        for layer in &progress.layers {
            let bar = self
                .bars
                .entry(layer.digest.clone())
                .or_insert_with(|| multi.add(new_bar(layer)));
            apply(bar, layer);
        }
    }

    fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish();
        }
        self.end_line();
    }

    fn abandon(&self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        self.end_line();
    }

    /// indicatif leaves the cursor after the last bar; what follows needs a line of its own.
    fn end_line(&self) {
        if self.multi.is_some() && !self.bars.is_empty() {
            println!();
        }
    }
}

/// `7b3ccabffc97 downloading [=====>    ] 1.2 MiB/4.0 MiB`
const BAR_TEMPLATE: &str = "{prefix} {msg:<11} [{bar:30.cyan/blue}] {bytes}/{total_bytes}";

fn new_bar(layer: &LayerProgress) -> ProgressBar {
    let style = ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(layer.total).with_style(style);
    bar.set_prefix(short_digest(&layer.digest).to_owned());
    bar
}

fn apply(bar: &ProgressBar, layer: &LayerProgress) {
    bar.set_message(state_label(layer.state));
    bar.set_length(layer.total);
    let done = matches!(
        LayerState::try_from(layer.state),
        Ok(LayerState::Exists | LayerState::Done)
    );
    // A finished layer shows full even if the last byte count was not reported.
    bar.set_position(if done { layer.total } else { layer.downloaded });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds() {
        assert_eq!(
            parse_creds("me:se:cret").unwrap(),
            ("me".to_owned(), "se:cret".to_owned())
        );
        assert_eq!(parse_creds("me").unwrap(), ("me".to_owned(), String::new()));
        assert!(parse_creds(":x").is_err());
        assert!(parse_creds("").is_err());
    }

    #[test]
    fn bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn digests_and_states() {
        assert_eq!(
            short_digest("sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c"),
            "7b3ccabffc97"
        );
        assert_eq!(short_digest("abc"), "abc");
        assert_eq!(state_label(LayerState::Waiting as i32), "waiting");
        assert_eq!(state_label(LayerState::Downloading as i32), "downloading");
        assert_eq!(state_label(LayerState::Exists as i32), "exists");
        assert_eq!(state_label(LayerState::Done as i32), "done");
        assert_eq!(state_label(42), "unknown");
    }
}
