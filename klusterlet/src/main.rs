//! The `klusterlet` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;
use klusterlet::cli::Cli;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("KLUSTERLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.default_log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    std::process::exit(klusterlet::cli::run(cli.command).await);
}
