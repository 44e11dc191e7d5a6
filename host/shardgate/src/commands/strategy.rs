//! `shardgate strategy ...`: inspect and check strategy components.
//!
//! `check` runs the quality kit (`shardgate_strategy::check`) on a component
//! file or a built-in strategy and prints the report; it exits 1 when a hard
//! property fails (a trap, an out-of-range answer, non-determinism) and 2
//! when the component cannot be loaded or configured at all.

use anyhow::Context;
use clap::{Args, Subcommand};
use shardgate_strategy::check::{CheckOptions, check};
use shardgate_strategy::{DEFAULT_MAX_COMPONENT_BYTES, Limits, Sandbox, SandboxSettings};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum StrategyCommand {
    /// List the built-in strategies.
    List,
    /// Check a strategy: balance, movement, determinism and speed.
    Check(CheckArgs),
    /// Create a new strategy project ready to build: a Rust crate
    /// (wit-bindgen), a Python app (componentize-py) or a C project
    /// (wit-bindgen c, zig cc, wasm-tools).
    New {
        /// Project and strategy name: lowercase letters, digits, '-' and '_'.
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The language of the project.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Rust: a slots-table skeleton (its imports, a row helper, a test
        /// that the table and `route` agree) instead of the per-key example.
        #[arg(long)]
        table: bool,
    },
}

/// Languages `strategy new` scaffolds.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate built with `cargo build --target wasm32-wasip2`.
    Rust,
    /// A Python app built with componentize-py (weighted HRW as a slots table).
    Python,
    /// A C project built by `build.sh` with wit-bindgen c, zig cc and
    /// wasm-tools (weighted HRW as a slots table).
    C,
}

/// The contract, embedded from `wit/` (the one source of truth).
const WIT: &str = include_str!("../../../../wit/strategy.wit");

/// The Python example, the template of `strategy new --lang python`.
const PYTHON_APP: &str = include_str!("../../../../strategies/examples/python-hrw/app.py");

/// The C example and its build script, the templates of `strategy new --lang c`.
const C_SOURCE: &str = include_str!("../../../../strategies/examples/c-hrw/strategy.c");
const C_BUILD: &str = include_str!("../../../../strategies/examples/c-hrw/build.sh");

fn scaffold(name: &str, dir: Option<PathBuf>, lang: Lang, table: bool) -> anyhow::Result<ExitCode> {
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
    if lang != Lang::Rust && table {
        anyhow::bail!("--table is for --lang rust; the Python and C examples already return a slots table");
    }
    if lang == Lang::C {
        let files = [
            ("strategy.c", C_SOURCE.replace("c-hrw", name)),
            ("build.sh", C_BUILD.replace("c-hrw", name)),
            ("wit/strategy.wit", WIT.to_string()),
            ("README.md", include_str!("scaffold/c_README.md.tmpl").replace("{{name}}", name)),
            (".gitignore", "/*.wasm\n/bindings\n/build\n".to_string()),
        ];
        write_files(&dir, &files)?;
        make_executable(&dir.join("build.sh"))?;
        println!("created {} (strategy {name}, C)", dir.display());
        println!("  cd {}", dir.display());
        println!("  cargo install --debug --locked --no-default-features --features c wit-bindgen-cli@0.63.0");
        println!("  cargo install --debug --locked --no-default-features --features component,print wasm-tools@1.262.0");
        println!("  pip install ziglang==0.15.2   # zig on PATH, or ZIG=\"python3 -m ziglang\"");
        println!("  ./build.sh");
        println!("  shardgate strategy check {name}.wasm --replicas 2");
        return Ok(ExitCode::SUCCESS);
    }
    if lang == Lang::Python {
        let files = [
            ("app.py", PYTHON_APP.replace("python-hrw", name)),
            ("wit/strategy.wit", WIT.to_string()),
            (".gitignore", "/*.wasm\n/__pycache__\n".to_string()),
        ];
        write_files(&dir, &files)?;
        println!("created {} (strategy {name}, Python)", dir.display());
        println!("  cd {}", dir.display());
        println!("  pip install componentize-py==0.25.1");
        println!("  componentize-py -d wit -w strategy componentize app -o {name}.wasm --stub-wasi");
        println!("  shardgate strategy check {name}.wasm --replicas 2");
        return Ok(ExitCode::SUCCESS);
    }
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{crate}}", &crate_name);
    let files: [(&str, String); 5] = [
        // An empty [workspace] keeps the crate standalone even inside another workspace.
        ("Cargo.toml", fill(include_str!("scaffold/Cargo.toml.tmpl")) + "\n[workspace]\n"),
        ("src/lib.rs", fill(if table { include_str!("scaffold/lib_table.rs.tmpl") } else { include_str!("scaffold/lib.rs.tmpl") })),
        ("wit/strategy.wit", WIT.to_string()),
        ("README.md", fill(include_str!("scaffold/README.md.tmpl"))),
        (".gitignore", "/target\n".to_string()),
    ];
    write_files(&dir, &files)?;
    println!("created {} (strategy {name})", dir.display());
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-wasip2");
    println!("  shardgate strategy check target/wasm32-wasip2/release/{crate_name}.wasm --replicas 2");
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn make_executable(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

fn write_files(dir: &std::path::Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).with_context(|| format!("cannot create {}", path.parent().unwrap().display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
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
    /// Node weights, comma-separated, given to the nodes in turn
    /// (`--weights 1,2` alternates 1 and 2); default: all 1.
    #[arg(long, value_delimiter = ',', value_name = "W,...")]
    weights: Vec<f64>,
    /// Number of zones the nodes are spread over (node i in zone-(i mod N));
    /// 0 leaves zones empty.
    #[arg(long, default_value_t = 3, value_name = "N")]
    zones: usize,
    /// Fuel for `configure` (about one unit per WebAssembly instruction).
    #[arg(long, value_name = "UNITS", default_value_t = Limits::default().configure_fuel)]
    config_fuel: u64,
    /// Fuel per key for `route` and `route-batch`.
    #[arg(long, value_name = "UNITS", default_value_t = Limits::default().route_fuel)]
    route_fuel: u64,
    /// Fuel for start-up, `metadata` and `validate-config`.
    #[arg(long, value_name = "UNITS", default_value_t = Limits::default().control_fuel)]
    control_fuel: u64,
    /// Linear memory per instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (Limits::default().memory_bytes >> 20) as u64)]
    memory_mib: u64,
    /// Largest component accepted, in MiB (meta's `max_component_size`).
    #[arg(long, value_name = "MIB", default_value_t = (DEFAULT_MAX_COMPONENT_BYTES >> 20) as u64)]
    max_component_mib: u64,
    /// Where compiled components are kept between runs (default: the user's
    /// cache directory, $XDG_CACHE_HOME or ~/.cache, under shardgate/).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every time: neither read nor write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
    /// Also write the report as a self-contained HTML page with plots.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the report as JSON (a failure too: `{"error": ...}`).
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
        StrategyCommand::New { name, dir, lang, table } => scaffold(&name, dir, lang, table),
    }
}

fn check_command(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    match check_run(args) {
        // With --json, a strategy that cannot be checked at all is JSON too.
        Err(e) if json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "error": format!("{e:#}"), "passed": false }))?);
            Ok(ExitCode::from(2))
        }
        other => other,
    }
}

fn check_run(args: CheckArgs) -> anyhow::Result<ExitCode> {
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
    if let Some(w) = args.weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        anyhow::bail!("--weights: {w} is not a weight; weights must be finite and > 0");
    }
    let settings = SandboxSettings {
        memory: bytesize::ByteSize::mib(args.memory_mib),
        configure_fuel: args.config_fuel,
        control_fuel: args.control_fuel,
        route_fuel: args.route_fuel,
        ..SandboxSettings::default()
    };
    if let Err((key, message)) = settings.validate() {
        let flag = match key {
            "memory" => "memory-mib",
            "configure_fuel" => "config-fuel",
            other => other,
        };
        anyhow::bail!("--{}: {message}", flag.replace('_', "-"));
    }
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(shardgate_strategy::default_compiled_cache_dir) };
    let sandbox = settings.sandbox((args.max_component_mib as usize) << 20, cache_dir)?;
    let started = std::time::Instant::now();
    let strategy = sandbox.load(&bytes).with_context(|| format!("{} is not a usable strategy", args.strategy))?;
    eprintln!(
        "[{:>6.1}s] loaded {} ({} KiB, {})",
        started.elapsed().as_secs_f64(),
        args.strategy,
        bytes.len().div_ceil(1024),
        if strategy.from_compiled_cache() { "compiled form from the cache" } else { "compiled" }
    );
    let opts = CheckOptions {
        config,
        nodes: args.nodes,
        keys: args.keys,
        replicas: args.replicas,
        weights: args.weights.clone(),
        zones: args.zones,
        ..CheckOptions::default()
    };
    let report = check(&strategy, &opts, |step| {
        eprintln!("[{:>6.1}s] {step}", started.elapsed().as_secs_f64());
    })
    .with_context(|| format!("cannot configure {}", args.strategy))?;
    if let Some(path) = &args.html {
        std::fs::write(path, report.to_html()).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
