//! `shardgate meta --config FILE [--listen ADDR] [--id N] [--data-dir DIR]`:
//! runs one member of the metadata cluster (crate `shardgate-meta`) until
//! SIGTERM or Ctrl-C, then shuts it down cleanly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;
use shardgate_meta::MetaConfig;

#[derive(clap::Args)]
pub struct MetaArgs {
    /// Config file (TOML, `version = 1`, `[meta]` table); defaults apply without one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides `meta.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Raft id of this member; overrides `meta.id`.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Data directory; overrides `meta.data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The config file as this command reads it: `version`, `[meta]`, and the
/// other roles' tables allowed but ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaConfigFile {
    version: u32,
    #[serde(default)]
    meta: Option<MetaConfig>,
    #[serde(default)]
    #[allow(dead_code)]
    node: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    proxy: Option<toml::Table>,
}

fn parse_file(text: &str) -> anyhow::Result<MetaConfig> {
    // toml's Display carries the line and column.
    let file: MetaConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if file.version != 1 {
        anyhow::bail!("version = {} is not supported (this build reads version = 1)", file.version);
    }
    Ok(file.meta.unwrap_or_default())
}

pub fn run(args: MetaArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            parse_file(&text).with_context(|| format!("config file {}", path.display()))?
        }
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
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding meta.listen {}", config.listen))?;
        shardgate_meta::run(listener, config, shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meta_and_ignores_other_roles() {
        let c = parse_file("version = 1\n[meta]\nid = 3\n[node]\nanything = true\n").unwrap();
        assert_eq!(c.id, 3);
        let e = parse_file("version = 1\n[meta]\nidd = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(parse_file("version = 2\n").unwrap_err().to_string().contains("version = 2"));
    }
}
