//! `shardgate ctl ...`: the admin client for everything meta offers.
//!
//! It talks to any meta member (`--meta`, comma-separated; the client
//! follows the leader), prints readable tables by default and JSON with
//! `--json`, and shows progress on stderr for uploads and for `--wait`
//! (until every proxy given with `--proxy` serves the new epoch). An address
//! that does not answer is named in a one-line error after `--timeout`.
//! `https://` meta members are checked against `--ca-cert` when given, the
//! platform's trust store otherwise.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets};
use serde::Serialize;
use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::{
    Activation, HistoryEntry, LookupRequest, NewNode, NodeState, NodeUpdate, PreviewRequest, StrategyInfo, WriteReceipt,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct CtlArgs {
    /// Meta member API addresses, comma-separated; any member will do.
    #[arg(long, env = "SHARDGATE_META", default_value = "http://127.0.0.1:7101", value_delimiter = ',', global = true)]
    meta: Vec<String>,
    /// Proxy API addresses (comma-separated), for `status` and `--wait`.
    #[arg(long, env = "SHARDGATE_PROXIES", value_delimiter = ',', global = true)]
    proxy: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on an unresponsive meta member after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
    /// Bearer token for writes to a meta cluster with `meta.admin_token` set.
    #[arg(long, env = "SHARDGATE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file with the CA that signed the meta members' certificates, for
    /// `https://` --meta addresses (`meta.tls`); default: the system's roots.
    #[arg(long, env = "SHARDGATE_CA_CERT", value_name = "PATH", global = true)]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Cache nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Strategies: the registry and the active routing.
    #[command(subcommand)]
    Strategy(StrategyCtl),
    /// Meta cluster members (Raft).
    #[command(subcommand)]
    Members(MembersCommand),
    /// Leader, term, epoch, active strategy and each proxy's epoch.
    Status,
    /// The proxies that report to meta: epoch served, epochs behind,
    /// converged, staleness (`GET /v1/proxies`, what the console shows).
    Proxies,
    /// Which nodes own a key under the active routing (`POST /v1/lookup`),
    /// and under a candidate strategy with --strategy.
    Lookup {
        /// The key (as in /v1/keys/{key}) whose owners to show.
        key: String,
        /// A candidate strategy (name or hash) to look the key up under too.
        #[arg(long)]
        strategy: Option<String>,
        /// The candidate's TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The candidate's replicas (default: the active routing's).
        #[arg(long)]
        replicas: Option<u32>,
    },
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Every cache node: id, address, weight, zone and state.
    List,
    /// Add a cache node (active at once: keys move to it).
    Add {
        /// The node's id: stable across restarts and address changes.
        id: String,
        /// The node's HTTP API, http://host:port.
        addr: String,
        /// Relative capacity (> 0): a node of weight 2 gets about twice the keys.
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        /// Failure domain (zone, rack) for strategies that spread replicas.
        #[arg(long, default_value = "")]
        zone: String,
    },
    /// Change a node's weight and/or state.
    Update {
        /// The node's id.
        id: String,
        /// New relative capacity (> 0).
        #[arg(long)]
        weight: Option<f64>,
        /// `draining` takes the node out of routing (keys move away), `active` brings it back.
        #[arg(long)]
        state: Option<StateArg>,
    },
    /// Remove a node (its keys move to the others).
    Remove {
        /// The node's id.
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    /// Routed to.
    Active,
    /// Kept, but no longer routed to.
    Draining,
}

#[derive(Subcommand)]
enum StrategyCtl {
    /// The registry: every uploaded strategy, oldest upload first, the active one marked.
    List,
    /// Upload component files (or built-in strategies by name), one after another.
    Upload {
        /// A component file (.wasm), or the name of a built-in strategy
        /// (rendezvous, ketama, maglev, jump, pinned).
        #[arg(required = true, num_args = 1..)]
        files: Vec<String>,
    },
    /// Make a strategy active (by name: the newest upload of that name; or by hash).
    Activate {
        /// A strategy name (the newest upload of that name), or its hash:
        /// whole, or a prefix of 8 or more hex digits, `sha256:` optional.
        strategy: String,
        /// The strategy's TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Owners per key: the first is the primary, the others replicas.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Wait until every --proxy serves the new epoch.
        #[arg(long)]
        wait: bool,
        /// Change nothing (and exit 0) when a strategy is already active:
        /// for one-shot setup jobs (compose, Kubernetes) that may run again.
        #[arg(long)]
        if_inactive: bool,
    },
    /// Share of keys that would move, and per-node load, for a candidate.
    Preview {
        /// A strategy name (the newest upload of that name), or its hash
        /// (whole, or 8+ hex digits, `sha256:` optional).
        strategy: String,
        /// The candidate's TOML config file (default: empty config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The candidate's replica count (default: the active one).
        #[arg(long)]
        replicas: Option<u32>,
        /// Keys to route through both routings (at most 100000).
        #[arg(long, default_value_t = 10_000)]
        sample: u32,
    },
    /// Routing configs in force over time, with each strategy's name and version.
    History,
    /// Make the routing config of an earlier epoch active again.
    Rollback {
        /// The epoch whose routing config to restore (see `history`).
        epoch: u64,
        /// Wait until every --proxy serves the new epoch.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Members, their roles and, from the leader, how far each is behind.
    List,
    /// Follow the Raft view (leader, term, membership) as it changes, one
    /// line per event (JSON lines with --json), until interrupted.
    Watch {
        /// Stop after this many events (default: follow until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Add a member (as a learner, then promoted to voter once caught up).
    Add {
        /// The new member's id (its `meta.id`, unused in this cluster).
        id: u64,
        /// The new member's API address, http(s)://host:port.
        addr: String,
    },
    /// Remove a member from the cluster.
    Remove {
        /// The member's id.
        id: u64,
    },
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(headers.iter().map(|h| h.to_uppercase()));
    t
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn receipt(json: bool, what: &str, r: &WriteReceipt) -> anyhow::Result<()> {
    emit(json, r, || format!("{what} (log index {}, routing epoch {})", r.index, r.epoch))
}

/// `ctl members watch`: one line per Raft event, as they happen.
async fn members_watch(client: &MetaClient, json: bool, count: Option<u64>) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut events = client.watch_raft();
    let mut seen = 0;
    while let Some(item) = events.next().await {
        match item {
            Ok(e) => {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let voters: Vec<String> = e.members.iter().filter(|m| m.voter).map(|m| m.id.to_string()).collect();
                    let learners: Vec<String> = e.members.iter().filter(|m| !m.voter).map(|m| m.id.to_string()).collect();
                    println!(
                        "{} member {}: [{}] leader {} term {} state {} voters {}{}{}",
                        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                        e.member,
                        e.changes.join(","),
                        e.leader.map_or("none".to_string(), |l| l.to_string()),
                        e.term,
                        e.state,
                        voters.join(","),
                        if learners.is_empty() { String::new() } else { format!(" learners {}", learners.join(",")) },
                        if e.membership_change_pending { " (membership change pending)" } else { "" },
                    );
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    return Ok(());
                }
            }
            // The stream moves on to the next member by itself; say why.
            Err(e) => eprintln!("{}: {e}; trying the next member", humantime::format_rfc3339_seconds(std::time::SystemTime::now())),
        }
    }
    Ok(())
}

pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let json = args.json;
    match runtime.block_on(ctl(args)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // With --json a failure is JSON too, on stdout where the answer
        // would have been: `{"error": "..."}`, exit status 1.
        Err(e) if json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "error": format!("{e:#}") }))?);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e),
    }
}

async fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    let mut client = MetaClient::new(args.meta.clone()).with_request_timeout(args.timeout).with_retry_for(args.timeout);
    if let Some(ca) = &args.ca_cert {
        client = client.with_tls_ca(ca).context("--ca-cert")?;
    }
    if let Some(token) = &args.token {
        client = client.with_token(token);
    }
    // `--meta` is a seed list: rotate over the members that exist now (a
    // member that cannot say is no reason to fail; the seeds stay).
    if let Err(e) = client.discover_members().await {
        tracing::debug!(error = %e, "could not read the meta membership; using --meta as given");
    }
    let json = args.json;
    match args.command {
        CtlCommand::Nodes(cmd) => match cmd {
            NodesCommand::List => {
                let nodes = client.nodes().await?;
                emit(json, &nodes, || {
                    let mut t = table(&["id", "addr", "weight", "zone", "state"]);
                    for n in &nodes {
                        t.add_row(vec![n.id.clone(), n.addr.clone(), n.weight.to_string(), n.zone.clone(), n.state.to_string()]);
                    }
                    t.to_string()
                })
            }
            NodesCommand::Add { id, addr, weight, zone } => {
                let r = client.add_node(&NewNode { id: id.clone(), addr, weight, zone }).await?;
                receipt(json, &format!("added node {id}"), &r)
            }
            NodesCommand::Update { id, weight, state } => {
                if weight.is_none() && state.is_none() {
                    bail!("nothing to update: give --weight and/or --state");
                }
                let state = state.map(|s| match s {
                    StateArg::Active => NodeState::Active,
                    StateArg::Draining => NodeState::Draining,
                });
                let r = client.update_node(&id, &NodeUpdate { weight, state }).await?;
                receipt(json, &format!("updated node {id}"), &r)
            }
            NodesCommand::Remove { id } => {
                let r = client.remove_node(&id).await?;
                receipt(json, &format!("removed node {id}"), &r)
            }
        },
        CtlCommand::Strategy(cmd) => strategy(&client, &args.proxy, json, args.timeout, cmd).await,
        CtlCommand::Members(cmd) => match cmd {
            MembersCommand::List => {
                let status = client.status().await?;
                emit(json, &status.members, || {
                    // Lag and last acknowledgement are known to the leader only.
                    let from_leader = status.leader == Some(status.id);
                    let mut headers = vec!["id", "addr", "role"];
                    if from_leader {
                        headers.extend(["lag", "last ack"]);
                    }
                    let mut t = table(&headers);
                    for m in &status.members {
                        let role = if Some(m.id) == status.leader {
                            "leader"
                        } else if m.voter {
                            "voter"
                        } else {
                            "learner"
                        };
                        let mut row = vec![m.id.to_string(), m.addr.clone(), role.to_string()];
                        if from_leader {
                            row.push(m.lag.map_or("-".into(), |l| format!("{l} entries")));
                            row.push(m.last_ack_ms.map_or("-".into(), |a| format!("{a} ms ago")));
                        }
                        t.add_row(row);
                    }
                    let mut out = t.to_string();
                    if status.membership_change_pending {
                        out.push_str("\na membership change is pending (not committed); see `shardgate meta recover` if it stays so");
                    }
                    out
                })
            }
            MembersCommand::Watch { count } => members_watch(&client, json, count).await,
            MembersCommand::Add { id, addr } => {
                eprintln!("adding member {id} at {addr} as a learner");
                client.add_learner(id, &addr).await?;
                eprintln!("promoting member {id} to voter");
                let r = client.promote(id).await?;
                receipt(json, &format!("member {id} is a voter"), &r)
            }
            MembersCommand::Remove { id } => {
                let r = client.remove_member(id).await?;
                receipt(json, &format!("removed member {id}"), &r)
            }
        },
        CtlCommand::Status => status(&client, &args.proxy, json, args.timeout).await,
        CtlCommand::Proxies => {
            let list = client.proxies().await?;
            emit(json, &list, || {
                let mut t = table(&["proxy", "epoch", "behind", "state", "meta staleness", "last report", "follows"]);
                for p in &list.proxies {
                    let state = if p.silent {
                        "silent".to_string()
                    } else if p.converged {
                        "converged".to_string()
                    } else {
                        format!("behind{}", p.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())
                    };
                    t.add_row(vec![
                        p.id.clone(),
                        p.epoch.to_string(),
                        p.behind.to_string(),
                        state,
                        format!("{}ms", p.staleness_ms),
                        format!("{}ms ago", p.age_ms),
                        p.following.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                format!("member {} at epoch {}: {} proxies\n{t}", list.member, list.epoch, list.proxies.len())
            })
        }
        CtlCommand::Lookup { key, strategy, config, replicas } => {
            let candidate = match strategy {
                Some(s) => {
                    let (s, _) = resolve(&client, &s).await?;
                    Some(PreviewRequest { hash: Some(s.hash), config: Some(read_config(&config)?), replicas, nodes: None, sample: None })
                }
                None => None,
            };
            let report = client.lookup(&LookupRequest { key, candidate }).await?;
            emit(json, &report, || {
                let show = |o: &Option<Vec<String>>| o.as_ref().map_or("none (no active strategy or node)".to_string(), |o| o.join(", "));
                let mut text = format!("{} under epoch {}: {}", report.key, report.epoch, show(&report.active));
                if report.candidate.is_some() {
                    text.push_str(&format!("\ncandidate: {}", show(&report.candidate)));
                }
                text
            })
        }
    }
}

/// Fewest hex digits of a hash prefix (as meta's `resolve_hash`).
const MIN_HASH_PREFIX: usize = 8;

/// A strategy by name (the newest upload of that name) or by hash (whole,
/// or a prefix of 8+ hex digits; `sha256:` optional). Also says how it was
/// chosen when a name matched several uploads.
async fn resolve(client: &MetaClient, strategy: &str) -> anyhow::Result<(StrategyInfo, Option<String>)> {
    resolve_in(client.strategies().await?, strategy)
}

fn resolve_in(all: Vec<StrategyInfo>, strategy: &str) -> anyhow::Result<(StrategyInfo, Option<String>)> {
    let hex = strategy.strip_prefix("sha256:").unwrap_or(strategy).to_ascii_lowercase();
    if hex.len() >= MIN_HASH_PREFIX && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matches: Vec<&StrategyInfo> = all.iter().filter(|s| s.hash.starts_with(&hex)).collect();
        match matches.as_slice() {
            [one] => return Ok(((*one).clone(), None)),
            [] => {}
            many => bail!(
                "hash prefix {strategy:?} is ambiguous: it matches {}; give more digits",
                many.iter().map(|s| format!("{} {} ({})", s.name, s.version, &s.hash[..16])).collect::<Vec<_>>().join(", ")
            ),
        }
    } else if strategy.starts_with("sha256:") {
        bail!("{strategy:?}: a hash needs at least {MIN_HASH_PREFIX} hex digits after sha256:");
    }
    let named: Vec<&StrategyInfo> = all.iter().filter(|s| s.name == strategy).collect();
    let newest = named.iter().max_by_key(|s| s.uploaded_at).copied().cloned().with_context(|| {
        format!("no strategy named or hashed {strategy:?} in the registry; upload it first (shardgate ctl strategy upload)")
    })?;
    let note = (named.len() > 1).then(|| {
        format!(
            "{strategy:?} names {} uploads; using the newest: version {}, {}, uploaded {}",
            named.len(),
            newest.version,
            &newest.hash[..12],
            uploaded(&newest)
        )
    });
    Ok((newest, note))
}

/// When a strategy was uploaded, as RFC 3339 (UTC), or "-" when unknown.
fn uploaded(s: &StrategyInfo) -> String {
    if s.uploaded_unix_ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(s.uploaded_unix_ms)).to_string()
}

fn read_config(path: &Option<PathBuf>) -> anyhow::Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display())),
        None => Ok(String::new()),
    }
}

async fn strategy(client: &MetaClient, proxies: &[String], json: bool, timeout: Duration, cmd: StrategyCtl) -> anyhow::Result<()> {
    match cmd {
        StrategyCtl::List => {
            let mut list = client.strategies().await?;
            list.sort_by_key(|s| s.uploaded_at);
            let active = client.routing().await?.strategy.map(|s| s.hash);
            emit(json, &list, || {
                let mut t = table(&["name", "version", "hash", "bytes", "uploaded", "active", "description"]);
                for s in &list {
                    let on = if active.as_deref() == Some(s.hash.as_str()) { "*" } else { "" };
                    t.add_row(vec![
                        s.name.clone(),
                        s.version.clone(),
                        s.hash[..12].to_string(),
                        s.size.to_string(),
                        uploaded(s),
                        on.into(),
                        s.description.clone(),
                    ]);
                }
                t.to_string()
            })
        }
        StrategyCtl::Upload { files } => {
            let mut uploaded = Vec::with_capacity(files.len());
            for file in files {
                let bytes = match std::fs::read(&file) {
                    Ok(b) => b,
                    Err(e) => match shardgate_builtins::builtin(&file) {
                        Some(b) => b.component.to_vec(),
                        None => bail!("cannot read {file}: {e} (nor is it a built-in strategy)"),
                    },
                };
                eprintln!("uploading {file} ({} KiB) for admission...", bytes.len().div_ceil(1024));
                let started = Instant::now();
                let info = client.upload_strategy(bytes).await.with_context(|| format!("uploading {file}"))?;
                eprintln!("admitted in {:.1}s", started.elapsed().as_secs_f64());
                uploaded.push(info);
            }
            if let [info] = uploaded.as_slice() {
                return emit(json, info, || format!("uploaded {} {} sha256:{}", info.name, info.version, info.hash));
            }
            emit(json, &uploaded, || {
                uploaded.iter().map(|i| format!("uploaded {} {} sha256:{}", i.name, i.version, i.hash)).collect::<Vec<_>>().join("\n")
            })
        }
        StrategyCtl::Activate { strategy, config, replicas, wait, if_inactive } => {
            if if_inactive {
                let routing = client.routing().await?;
                if let Some(active) = &routing.strategy {
                    let said = format!(
                        "{} {} ({}) is already active (routing epoch {}): nothing changed (--if-inactive)",
                        active.name,
                        active.version,
                        &active.hash[..12.min(active.hash.len())],
                        routing.epoch
                    );
                    return emit(json, &routing, || said);
                }
            }
            let (s, note) = resolve(client, &strategy).await?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let config = read_config(&config)?;
            let r = client.activate(&s.hash, &Activation { config, replicas }).await?;
            receipt(json, &format!("activated {} {} ({})", s.name, s.version, &s.hash[..12]), &r)?;
            if wait {
                wait_for_proxies(proxies, r.epoch, timeout.max(Duration::from_secs(30))).await?;
            }
            Ok(())
        }
        StrategyCtl::Preview { strategy, config, replicas, sample } => {
            let (s, note) = resolve(client, &strategy).await?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let req = PreviewRequest {
                hash: Some(s.hash.clone()),
                config: Some(read_config(&config)?),
                replicas,
                nodes: None,
                sample: Some(sample),
            };
            let report = client.preview(&req).await?;
            emit(json, &report, || {
                let mut t = table(&["node", "keys before", "keys after"]);
                for l in &report.load {
                    t.add_row(vec![l.id.clone(), l.before.to_string(), l.after.to_string()]);
                }
                format!(
                    "switching to {} would move {:.2}% of {} sampled keys (replica sets change for {:.2}%)\n{t}",
                    s.name,
                    report.moved_share * 100.0,
                    report.sample,
                    report.replica_set_changed_share * 100.0
                )
            })
        }
        StrategyCtl::History => {
            let history: Vec<HistoryEntry> = client.history().await?;
            let registry = client.strategies().await?;
            emit(json, &history, || {
                let mut t = table(&["epoch", "time", "name", "version", "hash", "replicas", "moved", "config"]);
                for h in &history {
                    let at =
                        h.at_ms.map(|ms| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string());
                    let s = registry.iter().find(|s| s.hash == h.hash);
                    t.add_row(vec![
                        h.epoch.to_string(),
                        at.unwrap_or_else(|| "-".into()),
                        s.map_or("-".into(), |s| s.name.clone()),
                        s.map_or("-".into(), |s| s.version.clone()),
                        h.hash[..12.min(h.hash.len())].to_string(),
                        h.replicas.to_string(),
                        h.moved_share.map_or("-".to_string(), |m| format!("{:.1}%", m * 100.0)),
                        h.config.replace('\n', "; "),
                    ]);
                }
                t.to_string()
            })
        }
        StrategyCtl::Rollback { epoch, wait } => {
            let r = client.rollback(epoch).await?;
            receipt(json, &format!("rolled back to the routing of epoch {epoch}"), &r)?;
            if wait {
                wait_for_proxies(proxies, r.epoch, timeout.max(Duration::from_secs(30))).await?;
            }
            Ok(())
        }
    }
}

/// A proxy's epoch from its `/status`.
async fn proxy_epoch(http: &reqwest::Client, proxy: &str) -> anyhow::Result<u64> {
    let url = format!("{}/status", proxy.trim_end_matches('/'));
    let v: serde_json::Value = http.get(&url).send().await.with_context(|| format!("cannot reach proxy {proxy}"))?.json().await?;
    v["epoch"].as_u64().with_context(|| format!("proxy {proxy}: /status has no epoch"))
}

async fn wait_for_proxies(proxies: &[String], epoch: u64, limit: Duration) -> anyhow::Result<()> {
    if proxies.is_empty() {
        bail!("--wait needs the proxies to watch: --proxy URL[,URL...] or SHARDGATE_PROXIES");
    }
    let http = shardgate_tls::http_client_system_roots().timeout(Duration::from_secs(2)).no_proxy().build()?;
    let started = Instant::now();
    let mut last = usize::MAX;
    loop {
        let mut ready = 0;
        for p in proxies {
            if matches!(proxy_epoch(&http, p).await, Ok(e) if e >= epoch) {
                ready += 1;
            }
        }
        if ready != last {
            eprintln!("[{:>5.1}s] {ready}/{} proxies serve epoch {epoch}", started.elapsed().as_secs_f64(), proxies.len());
            last = ready;
        }
        if ready == proxies.len() {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("only {ready} of {} proxies reached epoch {epoch} within {limit:?}", proxies.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Serialize)]
struct StatusReport {
    raft: shardgate_meta_client::model::RaftStatus,
    routing: shardgate_meta_client::RoutingState,
    proxies: Vec<ProxyEpoch>,
}

#[derive(Serialize)]
struct ProxyEpoch {
    addr: String,
    epoch: Option<u64>,
    error: Option<String>,
}

async fn status(client: &MetaClient, proxies: &[String], json: bool, _timeout: Duration) -> anyhow::Result<()> {
    let raft = client.status().await?;
    let routing = client.routing().await?;
    let http = shardgate_tls::http_client_system_roots().timeout(Duration::from_secs(2)).no_proxy().build()?;
    let mut report = vec![];
    for p in proxies {
        match proxy_epoch(&http, p).await {
            Ok(e) => report.push(ProxyEpoch { addr: p.clone(), epoch: Some(e), error: None }),
            Err(e) => report.push(ProxyEpoch { addr: p.clone(), epoch: None, error: Some(format!("{e:#}")) }),
        }
    }
    let out = StatusReport { raft, routing, proxies: report };
    emit(json, &out, || {
        let r = &out.raft;
        let strategy =
            out.routing.strategy.as_ref().map(|s| format!("{} {} ({})", s.name, s.version, &s.hash[..12])).unwrap_or_else(|| "none".into());
        let mut text = format!(
            "leader     {} ({})\nterm       {}\nlog        last {} committed {} applied {}\nmembers    {}\nepoch      {}\nstrategy   {strategy}, {} replica(s)\nnodes      {} ({} active)\n",
            r.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
            r.leader_addr.clone().unwrap_or_default(),
            r.term,
            r.last_log_index.unwrap_or(0),
            r.committed_index.unwrap_or(0),
            r.applied_index.unwrap_or(0),
            r.members.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().join(","),
            out.routing.epoch,
            out.routing.replicas,
            out.routing.nodes.len(),
            out.routing.nodes.iter().filter(|n| n.state == NodeState::Active).count(),
        );
        for p in &out.proxies {
            match (p.epoch, &p.error) {
                (Some(e), _) => {
                    text.push_str(&format!("proxy      {} epoch {e}{}\n", p.addr, if e < out.routing.epoch { " (behind)" } else { "" }))
                }
                (None, err) => text.push_str(&format!("proxy      {} unreachable: {}\n", p.addr, err.clone().unwrap_or_default())),
            }
        }
        text.trim_end().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, version: &str, hash: &str, uploaded_at: u64) -> StrategyInfo {
        StrategyInfo {
            hash: hash.into(),
            name: name.into(),
            version: version.into(),
            description: String::new(),
            size: 1,
            uploaded_at,
            uploaded_unix_ms: 0,
        }
    }

    fn registry() -> Vec<StrategyInfo> {
        vec![
            info("hrw", "1", &format!("aaaa1111{}", "0".repeat(56)), 3),
            info("hrw", "2", &format!("aaaa2222{}", "0".repeat(56)), 7),
            info("hrw", "0", &format!("bbbb1111{}", "0".repeat(56)), 5),
        ]
    }

    #[test]
    fn a_name_means_its_newest_upload_and_says_so() {
        let (s, note) = resolve_in(registry(), "hrw").unwrap();
        assert_eq!(s.version, "2");
        assert!(note.unwrap().contains("3 uploads; using the newest: version 2"));
    }

    #[test]
    fn hash_prefixes_and_the_sha256_form_are_accepted() {
        assert_eq!(resolve_in(registry(), "bbbb1111").unwrap().0.version, "0");
        assert_eq!(resolve_in(registry(), "sha256:AAAA2222").unwrap().0.version, "2");
        let full = registry()[0].hash.clone();
        assert_eq!(resolve_in(registry(), &format!("sha256:{full}")).unwrap().0.version, "1");
        let e = resolve_in(registry(), "aaaa").unwrap_err().to_string();
        assert!(e.contains("no strategy named or hashed"), "{e}");
        let e = resolve_in(vec![registry()[0].clone(), info("x", "1", &format!("aaaa1111f{}", "0".repeat(55)), 9)], "aaaa1111")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ambiguous") && e.contains("more digits"), "{e}");
        assert!(resolve_in(registry(), "sha256:aa").unwrap_err().to_string().contains("at least 8"));
    }

    #[test]
    fn every_ctl_argument_has_help_text() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            ctl: CtlArgs,
        }
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() && cmd.get_name() != "help" {
                missing.push(format!("{path} (command)"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = vec![];
        walk(&Wrap::command(), "", &mut missing);
        assert!(missing.is_empty(), "without --help text: {missing:?}");
    }
}
