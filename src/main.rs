//! The `sightline` binary: command line and wiring only.

mod bench;
mod config;
mod demo;
mod http_post;
mod import;
mod otlp_out;
mod self_metrics;
mod serve;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sightline",
    version,
    about = "Observability backend: OTLP in, Parquet on disk, one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest (OTLP gRPC 4317, HTTP 4318) and the HTTP port (8080) on the embedded store.
    Serve(Box<config::ServeArgs>),
    /// Benchmarks against a running server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the demo shop: simulated services sending traces over OTLP/gRPC.
    Demo(demo::DemoArgs),
    /// Import logs into a running server.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sightline-worker")
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let config = (*args).resolve()?;
            runtime.block_on(serve::run(config))
        }
        Command::Bench(cmd) => runtime.block_on(cmd.run()),
        Command::Demo(args) => runtime.block_on(args.run()),
        Command::Import(cmd) => runtime.block_on(cmd.run()),
    }
}
