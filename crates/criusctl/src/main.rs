//! criusctl: a crictl-compatible command-line client for crius and any CRI runtime.

// Writing results to stdout is what this binary is for.
#![allow(clippy::print_stdout)]

mod cli;
mod client;
mod commands;
mod format;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("criusctl: {}", format::error_message(&err));
            ExitCode::FAILURE
        }
    }
}
