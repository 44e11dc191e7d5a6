//! `shardgate strategy ...`: inspect and check strategy components.
//!
//! `check` runs the quality kit (`shardgate_strategy::check`) on a component
//! file or a built-in strategy and prints the report; it exits 1 when a hard
//! property fails (a trap, an out-of-range answer, non-determinism) and 2
//! when the component cannot be loaded or configured at all.

use anyhow::Context;
use clap::{Args, Subcommand};
use shardgate_strategy::check::{check, CheckOptions};
use shardgate_strategy::{Limits, Sandbox};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum StrategyCommand {
    /// List the built-in strategies.
    List,
    /// Check a strategy: balance, movement, determinism and speed.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// A component file (.wasm), or the name of a built-in strategy.
    strategy: String,
    /// The strategy's TOML config file (default: empty config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of synthetic nodes.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Number of keys to route.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Replica count.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: StrategyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StrategyCommand::List => {
            let sandbox = Sandbox::new(Limits::default())?;
            println!("{:<12} {:<8} {:>9}  description", "name", "version", "bytes");
            for b in shardgate_builtins::BUILTINS {
                let s = sandbox.load(b.component).with_context(|| format!("built-in {}", b.name))?;
                let m = s.metadata();
                println!("{:<12} {:<8} {:>9}  {}", m.name, m.version, s.size(), m.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        StrategyCommand::Check(args) => check_command(args),
    }
}

fn check_command(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    if args.replicas == 0 {
        anyhow::bail!("--replicas must be at least 1");
    }
    let bytes: Vec<u8> = match shardgate_builtins::builtin(&args.strategy) {
        Some(b) if !PathBuf::from(&args.strategy).exists() => b.component.to_vec(),
        _ => std::fs::read(&args.strategy).with_context(|| {
            format!("cannot read {} (not a file, nor a built-in strategy: rendezvous, ketama, maglev, jump, pinned)", args.strategy)
        })?,
    };
    let config = match &args.config {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?,
        None => String::new(),
    };
    let sandbox = Sandbox::new(Limits::default())?;
    let strategy = sandbox.load(&bytes).with_context(|| format!("{} is not a usable strategy", args.strategy))?;
    let opts = CheckOptions { config, nodes: args.nodes, keys: args.keys, replicas: args.replicas, ..CheckOptions::default() };
    let started = std::time::Instant::now();
    let report = check(&strategy, &opts, |step| {
        eprintln!("[{:>6.1}s] {step}", started.elapsed().as_secs_f64());
    })
    .with_context(|| format!("cannot configure {}", args.strategy))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
