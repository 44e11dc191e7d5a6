//! `shardgate strategy ...`: inspect and check strategy components.
//!
//! `check` runs the quality kit (`shardgate_strategy::check`) on a component
//! file or a built-in strategy and prints the report; it exits 1 when a hard
//! property fails (a trap, an out-of-range answer, non-determinism) and 2
//! when the component cannot be loaded or configured at all.

use anyhow::Context;
use clap::{Args, Subcommand};
use shardgate_strategy::check::{CheckOptions, check};
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
    /// Create a new strategy crate (Rust, wit-bindgen) ready to build.
    New {
        /// Crate and strategy name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The contract, embedded from `wit/` (the one source of truth).
const WIT: &str = include_str!("../../../../wit/strategy.wit");

fn scaffold(name: &str, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        anyhow::bail!("invalid strategy name {name:?}: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        anyhow::bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{crate}}", &crate_name);
    let files: [(&str, String); 5] = [
        // An empty [workspace] keeps the crate standalone even inside another workspace.
        ("Cargo.toml", fill(include_str!("scaffold/Cargo.toml.tmpl")) + "\n[workspace]\n"),
        ("src/lib.rs", fill(include_str!("scaffold/lib.rs.tmpl"))),
        ("wit/strategy.wit", WIT.to_string()),
        ("README.md", fill(include_str!("scaffold/README.md.tmpl"))),
        (".gitignore", "/target\n".to_string()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).with_context(|| format!("cannot create {}", path.parent().unwrap().display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {} (strategy {name})", dir.display());
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-wasip2");
    println!("  shardgate strategy check target/wasm32-wasip2/release/{crate_name}.wasm --replicas 2");
    Ok(ExitCode::SUCCESS)
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
        StrategyCommand::New { name, dir } => scaffold(&name, dir),
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
