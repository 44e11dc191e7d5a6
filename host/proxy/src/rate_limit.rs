//! Rate limiting: limits that stop one client from starving the others,
//! applied before a request is routed. An optional per-client-IP request
//! rate (`proxy.rate_limit`, a GCRA token bucket from `governor`, keyed by
//! the peer's IP address), answering 429 with `Retry-After`.
//!
//! Where it sits in the request flow: first thing in
//! [`crate::server`]'s dispatch for every `/v1/` request, before the data
//! token check ([`crate::auth`]), so floods without a token stay cheap. The
//! cap on open client connections (`proxy.max_connections`; the
//! connection over it gets a 503 naming the limit and is closed) is in the
//! accept loop of [`crate::server`]. Body size and read timeouts are the
//! node's limits, applied in the handlers ([`crate::keys`],
//! [`crate::batches`]).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimit;
use crate::error::RequestError;

/// How often idle client entries are dropped from the limiter.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// `proxy.rate_limit`: one token bucket per client IP.
pub struct ClientRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    config: RateLimit,
}

impl ClientRateLimit {
    /// A limiter for a validated `proxy.rate_limit` (both numbers at least 1).
    pub fn new(config: RateLimit) -> Self {
        let rate = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        ClientRateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            config,
        }
    }

    /// Takes one request from `client`'s bucket, or says how long until
    /// the next one is allowed.
    pub fn check(&self, client: IpAddr) -> Result<(), RequestError> {
        self.limiter.check_key(&client).map_err(|not_until| RequestError::RateLimited {
            client,
            requests_per_second: self.config.requests_per_second,
            burst: self.config.burst,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Clients with a bucket in memory.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }

    /// Forever: drops the buckets of clients that are full again (they
    /// would allow a whole burst anyway), so memory follows the active
    /// clients, not every address ever seen.
    pub async fn prune(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_client() {
        let limit = ClientRateLimit::new(RateLimit { requests_per_second: 1, burst: 3 });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limit.check(a).unwrap();
        }
        let Err(RequestError::RateLimited { retry_after, .. }) = limit.check(a) else { panic!("fourth request passes") };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
        limit.check(b).unwrap();
        assert_eq!(limit.tracked_clients(), 2);
    }
}
