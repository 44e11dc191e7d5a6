//! `shardgate meta --config FILE [--listen ADDR] [--id N] [--data-dir DIR]`:
//! runs one member of the metadata cluster (crate `shardgate-meta`) alone,
//! from the `[meta]` table of a deployment file (read by `crate::config`:
//! strict errors with lines, `SHARDGATE_META__*` overrides), until SIGTERM
//! or Ctrl-C, then shuts it down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shardgate_meta::MetaConfig;

use crate::config;
use crate::signal::shutdown_signal;

#[derive(clap::Args)]
pub struct MetaArgs {
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

pub fn run(args: MetaArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => config::load(path)?.meta.unwrap_or_default(),
        None => MetaConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(id) = args.id {
        config.id = id;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {} for [meta]", config.listen))?;
        shardgate_meta::run(listener, config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
