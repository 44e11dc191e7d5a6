//! Server commands: `INFO` (sections server, clients, stats, keyspace)
//! and `DBSIZE`.
//!
//! Where it sits in the request flow: called by [`super::run_data`]. The
//! key count is the sum of `shardgate_node_items` over the epoch's nodes
//! (read from each node's `/metrics`, in parallel) divided by the number
//! of replicas: an estimate (entries expired but not yet swept count, and
//! replicas that missed a write make it low).

use bytes::Bytes;
use http::Method;

use super::Ctx;
use crate::resp::frame::Reply;

/// `DBSIZE`.
pub async fn dbsize(ctx: &Ctx<'_>) -> Reply {
    Reply::Int(key_count(ctx).await as i64)
}

/// The estimated number of keys (see the module docs).
async fn key_count(ctx: &Ctx<'_>) -> u64 {
    let reads =
        ctx.epoch.nodes.iter().filter(|n| n.is_routable()).map(|n| ctx.shared.upstream.send(n, Method::GET, "/metrics", &[], Bytes::new()));
    let mut items = 0u64;
    for r in futures::future::join_all(reads).await.into_iter().flatten() {
        let text = String::from_utf8_lossy(&r.body);
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("shardgate_node_items ")) {
            items += v.trim().parse::<f64>().unwrap_or(0.0) as u64;
        }
    }
    items / ctx.epoch.width().max(1) as u64
}

/// `INFO [section...]`.
pub async fn info(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let wanted: Vec<String> = args[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let m = &ctx.shared.metrics;
    let mut out = String::new();
    if want("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:7.2.0\r\nshardgate_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\ntcp_port:{}\r\nrouting_epoch:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            ctx.shared.config.resp_listen.map_or(0, |a| a.port()),
            ctx.epoch.epoch,
        ));
    }
    if want("clients") {
        out.push_str(&format!("# Clients\r\nconnected_clients:{}\r\n\r\n", m.connections_open.get()));
    }
    if want("stats") {
        let text = m.render();
        let sum = |prefix: &str| -> u64 {
            text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() as u64
        };
        out.push_str(&format!(
            "# Stats\r\ntotal_commands_processed:{}\r\ntotal_error_replies:{}\r\nrejected_connections:{}\r\n\r\n",
            sum("shardgate_proxy_resp_commands_total{"),
            sum("shardgate_proxy_resp_errors_total{"),
            sum("shardgate_proxy_refused_total{reason=\"too_many_connections\"}"),
        ));
    }
    if want("keyspace") {
        // Every Shardgate key has a TTL.
        let keys = key_count(ctx).await;
        out.push_str(&format!("# Keyspace\r\ndb0:keys={keys},expires={keys},avg_ttl=0\r\n"));
    }
    Reply::text(out)
}
