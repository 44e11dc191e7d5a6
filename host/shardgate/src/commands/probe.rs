//! `shardgate probe [--config FILE] [--url URL]... [--timeout 2s]`: a
//! health check that needs no shell (a `scratch` container has none): GETs
//! the `/readyz` of every role the deployment file enables (at its listen
//! address; an unspecified address is probed on loopback) and every `--url`,
//! and exits 0 when all answer 200, 1 otherwise (one line per target on
//! stderr saying why), 2 on a usage or config error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Deployment file: probe `/readyz` of each role it enables. Without it
    /// and without --url, the roles the SHARDGATE_<TABLE>__<KEY> variables
    /// enable are probed (as `serve` would run them).
    #[arg(long, value_name = "FILE", env = "SHARDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// A URL to probe as well (e.g. http://127.0.0.1:7000/readyz).
    #[arg(long, value_name = "URL")]
    url: Vec<String>,
    /// How long each probe may take.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Where a role listening on `listen` is reached from the same host.
fn local(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port()),
        _ => listen,
    }
}

fn readyz(tls: bool, listen: SocketAddr) -> String {
    format!("{}://{}/readyz", if tls { "https" } else { "http" }, local(listen))
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let mut targets = args.url.clone();
    let deployment = match &args.config {
        Some(path) => Some(config::load(path)?),
        None if args.url.is_empty() => Some(config::load_env()?),
        None => None,
    };
    if let Some(d) = &deployment {
        if let Some(m) = &d.meta {
            targets.push(readyz(m.tls.is_some(), m.listen));
        }
        if let Some(n) = &d.node {
            targets.push(readyz(false, n.listen));
        }
        if let Some(p) = &d.proxy {
            targets.push(readyz(p.tls.is_some(), p.listen));
        }
    }
    if targets.is_empty() {
        bail!("nothing to probe: give --config FILE (a deployment file) or --url URL");
    }
    // The roles probed are this host's own: a TLS listener's certificate
    // names its public address, not loopback, so it is not checked here.
    let http = shardgate_tls::http_client_system_roots()
        .no_proxy()
        .timeout(args.timeout)
        .danger_accept_invalid_certs(true)
        .build()
        .context("building the probe's HTTP client")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let failures = runtime.block_on(async {
        let mut failures = 0;
        for url in &targets {
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => eprintln!("ok {url}"),
                Ok(r) => {
                    let status = r.status();
                    let text: String = r.text().await.unwrap_or_default().trim().chars().take(200).collect();
                    eprintln!("not ready {url}: HTTP {status}: {text}");
                    failures += 1;
                }
                Err(e) => {
                    eprintln!("not ready {url}: {e}");
                    failures += 1;
                }
            }
        }
        failures
    });
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
