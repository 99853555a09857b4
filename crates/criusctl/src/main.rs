//! criusctl: a crictl-compatible command-line client for crius and any CRI runtime.

// Writing results to stdout is what this binary is for.
#![allow(clippy::print_stdout)]

mod cli;
mod client;
mod commands;
mod config;
mod format;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(commands::Exit(code)) = err.downcast_ref::<commands::Exit>() {
                // Only the low byte reaches the parent, as with Go's os.Exit; keep a failure
                // a failure even when that byte is 0.
                let byte = (*code & 0xff) as u8;
                return ExitCode::from(if byte == 0 && *code != 0 { 1 } else { byte });
            }
            eprintln!("criusctl: {}", format::error_message(&err));
            ExitCode::FAILURE
        }
    }
}
