//! `shardgate meta --config FILE [--listen ADDR] [--id N] [--data-dir DIR]`:
//! runs one member of the metadata cluster (crate `shardgate-meta`) alone,
//! from the `[meta]` table of a deployment file (read by `crate::config`:
//! strict errors with lines, `SHARDGATE_META__*` overrides), until SIGTERM
//! or Ctrl-C, then shuts it down cleanly.
//!
//! `shardgate meta recover --config FILE [--id N] [--data-dir DIR] [--dry-run]`:
//! with the member stopped, makes it the only voter of its cluster again
//! (`shardgate_meta::recover`), for a cluster that lost its quorum for good.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shardgate_meta::MetaConfig;

use crate::config;
use crate::signal::shutdown_signal;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MetaArgs {
    #[command(subcommand)]
    action: Option<MetaAction>,
    /// Config file (TOML, `version = 1`, `[meta]` table); defaults apply without one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `meta.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Raft id of this member; overrides `meta.id`.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Data directory; overrides `meta.data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum MetaAction {
    /// With this member STOPPED, make it the only voter of its cluster again,
    /// keeping its data: for a cluster that cannot reach a quorum any more
    /// (members lost for good, or a membership change stuck waiting for a
    /// member that will not come back). Run it on the survivor with the
    /// highest applied index, start that member, then wipe the other
    /// survivors' data directories and start them with `meta.join`.
    Recover(RecoverArgs),
}

#[derive(clap::Args)]
struct RecoverArgs {
    /// Config file of the member (its `[meta]` id and data_dir are used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Raft id of this member; overrides `meta.id`.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Data directory; overrides `meta.data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Say what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
}

fn load(config: &Option<PathBuf>, id: Option<u64>, data_dir: Option<PathBuf>) -> anyhow::Result<MetaConfig> {
    let mut meta = match config {
        Some(path) => config::load(path)?.meta.unwrap_or_default(),
        None => MetaConfig::default(),
    };
    if let Some(id) = id {
        meta.id = id;
    }
    if let Some(dir) = data_dir {
        meta.data_dir = dir;
    }
    Ok(meta)
}

fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config, args.id, args.data_dir)?;
    let dir = config.data_dir.clone();
    let r = if args.dry_run {
        // Work on a copy: the same checks and the same answer, nothing written.
        let scratch = tempfile::tempdir().context("creating a scratch directory for --dry-run")?;
        let db = dir.join(shardgate_meta::store::DB_FILE);
        if db.exists() {
            std::fs::copy(&db, scratch.path().join(shardgate_meta::store::DB_FILE))
                .with_context(|| format!("copying {} for --dry-run", db.display()))?;
        }
        shardgate_meta::recover::recover(scratch.path(), config.id)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace(&scratch.path().display().to_string(), &dir.display().to_string())))?
    } else {
        shardgate_meta::recover::recover(&dir, config.id).with_context(|| format!("recovering meta member {}", config.id))?
    };
    let sets: Vec<String> =
        r.voters_before.iter().map(|s| format!("{{{}}}", s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))).collect();
    let removed: Vec<String> = r.removed.iter().map(|v| v.to_string()).collect();
    println!("member {} ({}), data in {}", r.id, r.addr, dir.display());
    println!("voters before: {}{}", sets.join(" and "), if sets.len() > 1 { " (a membership change was pending)" } else { "" });
    println!("last log index: {}", r.last_log_index);
    if !r.changed {
        println!("nothing to do: member {} already is the only voter, with no change pending", r.id);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.dry_run { "would make" } else { "made" };
    println!(
        "{verb} member {} the only voter (term {}, log index {}); removed from the membership: {}",
        r.id,
        r.term,
        r.last_log_index + 1,
        if removed.is_empty() { "none".to_string() } else { removed.join(", ") }
    );
    if !args.dry_run {
        println!("next: start this member; wipe the other survivors' data directories and start them with meta.join = \"{}\"", r.addr);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: MetaArgs) -> anyhow::Result<ExitCode> {
    if let Some(MetaAction::Recover(r)) = args.action {
        return recover(r);
    }
    let mut config = load(&args.config, args.id, args.data_dir)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.validate()?;
    let (runtime, _stall_watch) = super::serving_runtime()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {} for [meta]", config.listen))?;
        shardgate_meta::run(listener, config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
