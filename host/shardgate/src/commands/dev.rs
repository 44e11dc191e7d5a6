//! `shardgate dev`: a whole local cluster in one process with no config
//! file: one meta member, three cache nodes and one proxy on fixed local
//! ports, the built-in strategies uploaded and `rendezvous` active. Data
//! lives in a temporary directory unless `--data-dir` is given (then a
//! restart finds its state again, and the bootstrap only adds what is
//! missing). Ctrl-C stops everything cleanly.

use anyhow::Context;
use clap::Args;
use shardgate_meta::{InitialMember, MetaConfig};
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{Activation, NewNode};
use shardgate_node::NodeConfig;
use shardgate_proxy::ProxyConfig;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use crate::roles::RoleSet;

#[derive(Args)]
pub struct DevArgs {
    /// Where meta keeps its Raft state (default: a temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address every role binds.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The proxy's port (clients talk to it).
    #[arg(long, default_value_t = 7000)]
    proxy_port: u16,
    /// The proxy's Redis protocol (RESP) port (`redis-cli -p 7379`).
    #[arg(long, default_value_t = 7379)]
    resp_port: u16,
    /// The meta member's port (`shardgate ctl` talks to it).
    #[arg(long, default_value_t = 7101)]
    meta_port: u16,
    /// The first cache node's port; the others follow (7201, 7202, 7203).
    #[arg(long, default_value_t = 7201)]
    node_port: u16,
    /// Number of cache nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Built-in strategy to activate on a fresh cluster.
    #[arg(long, default_value = "rendezvous")]
    strategy: String,
}

async fn bind(role: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {role} (use --{}-port to pick another)", role.split('-').next().unwrap()))
}

pub fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    if shardgate_builtins::builtin(&args.strategy).is_none() {
        anyhow::bail!("--strategy {}: not a built-in strategy (rendezvous, ketama, maglev, jump, pinned)", args.strategy);
    }
    if args.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let (runtime, _stall_watch) = super::serving_runtime()?;
    runtime.block_on(dev(args))
}

async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("shardgate-dev-").tempdir().context("creating a temporary data directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let at = |port: u16| SocketAddr::new(args.host, port);
    let url = |addr: SocketAddr| format!("http://{addr}");

    // Bind every port first, so a port in use stops the start cleanly.
    let meta_addr = at(args.meta_port);
    let meta_listener = bind("meta", meta_addr).await?;
    let mut node_listeners = vec![];
    for i in 0..args.nodes {
        let port = args.node_port.checked_add(i).context("--node-port too high")?;
        node_listeners.push((format!("node-{}", i + 1), bind("node", at(port)).await?, at(port)));
    }
    let proxy_addr = at(args.proxy_port);
    let proxy_listener = bind("proxy", proxy_addr).await?;
    let resp_addr = at(args.resp_port);
    let resp_listener = bind("resp", resp_addr).await?;

    let mut roles = RoleSet::new();
    let meta_config = MetaConfig {
        id: 1,
        listen: meta_addr,
        data_dir: data_dir.join("meta"),
        members: vec![InitialMember { id: 1, addr: url(meta_addr) }],
        ..MetaConfig::default()
    };
    roles.spawn("meta", shardgate_meta::run(meta_listener, meta_config, roles.stopped()));
    let mut node_addrs = vec![];
    for (id, listener, addr) in node_listeners {
        let config = NodeConfig { listen: addr, ..NodeConfig::default() };
        node_addrs.push((id, addr));
        roles.spawn("node", shardgate_node::run(listener, config, roles.stopped()));
    }
    let proxy_config =
        ProxyConfig { listen: proxy_addr, resp_listen: Some(resp_addr), meta: vec![url(meta_addr)], ..ProxyConfig::default() };
    roles.spawn("proxy", shardgate_proxy::run_with_resp(proxy_listener, Some(resp_listener), proxy_config, roles.stopped()));

    let meta = MetaClient::new(vec![url(meta_addr)]).with_retry_for(Duration::from_secs(30));
    let bootstrap = async {
        let epoch = bootstrap(&meta, &node_addrs, &args.strategy).await?;
        wait_for_proxy(&url(proxy_addr), epoch).await?;
        anyhow::Ok(epoch)
    };
    let mut bootstrapped = None;
    let failed = roles
        .watch(async {
            bootstrapped = Some(bootstrap.await);
        })
        .await;
    let epoch = match (failed, bootstrapped) {
        (None, Some(Ok(epoch))) => epoch,
        (None, Some(Err(e))) => {
            roles.shutdown().await;
            return Err(e);
        }
        (failed, _) => {
            roles.shutdown().await;
            return Err(failed.unwrap_or_else(|| anyhow::anyhow!("a role stopped")).context("while starting"));
        }
    };

    let routing = meta.routing().await?;
    let strategy = routing.strategy.as_ref().map(|s| format!("{} {}", s.name, s.version)).unwrap_or_default();
    println!("shardgate dev: a local cluster is running (routing epoch {epoch}, strategy {strategy})\n");
    println!("  proxy    {}        <- clients: the key API", url(proxy_addr));
    println!("  resp     redis://{resp_addr}     <- Redis clients: redis-cli -h {} -p {}", resp_addr.ip(), resp_addr.port());
    println!("  meta     {}        <- shardgate ctl (SHARDGATE_META)", url(meta_addr));
    for (id, addr) in &node_addrs {
        println!("  {id:<8} {}", url(*addr));
    }
    println!("  data     {}{}", data_dir.display(), if args.data_dir.is_none() { " (temporary)" } else { "" });
    println!("\nTry:");
    println!("  curl -X PUT --data-binary 'hello' {}/v1/keys/greeting", url(proxy_addr));
    println!("  curl -i {}/v1/keys/greeting", url(proxy_addr));
    println!("  shardgate ctl strategy activate ketama --wait --proxy {}", url(proxy_addr));
    println!("\nCtrl-C stops everything.");

    let result = roles.run_until_signal().await;
    eprintln!("shardgate dev: stopped");
    result.map(|()| ExitCode::SUCCESS)
}

/// Adds the nodes and built-in strategies meta does not have yet and
/// activates `strategy` when nothing is active. Returns the routing epoch.
async fn bootstrap(meta: &MetaClient, nodes: &[(String, SocketAddr)], strategy: &str) -> anyhow::Result<u64> {
    let known: Vec<String> = meta.nodes().await.context("waiting for meta")?.into_iter().map(|n| n.id).collect();
    for (id, addr) in nodes {
        if !known.contains(id) {
            meta.add_node(&NewNode { id: id.clone(), addr: format!("http://{addr}"), weight: 1.0, zone: String::new() }).await?;
        }
    }
    let uploaded: Vec<String> = meta.strategies().await?.into_iter().map(|s| s.hash).collect();
    let mut active_hash = None;
    for b in shardgate_builtins::BUILTINS {
        let info = if let Some(h) = uploaded.iter().find(|h| **h == sha256_hex(b.component)) {
            meta.strategy(h).await?
        } else {
            meta.upload_strategy(b.component.to_vec()).await.with_context(|| format!("uploading {}", b.name))?
        };
        if b.name == strategy {
            active_hash = Some(info.hash);
        }
    }
    let routing = meta.routing().await?;
    if routing.strategy.is_some() {
        return Ok(routing.epoch);
    }
    let hash = active_hash.expect("checked to be a built-in");
    Ok(meta.activate(&hash, &Activation { config: String::new(), replicas: 1 }).await?.epoch)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn wait_for_proxy(proxy: &str, epoch: u64) -> anyhow::Result<()> {
    let http = shardgate_tls::http_client_system_roots().timeout(Duration::from_secs(2)).no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{proxy}/status")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["epoch"].as_u64().is_some_and(|e| e >= epoch)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the proxy at {proxy} did not reach routing epoch {epoch} within 30s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
