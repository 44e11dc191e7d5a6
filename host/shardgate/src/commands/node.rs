//! `shardgate node [--config FILE] [--listen ADDR]`: runs the cache node role
//! (crate `shardgate-node`) alone, from the `[node]` table of a deployment
//! file (read by `crate::config`, so the same strict errors and
//! `SHARDGATE_NODE__*` overrides apply), until SIGTERM or Ctrl-C; then
//! shuts down gracefully, letting in-flight requests finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shardgate_node::NodeConfig;

use crate::config;
use crate::signal::shutdown_signal;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Deployment file (TOML, `version = 1`); its `[node]` table is used, other
    /// tables are ignored. Without a file (or a `[node]` table) the defaults apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `node.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let mut node = match &args.config {
        Some(path) => config::load(path)?.node.unwrap_or_default(),
        None => NodeConfig::default(),
    };
    if let Some(listen) = args.listen {
        node.listen = listen;
    }
    node.validate()?;
    let (runtime, _stall_watch) = super::serving_runtime()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(node.listen).await.with_context(|| format!("cannot listen on {} for [node]", node.listen))?;
        shardgate_node::run(listener, node, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
