//! `shardgate proxy [--config FILE] [--listen ADDR] [--meta URL]...`: runs
//! the proxy role (crate `shardgate-proxy`) from the `[proxy]` table of a
//! deployment file (read by `crate::config`: strict errors with lines,
//! `SHARDGATE_PROXY__*` overrides) until SIGTERM or Ctrl-C, then shuts down
//! gracefully. The proxy follows meta's routing watch and forwards the key
//! API to nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shardgate_proxy::ProxyConfig;

use crate::config;
use crate::signal::shutdown_signal;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Config file (TOML, `version = 1`); its `[proxy]` table is used, other
    /// role tables are ignored. Without a file the defaults apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `proxy.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Meta member API address (repeatable); overrides `proxy.meta`.
    #[arg(long, value_name = "URL")]
    meta: Vec<String>,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => config::load(path)?.proxy.unwrap_or_default(),
        None => ProxyConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !args.meta.is_empty() {
        config.meta = args.meta;
    }
    config.validate()?;
    let (runtime, _stall_watch) = super::serving_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} for [proxy]", config.listen))?;
        shardgate_proxy::run(listener, config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
