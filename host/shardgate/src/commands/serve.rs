//! `shardgate serve --config FILE`: runs every role the deployment file
//! enables (`[meta]`, `[node]`, `[proxy]`; any subset) in one process until
//! SIGTERM or Ctrl-C; `shardgate config check FILE` validates a file without
//! starting anything.
//!
//! All listeners are bound before any role starts, so a port in use is a
//! one-line error and nothing half-starts. If one role stops with an error,
//! the others are shut down and the command exits non-zero.

use crate::config::{self, DeploymentConfig};
use crate::roles::RoleSet;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;

#[derive(Args)]
pub struct ServeArgs {
    /// Deployment file (TOML): `version = 1` and any of [meta], [node], [proxy].
    /// Without one, the SHARDGATE_<TABLE>__<KEY> variables alone are the
    /// config (e.g. SHARDGATE_NODE__LISTEN=0.0.0.0:7100).
    #[arg(long, short, value_name = "FILE", env = "SHARDGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a deployment file (syntax, unknown keys, values) without starting it.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

pub fn config_command(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => {
            let c = config::load(&file)?;
            let roles = c.roles();
            if roles.is_empty() {
                anyhow::bail!("{}: enables no role: add a [meta], [node] or [proxy] table", file.display());
            }
            println!("{}: ok (version {}, roles: {})", file.display(), c.version, roles.join(", "));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn bind(role: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for [{role}]"))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config: DeploymentConfig = config::load_or_env(args.config.as_deref())?;
    if config.roles().is_empty() {
        match &args.config {
            Some(path) => anyhow::bail!("{}: enables no role: add a [meta], [node] or [proxy] table", path.display()),
            None => anyhow::bail!(
                "no config: give --config FILE (or SHARDGATE_CONFIG), or SHARDGATE_<TABLE>__<KEY> variables that enable a role (e.g. SHARDGATE_NODE__LISTEN=0.0.0.0:7100)"
            ),
        }
    }
    let (runtime, _stall_watch) = super::serving_runtime()?;
    runtime.block_on(serve(config))
}

async fn serve(config: DeploymentConfig) -> anyhow::Result<ExitCode> {
    // Bind everything first: a port in use stops the start cleanly.
    let meta = match config.meta {
        Some(c) => Some((bind("meta", &c.listen.to_string()).await?, c)),
        None => None,
    };
    let node = match config.node {
        Some(c) => Some((bind("node", &c.listen.to_string()).await?, c)),
        None => None,
    };
    let proxy = match config.proxy {
        Some(c) => Some((bind("proxy", &c.listen.to_string()).await?, c)),
        None => None,
    };

    let mut roles = RoleSet::new();
    if let Some((listener, c)) = meta {
        tracing::info!(role = "meta", addr = %c.listen, id = c.id, "starting");
        roles.spawn("meta", shardgate_meta::run(listener, c, roles.stopped()));
    }
    if let Some((listener, c)) = node {
        tracing::info!(role = "node", addr = %c.listen, "starting");
        roles.spawn("node", shardgate_node::run(listener, c, roles.stopped()));
    }
    if let Some((listener, c)) = proxy {
        tracing::info!(role = "proxy", addr = %c.listen, meta = ?c.meta, "starting");
        roles.spawn("proxy", shardgate_proxy::run(listener, c, roles.stopped()));
    }
    roles.run_until_signal().await?;
    Ok(ExitCode::SUCCESS)
}
