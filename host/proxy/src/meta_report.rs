//! Reporting to meta: the proxy tells every meta member it knows which
//! routing epoch it serves (`POST /v1/proxies/report`, through
//! [`MetaClient::report_proxy`]), on every swap and every
//! [`REPORT_INTERVAL`], so the operator console and `shardgate ctl proxies`
//! show each proxy converging after an activation and notice a silent one.
//!
//! Where it sits: a background task beside the routing watch
//! ([`crate::routing::follow`]); it reads the epoch in force, the notes and
//! the watch's staleness from [`crate::routing`], and never touches the
//! request path. A member that does not answer costs a debug line and
//! [`crate::metrics::ProxyMetrics::meta_report_failures`]; nothing else
//! depends on the reports (they are soft state on each member).

use std::sync::Arc;
use std::time::Duration;

use shardgate_meta_client::MetaClient;
use shardgate_meta_client::model::ProxyReport;
use tracing::debug;

use crate::routing::Routing;

/// How often the proxy reports when nothing changes (and on every swap).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Time one report may take per member.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `last_error` sent (meta takes up to 2048 bytes).
const MAX_ERROR_CHARS: usize = 500;

/// The report of the routing's present state.
pub fn report(routing: &Routing, id: &str) -> ProxyReport {
    let notes = routing.notes();
    let follow = routing.meta_follow(None);
    ProxyReport {
        id: id.to_string(),
        epoch: routing.load().epoch,
        meta_epoch: notes.meta_epoch,
        staleness_ms: follow.staleness_ms,
        following: follow.member,
        last_error: notes.last_error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
        interval_ms: REPORT_INTERVAL.as_millis() as u64,
    }
}

/// Reports until the task is dropped: at once, after every swap, and every
/// [`REPORT_INTERVAL`].
pub(crate) async fn report_to_meta(routing: Arc<Routing>, meta: MetaClient, id: String) {
    let meta = meta.with_request_timeout(REPORT_TIMEOUT);
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = routing.swapped.notified() => {}
        }
        let report = report(&routing, &id);
        for (member, outcome) in meta.report_proxy(&report).await {
            if let Err(e) = outcome {
                routing.metrics.meta_report_failures.inc();
                debug!(%member, error = %e, "reporting to a meta member failed");
            }
        }
    }
}
