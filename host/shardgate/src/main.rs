//! `shardgate`: the one binary. Every role and tool is a subcommand; this
//! file only parses the command line, sets up logging and dispatches to
//! `commands::*`, which call into the library crates under `host/`.

use clap::{Parser, Subcommand};

mod commands;
mod config;
mod roles;
mod signal;

#[derive(Parser)]
#[command(name = "shardgate", version, about = "A distributed cache whose key routing is pluggable, sandboxed WebAssembly")]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with partitioning strategies (WebAssembly components).
    #[command(subcommand)]
    Strategy(commands::strategy::StrategyCommand),
    /// Run a cache node: in-memory values behind the HTTP API.
    Node(commands::node::NodeArgs),
    /// Run a member of the metadata cluster (Raft: nodes, strategies, routing).
    Meta(commands::meta::MetaArgs),
    /// Run a proxy: routes every key with the active strategy and forwards to nodes.
    Proxy(commands::proxy::ProxyArgs),
    /// Run the roles a deployment file enables ([meta], [node], [proxy]) in one process.
    Serve(commands::serve::ServeArgs),
    /// A whole local cluster in one process: 1 meta, 3 nodes, 1 proxy, no config file.
    Dev(commands::dev::DevArgs),
    /// Administer a cluster through any meta member.
    Ctl(commands::ctl::CtlArgs),
    /// Deployment files.
    #[command(subcommand)]
    Config(commands::serve::ConfigCommand),
    // Roles (node, meta, proxy, dev) and ctl are added by their crates' issues.
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Strategy(cmd) => commands::strategy::run(cmd),
        Command::Node(args) => commands::node::run(args),
        Command::Meta(args) => commands::meta::run(args),
        Command::Proxy(args) => commands::proxy::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Ctl(args) => commands::ctl::run(args),
        Command::Dev(args) => commands::dev::run(args),
        Command::Config(cmd) => commands::serve::config_command(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line per cause, never a backtrace.
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
