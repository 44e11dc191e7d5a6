//! The proxies that follow this member: `POST /v1/proxies/report` (a proxy
//! says which routing epoch it serves) and `GET /v1/proxies` (what the
//! console and `shardgate ctl proxies` show: each proxy's epoch, how far it
//! is behind, whether it has converged, and how long ago it reported).
//!
//! Where it sits: beside the routing watch ([`crate::watch`]). A proxy
//! follows the routing through one member's `/v1/watch` and reports to
//! every member it knows, on every swap and every few seconds, so any
//! member can answer for all of them. Reports are soft state kept in this
//! member's memory only: not replicated through Raft, not persisted, and
//! forgotten [`PROXY_TTL`] after the last one. Both routes answer locally
//! (no leader hop) and are open like reads: a report changes no cluster
//! state; its cost is bounded by [`MAX_PROXIES`] entries of bounded size
//! ([`MAX_PROXY_ID_BYTES`], [`MAX_PROXY_TEXT_BYTES`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{MemberContext, parse_json};
use crate::error::ApiError;
use crate::model::{ProxyList, ProxyReport, ProxyView};

/// Most proxies a member keeps; a report from a new proxy beyond them is
/// refused (503, kind `too_many_proxies`) until silent ones expire.
pub const MAX_PROXIES: usize = 1024;
/// A proxy that has not reported for this long is forgotten.
pub const PROXY_TTL: Duration = Duration::from_secs(60);
/// Longest proxy id (its advertised URL), in bytes.
pub const MAX_PROXY_ID_BYTES: usize = 512;
/// Longest `following` and `last_error` of a report, in bytes.
pub const MAX_PROXY_TEXT_BYTES: usize = 2048;
/// A proxy is `silent` after this many of its report intervals without one
/// (a report without an interval counts as 1 s).
const SILENT_AFTER_INTERVALS: u64 = 3;

/// The proxies that reported to this member, by id.
#[derive(Default)]
pub struct ProxyRegistry {
    reports: Mutex<HashMap<String, (ProxyReport, Instant)>>,
}

impl ProxyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ProxyReport, Instant)>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `report` (replacing the proxy's previous one). Refused when the
    /// report is malformed or the registry is full of live proxies.
    pub fn record(&self, report: ProxyReport, now: Instant) -> Result<(), ApiError> {
        check(&report)?;
        let mut reports = self.lock();
        reports.retain(|_, (_, at)| now.saturating_duration_since(*at) < PROXY_TTL);
        if !reports.contains_key(&report.id) && reports.len() >= MAX_PROXIES {
            return Err(ApiError::TooManyProxies { limit: MAX_PROXIES });
        }
        reports.insert(report.id.clone(), (report, now));
        Ok(())
    }

    /// Number of proxies kept (expired ones included until the next report
    /// or listing drops them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live proxies, sorted by id, judged against `epoch`.
    pub fn list(&self, epoch: u64, now: Instant) -> Vec<ProxyView> {
        let mut reports = self.lock();
        reports.retain(|_, (_, at)| now.saturating_duration_since(*at) < PROXY_TTL);
        let mut out: Vec<ProxyView> = reports
            .values()
            .map(|(r, at)| {
                let age = now.saturating_duration_since(*at).as_millis() as u64;
                ProxyView {
                    id: r.id.clone(),
                    epoch: r.epoch,
                    meta_epoch: r.meta_epoch,
                    staleness_ms: r.staleness_ms,
                    following: r.following.clone(),
                    last_error: r.last_error.clone(),
                    interval_ms: r.interval_ms,
                    age_ms: age,
                    behind: epoch.saturating_sub(r.epoch),
                    converged: r.epoch >= epoch,
                    silent: age > SILENT_AFTER_INTERVALS * r.interval_ms.max(1000),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Field limits of a report.
fn check(report: &ProxyReport) -> Result<(), ApiError> {
    if report.id.is_empty() {
        return Err(ApiError::BadRequest("proxy id is empty".into()));
    }
    if report.id.len() > MAX_PROXY_ID_BYTES {
        return Err(ApiError::BadRequest(format!(
            "proxy id is {} bytes; the limit is {MAX_PROXY_ID_BYTES} (MAX_PROXY_ID_BYTES)",
            report.id.len()
        )));
    }
    if report.id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("proxy id contains control characters".into()));
    }
    for (name, text) in [("following", &report.following), ("last_error", &report.last_error)] {
        if let Some(text) = text
            && text.len() > MAX_PROXY_TEXT_BYTES
        {
            return Err(ApiError::BadRequest(format!(
                "{name} is {} bytes; the limit is {MAX_PROXY_TEXT_BYTES} (MAX_PROXY_TEXT_BYTES)",
                text.len()
            )));
        }
    }
    Ok(())
}

/// The routes, merged into the member's router by [`crate::server`].
pub fn proxy_routes(ctx: Arc<MemberContext>) -> Router {
    Router::new().route("/v1/proxies", get(list_proxies)).route("/v1/proxies/report", post(report)).with_state(ctx)
}

async fn report(State(ctx): State<Arc<MemberContext>>, body: Bytes) -> Response {
    let outcome = parse_json::<ProxyReport>(&body).and_then(|r| ctx.proxies.record(r, Instant::now()));
    ctx.metrics.proxy_report(match &outcome {
        Ok(()) => "kept",
        Err(ApiError::TooManyProxies { .. }) => "too_many_proxies",
        Err(_) => "bad_request",
    });
    ctx.metrics.proxies.set(ctx.proxies.len() as i64);
    match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_proxies(State(ctx): State<Arc<MemberContext>>) -> Json<ProxyList> {
    let epoch = ctx.sm.read(|s| s.epoch);
    let proxies = ctx.proxies.list(epoch, Instant::now());
    ctx.metrics.proxies.set(proxies.len() as i64);
    Json(ProxyList { member: ctx.id, epoch, ttl_ms: PROXY_TTL.as_millis() as u64, proxies })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, epoch: u64) -> ProxyReport {
        ProxyReport { id: id.into(), epoch, meta_epoch: epoch, staleness_ms: 0, following: None, last_error: None, interval_ms: 2000 }
    }

    #[test]
    fn keeps_the_latest_report_per_proxy_and_judges_it_against_the_epoch() {
        let reg = ProxyRegistry::default();
        let t0 = Instant::now();
        reg.record(report("http://p1", 3), t0).unwrap();
        reg.record(report("http://p2", 5), t0).unwrap();
        reg.record(report("http://p1", 4), t0 + Duration::from_secs(1)).unwrap();
        let list = reg.list(5, t0 + Duration::from_secs(2));
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].id.as_str(), list[0].epoch, list[0].behind, list[0].converged), ("http://p1", 4, 1, false));
        assert_eq!(list[0].age_ms, 1000);
        assert_eq!((list[1].behind, list[1].converged, list[1].silent), (0, true, false));
        // Over three intervals (6 s) without a report: silent; past the TTL: gone.
        assert!(!reg.list(5, t0 + Duration::from_secs(6)).iter().all(|p| p.silent));
        assert!(reg.list(5, t0 + Duration::from_millis(7001)).iter().all(|p| p.silent));
        assert!(reg.list(5, t0 + PROXY_TTL + Duration::from_secs(1)).is_empty());
        assert!(reg.is_empty());
    }

    #[test]
    fn is_bounded_in_entries_and_field_sizes() {
        let reg = ProxyRegistry::default();
        let t0 = Instant::now();
        for i in 0..MAX_PROXIES {
            reg.record(report(&format!("p{i}"), 1), t0).unwrap();
        }
        let e = reg.record(report("one-more", 1), t0).unwrap_err();
        assert!(e.to_string().contains("MAX_PROXIES"), "{e}");
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A known proxy still reports; after the TTL there is room again.
        reg.record(report("p0", 2), t0).unwrap();
        reg.record(report("one-more", 1), t0 + PROXY_TTL).unwrap();
        assert_eq!(reg.len(), 1);

        let e = reg.record(report(&"x".repeat(MAX_PROXY_ID_BYTES + 1), 1), t0).unwrap_err();
        assert!(e.to_string().contains("MAX_PROXY_ID_BYTES"), "{e}");
        let e = reg.record(report("", 1), t0).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = reg.record(report("a\nb", 1), t0).unwrap_err();
        assert!(e.to_string().contains("control"), "{e}");
        let long = ProxyReport { last_error: Some("e".repeat(MAX_PROXY_TEXT_BYTES + 1)), ..report("p", 1) };
        let e = reg.record(long, t0).unwrap_err();
        assert!(e.to_string().contains("last_error") && e.to_string().contains("MAX_PROXY_TEXT_BYTES"), "{e}");
    }
}
