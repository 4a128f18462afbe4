//! The `hub` binary: `hub serve` runs the hub; every other verb is a client of one.
// `deny`, not `forbid`: `allocator` makes one call into mimalloc, allowed there alone.
#![deny(unsafe_code)]

mod allocator;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use hub::config::{LogFormat, ServeArgs};

// mimalloc rather than glibc's malloc: a full list of 10,000 works allocates and frees
// ~12 MB in ~10^5 pieces: glibc's malloc had ~15 % of the hub's samples there, and
// building the body took 13–20 ms with it against 2.5 ms with mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hub of a fleet of Kubernetes clusters: stores ManifestWorks per cluster for their agents.
///
/// Exit codes: 0 success; 1 the work failed or the hub refused the request; 2 usage error;
/// 3 timed out; 4 the hub is unreachable, answered 5xx, 401 or 403.
#[derive(Debug, Parser)]
#[command(name = "hub", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub server.
    Serve(Box<ServeArgs>),
    /// Put a backup (`hub backup`) in place of the hub's SQLite database; the hub stopped.
    ///
    /// Checks the file is a fleethub database whose schema this hub knows, moves the
    /// replaced database aside (hub.db.replaced-<time>) and gives the restored one a new
    /// index epoch, so clients list again from scratch. With --new-epoch, only renews the
    /// epoch (after pg_restore or a point-in-time recovery of Postgres).
    ///
    /// Exit codes: 0 restored; 1 a hub serves from the database, or writing failed;
    /// 2 usage error or bad input (no such file, not a fleethub database, damaged, a
    /// schema newer than this hub, a Postgres URL without --new-epoch).
    Restore(hub::restore::RestoreArgs),
    #[command(flatten)]
    Client(hub::cli::ClientCommand),
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() {
    allocator::purge_freed_pages_at_once();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hub: could not start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run());
    std::process::exit(code);
}

/// The command line's verb, run; its exit code.
async fn run() -> i32 {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse_from(hub::cli::connection::hoist_connection_flags(
        std::env::args_os().collect(),
    ));
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info,tower_http=info,sqlx=warn");
            if hub::config::admin_token_on_command_line(std::env::args_os()) {
                tracing::warn!(
                    "--admin-token on the command line is visible to every user in `ps`; use --admin-token-file or HUB_ADMIN_TOKEN"
                );
            }
            if args.check_config {
                match hub::server::check_config(&args).await {
                    Ok(lines) => {
                        for line in lines {
                            println!("{line}");
                        }
                        println!("configuration OK: `hub serve` would start");
                        std::process::exit(0);
                    }
                    Err(e) => {
                        eprintln!("hub serve --check-config: {e:#}");
                        std::process::exit(1);
                    }
                }
            }
            match hub::server::run(*args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hub serve: {e:#}");
                    1
                }
            }
        }
        Command::Restore(args) => {
            init_tracing(LogFormat::Pretty, "warn");
            hub::restore::run(args).await
        }
        Command::Client(cmd) => {
            init_tracing(LogFormat::Pretty, "warn");
            hub::cli::run(cmd).await
        }
    }
}
