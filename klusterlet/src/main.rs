//! The `klusterlet` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;
use klusterlet::cli::Cli;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let directives = std::env::var("KLUSTERLET_LOG")
        .ok()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| cli.command.default_log_filter().to_string());
    // kube-runtime's watcher logs every failed watch with a debug dump of the Status; the
    // agent says the same once, in one line (work/controller.rs), and retries. Its lines stay
    // available when KLUSTERLET_LOG names kube_runtime itself.
    let directives = if directives.contains("kube_runtime") {
        directives
    } else {
        format!("{directives},kube_runtime::watcher=error")
    };
    let filter = tracing_subscriber::EnvFilter::new(directives);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    std::process::exit(klusterlet::cli::run(cli.command).await);
}
