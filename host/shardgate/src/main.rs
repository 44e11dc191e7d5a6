//! `shardgate`: the one binary. Every role and tool is a subcommand; this
//! file only parses the command line, sets up logging and dispatches to
//! `commands::*`, which call into the library crates under `host/`.

use clap::{Parser, Subcommand};

/// Every build allocates with mimalloc: musl's own malloc takes a global
/// lock (README "Container image"), glibc's spent a third of the RESP
/// path's CPU in malloc/free (README "Redis protocol (RESP)").
#[cfg(not(feature = "musl-system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod config;
mod roles;
mod signal;

/// The log filter when neither `--log` nor `RUST_LOG` is given: shardgate's
/// own crates at `info`, everything else (openraft, hyper, wasmtime,
/// cranelift, ...) at `warn`. EnvFilter matches a directive's target as a
/// prefix of the event's target, so `shardgate` covers `shardgate`,
/// `shardgate_node`, `shardgate_meta`, `shardgate_proxy`,
/// `shardgate_strategy` and any `shardgate_*` crate added later.
/// openraft's heartbeat, replication and replication-progress code warn on
/// every attempt (each heartbeat interval, or each replication retry, about
/// once a second) while a member is unreachable: those targets are held to
/// `error`, and meta's Raft client logs the failures itself, the first one
/// and then at most every 30 s with a count
/// (`shardgate_meta::raft::FailureLog`).
const DEFAULT_LOG: &str = "warn,shardgate=info,openraft::core::heartbeat=error,openraft::replication=error,\
                           openraft::engine::handler::replication_handler=error";

#[derive(Parser)]
#[command(name = "shardgate", version, about = "A distributed cache whose key routing is pluggable, sandboxed WebAssembly")]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG overrides.
    /// The default logs shardgate's own crates at info and every
    /// dependency (openraft, hyper, wasmtime...) at warn.
    #[arg(long, global = true, default_value = DEFAULT_LOG)]
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
    /// Health check without a shell: exit 0 when every role of a deployment
    /// file (and every --url) answers /readyz with 200.
    Probe(commands::probe::ProbeArgs),
    // Roles (node, meta, proxy, dev) and ctl are added by their crates' issues.
}

/// `RUST_LOG` when set (and valid) replaces the filter entirely; otherwise
/// `--log`, whose default is [`DEFAULT_LOG`].
fn log_filter(cli_log: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli_log))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&cli.log))
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
        Command::Probe(args) => commands::probe::run(args),
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

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// The default filter lets shardgate's crates (present and future)
    /// log at info and holds every dependency, openraft first, to warn.
    #[test]
    fn default_filter_is_info_for_shardgate_and_warn_for_dependencies() {
        let filter = tracing_subscriber::EnvFilter::new(super::DEFAULT_LOG);
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "shardgate::roles", Level::INFO));
            assert!(tracing::enabled!(target: "shardgate_node::server", Level::INFO));
            assert!(tracing::enabled!(target: "shardgate_meta::raft", Level::INFO));
            assert!(tracing::enabled!(target: "shardgate_proxy", Level::INFO));
            assert!(tracing::enabled!(target: "shardgate_strategy::router", Level::INFO));
            assert!(tracing::enabled!(target: "shardgate_future_crate", Level::INFO));
            assert!(!tracing::enabled!(target: "shardgate_node::server", Level::DEBUG));
            assert!(!tracing::enabled!(target: "openraft::raft", Level::INFO));
            assert!(!tracing::enabled!(target: "openraft::core::raft_core", Level::INFO));
            assert!(tracing::enabled!(target: "openraft::raft", Level::WARN));
            assert!(tracing::enabled!(target: "openraft::core::raft_core", Level::WARN));
            assert!(!tracing::enabled!(target: "openraft::core::heartbeat::worker", Level::WARN));
            assert!(!tracing::enabled!(target: "openraft::replication", Level::WARN));
            assert!(tracing::enabled!(target: "openraft::replication", Level::ERROR));
            assert!(!tracing::enabled!(target: "openraft::engine::handler::replication_handler", Level::WARN));
            assert!(tracing::enabled!(target: "openraft::engine::handler::vote_handler", Level::WARN));
            assert!(!tracing::enabled!(target: "hyper::proto", Level::INFO));
            assert!(!tracing::enabled!(target: "wasmtime::runtime", Level::INFO));
            assert!(!tracing::enabled!(target: "cranelift_codegen", Level::INFO));
        });
    }
}
