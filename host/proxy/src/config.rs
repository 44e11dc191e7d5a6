//! The `[proxy]` section of the Shardgate config file: where the proxy
//! listens, which meta members it follows, how it forwards to nodes
//! (timeouts, pool, retries), replication acknowledgements, failure
//! handling (ejection, probing, owner-down policy), the migration window and
//! the strategy-fault fallback. Parsed strictly and checked by
//! [`ProxyConfig::validate`] before [`crate::run`] starts serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use shardgate_api::Limits;
use shardgate_api::addr::{base_url_form, check_base_url};
use shardgate_api::limits::{
    DEFAULT_MAX_BATCH_KEYS, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_KEY_SIZE, DEFAULT_MAX_TTL, DEFAULT_MAX_VALUE_SIZE, DEFAULT_TTL,
};
use shardgate_strategy::SandboxSettings;

/// How many owners must acknowledge a write before the client gets a success.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WriteAck {
    /// The first owner that answers with success.
    One,
    /// A majority of the key's owners: `replicas / 2 + 1`.
    #[default]
    Quorum,
    /// Every owner.
    All,
}

impl WriteAck {
    /// Acknowledgements needed out of `owners`.
    pub fn needed(self, owners: usize) -> usize {
        match self {
            WriteAck::One => 1.min(owners),
            WriteAck::Quorum => owners / 2 + 1,
            WriteAck::All => owners,
        }
    }
}

impl std::fmt::Display for WriteAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteAck::One => "one",
            WriteAck::Quorum => "quorum",
            WriteAck::All => "all",
        })
    }
}

/// How the proxy talks to nodes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamClient {
    /// The proxy's own HTTP/1.1 client: per-node pools of keep-alive
    /// connections, each request written and read by the task serving it.
    #[default]
    Direct,
    /// hyper-util's pooled legacy client (a connection task per connection).
    HyperUtil,
}

/// What happens to a key whose owners are all ejected.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OwnerDownPolicy {
    /// Answer 503 naming the owners that are down.
    FailFast,
    /// Route the key as if the ejected nodes were not there: the strategy is
    /// configured locally with the healthy nodes only, so the key goes to
    /// the next owner in its preference order; keys of healthy nodes do not
    /// move.
    #[default]
    NextOwner,
}

/// `proxy.rate_limit`: a token bucket per client IP address.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second one client IP may send to `/v1/`.
    pub requests_per_second: u32,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
}

/// `proxy.tls`: serve clients over TLS with this certificate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[proxy]`: the proxy role.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address the HTTP API listens on (`--listen` overrides it).
    pub listen: SocketAddr,
    /// API addresses of meta members (`http://host:port`, or
    /// `https://host:port` for members serving `meta.tls`); the proxy
    /// follows the routing watch through any of them.
    pub meta: Vec<String>,
    /// PEM file with the CA certificate(s) that signed the `https://` meta
    /// members' certificates; unset: the platform's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_ca: Option<PathBuf>,
    /// Time for one upstream request to a node (connect, send, full
    /// answer); on a pipelined connection, how long the pipe may go without
    /// an answer while requests wait (a node that keeps answering a deep
    /// queue is busy, not failed).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time to open a connection to a node.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// HTTP client to nodes: "direct" (in-task HTTP/1.1, cheapest) or "hyper-util".
    pub upstream_client: UpstreamClient,
    /// Idle keep-alive connections kept per node, and the most requests on
    /// connections of their own to one node at once (past the pipes).
    pub pool_max_idle_per_node: usize,
    /// Pipelined connections per node that carry the requests of many
    /// clients (0: every request on a connection of its own).
    pub pipelines_per_node: usize,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// A failed read (connection error, timeout, 5xx) is retried on the next
    /// owner this many times.
    pub read_retries: u32,
    /// Acknowledgements a write needs: "one", "quorum" or "all" of the key's owners.
    pub write_ack: WriteAck,
    /// Keys whose owners are all ejected: "fail_fast" (503) or "next_owner".
    pub owner_down: OwnerDownPolicy,
    /// Interval of active health checks (`GET /readyz` on every node).
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Consecutive failures (requests or health checks) that eject a node
    /// from routing and open its circuit breaker.
    pub eject_after_failures: u32,
    /// First probe delay of an ejected node; doubles after every failed probe.
    #[serde(with = "humantime_serde")]
    pub probe_backoff_min: Duration,
    /// Longest probe delay of an ejected node.
    #[serde(with = "humantime_serde")]
    pub probe_backoff_max: Duration,
    /// After a change of strategy, config or membership, a read that misses
    /// on a key's new owner is tried on its previous owner for this long
    /// ("0s" turns the window off).
    #[serde(with = "humantime_serde")]
    pub migration_window: Duration,
    /// Strategy faults (trap, exhausted budget, bad answer) within
    /// `fault_window` that make the proxy fall back to the last routing state
    /// that worked.
    pub fault_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub fault_window: Duration,
    /// Largest key, in bytes after percent-decoding (set it equal to the nodes').
    pub max_key_size: ByteSize,
    /// Largest value (set it equal to the nodes').
    pub max_value_size: ByteSize,
    /// Largest TTL a write may ask for (set it equal to the nodes').
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Most keys in one batch request.
    pub max_batch_keys: u32,
    /// Largest batch request body, and where a batch read response stops
    /// including values.
    pub max_batch_size: ByteSize,
    /// Time a client has to send a complete request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// On shutdown, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` on every request to a node;
    /// set it to the nodes' `node.data_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
    /// Like `node_token`, read from this file when the proxy starts
    /// (surrounding whitespace trimmed). At most one of the two may be set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_token_file: Option<PathBuf>,
    /// When set, every client request to `/v1/` must carry
    /// `Authorization: Bearer <token>`; `/healthz`, `/readyz`, `/status`,
    /// `/metrics` and `/openapi.json` stay open. Unset (the default): open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_token: Option<String>,
    /// Like `data_token`, read from this file when the proxy starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_token_file: Option<PathBuf>,
    /// Where the Redis protocol (RESP) front listens, when set (unset, the
    /// default: no RESP listener). Its connections count against
    /// `max_connections` with the HTTP ones; `tls`, `data_token` (`AUTH`)
    /// and `rate_limit` (per command) apply to it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_listen: Option<SocketAddr>,
    /// A RESP connection that has sent part of a command must send the rest
    /// within this time, or it is closed (as Redis closes a timed-out
    /// client: no reply). Bounds what a client that stops mid-frame holds.
    #[serde(with = "humantime_serde")]
    pub resp_frame_timeout: Duration,
    /// A RESP connection with nothing pending is closed after this long
    /// without a command; `0s` (the default, as Redis's `timeout 0`):
    /// never.
    #[serde(with = "humantime_serde")]
    pub resp_idle_timeout: Duration,
    /// Client connections served at once; one more gets a 503 naming this
    /// limit and is closed.
    pub max_connections: u32,
    /// Per-client-IP limit on `/v1/` requests
    /// (`{ requests_per_second = N, burst = M }`); over it: 429 with
    /// `Retry-After`. Unset (the default): no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// TLS on the client listener (`{ cert = "path", key = "path" }`);
    /// unset (the default): plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// When set: once the proxy has not heard from a meta member with a
    /// leader for this long (its routing may be stale), writes are refused
    /// with 503 naming this setting and `/readyz` reports not ready; reads
    /// keep being served from the last epoch (fail static). Unset (the
    /// default): writes go on by the last epoch however old it is.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<Duration>,
    /// The proxy's own URL (`http://host:port` or `https://host:port`), its
    /// identity in the reports to meta (`GET /v1/proxies`, the console).
    /// Unset (the default): the scheme and the address it listens on, or
    /// the host name in place of an unspecified address (`0.0.0.0`), as a
    /// node does; set it when neither is reachable. At most 512 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,

    /// Budgets of every call into the strategy (`memory`, `configure_fuel`,
    /// `control_fuel`, `route_fuel`) and the bound of the compiled-component
    /// cache (`compiled_cache_size`).
    pub strategy: SandboxSettings,
    /// Where compiled strategy components are kept, so a restart loads a
    /// large strategy without compiling it again. Unset (the default): the
    /// user's cache directory (`$XDG_CACHE_HOME` or `$HOME/.cache`, then
    /// `shardgate/compiled-strategies`). A directory that cannot be written
    /// logs one warning; the proxy then compiles on every load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiled_cache_dir: Option<PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            meta: vec!["http://127.0.0.1:7101".into()],
            meta_ca: None,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            upstream_client: UpstreamClient::Direct,
            pool_max_idle_per_node: 256,
            pipelines_per_node: 2,
            pool_idle_timeout: Duration::from_secs(90),
            read_retries: 1,
            write_ack: WriteAck::Quorum,
            owner_down: OwnerDownPolicy::NextOwner,
            health_interval: Duration::from_secs(1),
            eject_after_failures: 3,
            probe_backoff_min: Duration::from_millis(200),
            probe_backoff_max: Duration::from_secs(10),
            migration_window: Duration::from_secs(60),
            fault_threshold: 5,
            fault_window: Duration::from_secs(10),
            max_key_size: ByteSize::b(DEFAULT_MAX_KEY_SIZE),
            max_value_size: ByteSize::b(DEFAULT_MAX_VALUE_SIZE),
            max_ttl: DEFAULT_MAX_TTL,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS,
            max_batch_size: ByteSize::b(DEFAULT_MAX_BATCH_SIZE),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            node_token: None,
            node_token_file: None,
            data_token: None,
            data_token_file: None,
            resp_listen: None,
            resp_frame_timeout: Duration::from_secs(10),
            resp_idle_timeout: Duration::ZERO,
            max_connections: 1024,
            rate_limit: None,
            tls: None,
            max_staleness: None,
            advertise: None,

            strategy: SandboxSettings::default(),
            compiled_cache_dir: None,
        }
    }
}

/// A `[proxy]` value that cannot work; `key` is the full key path.
pub use shardgate_role::config::ConfigError;

/// Longest `proxy.advertise` (bytes): meta keeps proxy ids up to this size.
pub const MAX_ADVERTISE_BYTES: usize = 512;

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("proxy.{key}"), message)
}

impl ProxyConfig {
    /// Checks every value and the relations between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.meta.is_empty() {
            return Err(err("meta", "list at least one meta member address (http://host:port)"));
        }
        let both = ["http", "https"];
        for (i, m) in self.meta.iter().enumerate() {
            check_base_url(m, &both).map_err(|why| err(&format!("meta[{i}]"), format!("{m:?} is not {}: {why}", base_url_form(&both))))?;
        }
        if let Some(a) = &self.advertise {
            if a.len() > MAX_ADVERTISE_BYTES {
                return Err(err("advertise", format!("{} bytes, over the limit of {MAX_ADVERTISE_BYTES}", a.len())));
            }
            check_base_url(a, &both).map_err(|why| err("advertise", format!("{a:?} is not {}: {why}", base_url_form(&both))))?;
        }
        if self.meta_ca.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(err("meta_ca", "must be the path of a PEM file"));
        }
        for (key, d) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("health_interval", self.health_interval),
            ("probe_backoff_min", self.probe_backoff_min),
            ("fault_window", self.fault_window),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("resp_frame_timeout", self.resp_frame_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(err(key, "must be at least 1ms"));
            }
        }
        if let Err((key, message)) = self.strategy.validate() {
            return Err(err(&format!("strategy.{key}"), message));
        }
        if self.compiled_cache_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(err("compiled_cache_dir", "must be a directory path (turn the cache off with strategy.compiled_cache_size = 0)"));
        }
        if self.probe_backoff_max < self.probe_backoff_min {
            return Err(err("probe_backoff_max", "must not be shorter than proxy.probe_backoff_min"));
        }
        if self.pipelines_per_node > 64 {
            return Err(err("pipelines_per_node", format!("{} is over the limit of 64 (0 turns pipelining off)", self.pipelines_per_node)));
        }
        if self.eject_after_failures == 0 {
            return Err(err("eject_after_failures", "must be at least 1"));
        }
        if self.fault_threshold == 0 {
            return Err(err("fault_threshold", "must be at least 1"));
        }
        if self.read_retries > 16 {
            return Err(err("read_retries", format!("must be at most 16, got {}", self.read_retries)));
        }
        if self.max_staleness.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(err("max_staleness", "must be at least 1s (meta heartbeats come every second)"));
        }
        if self.max_connections == 0 {
            return Err(err("max_connections", "must be at least 1"));
        }
        if let Some(resp) = self.resp_listen
            && resp == self.listen
            && resp.port() != 0
        {
            return Err(err("resp_listen", format!("{resp} is proxy.listen too; give the RESP front a port of its own")));
        }
        if let Some(limit) = &self.rate_limit {
            if limit.requests_per_second == 0 {
                return Err(err("rate_limit.requests_per_second", "must be at least 1 (leave proxy.rate_limit unset for no limit)"));
            }
            if limit.burst == 0 {
                return Err(err("rate_limit.burst", "must be at least 1"));
            }
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if path.as_os_str().is_empty() {
                    return Err(err(key, "must be the path of a PEM file"));
                }
            }
        }
        for (key, token, file) in
            [("node_token", &self.node_token, &self.node_token_file), ("data_token", &self.data_token, &self.data_token_file)]
        {
            if token.is_some() && file.is_some() {
                return Err(err(key, format!("set proxy.{key} or proxy.{key}_file, not both")));
            }
            if let Some(token) = token {
                check_token(key, token)?;
            }
        }
        // The same rules as the node's, naming proxy.* keys.
        self.limits().validate().map_err(|e| ConfigError::new(e.key, e.message))?;
        Ok(())
    }

    /// The request limits the proxy enforces before routing (the same
    /// checks, with the same messages, as a node's).
    pub fn limits(&self) -> Limits {
        Limits {
            role: "proxy",
            max_key_size: self.max_key_size.as_u64() as usize,
            max_value_size: self.max_value_size.as_u64() as usize,
            default_ttl: self.max_ttl.min(DEFAULT_TTL),
            max_ttl: self.max_ttl,
            max_batch_keys: self.max_batch_keys as usize,
            max_batch_size: self.max_batch_size.as_u64() as usize,
        }
    }
}

pub use shardgate_auth::MAX_TOKEN_LEN;

/// A token must be sendable as an `Authorization: Bearer` value
/// (`shardgate_auth::validate`).
fn check_token(key: &str, token: &str) -> Result<(), ConfigError> {
    shardgate_auth::validate(token).map_err(|reason| err(key, reason))
}

/// A token file that could not be read, or holds no usable token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("proxy.{key}_file {path}: {source}")]
    Read { key: &'static str, path: String, source: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl ProxyConfig {
    /// The token sent to nodes: `proxy.node_token`, or the contents of
    /// `proxy.node_token_file` (trimmed, checked the same way), or `None`.
    pub fn resolve_node_token(&self) -> Result<Option<String>, TokenFileError> {
        resolve_token("node_token", &self.node_token, &self.node_token_file)
    }

    /// The token clients must present: `proxy.data_token`, or the contents
    /// of `proxy.data_token_file`, or `None` (the data API is open).
    pub fn resolve_data_token(&self) -> Result<Option<String>, TokenFileError> {
        resolve_token("data_token", &self.data_token, &self.data_token_file)
    }
}

fn resolve_token(key: &'static str, token: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>, TokenFileError> {
    if let Some(token) = token {
        return Ok(Some(token.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { key, path: path.display().to_string(), source })?;
    let token = text.trim().to_string();
    check_token(&format!("{key}_file"), &token)?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[proxy]` table's text, parsed strictly and validated (what the
    /// binary's file loader does with the table).
    fn parse(text: &str) -> Result<ProxyConfig, String> {
        let c: ProxyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn default_is_valid_and_strings_parse() {
        ProxyConfig::default().validate().unwrap();
        let c = parse("request_timeout = \"250ms\"\nmax_value_size = \"4MiB\"\nwrite_ack = \"all\"\nowner_down = \"fail_fast\"\n").unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.max_value_size.as_u64(), 4 << 20);
        assert_eq!((c.write_ack, c.owner_down), (WriteAck::All, OwnerDownPolicy::FailFast));
        assert_eq!(parse("").unwrap().migration_window, Duration::from_secs(60));
        let c = parse("max_connections = 8\nrate_limit = { requests_per_second = 100, burst = 20 }\n").unwrap();
        assert_eq!((c.max_connections, c.rate_limit), (8, Some(RateLimit { requests_per_second: 100, burst: 20 })));
        assert_eq!(ProxyConfig::default().rate_limit, None);
        let c = parse("meta = [\"https://m1:7101\", \"http://m2:7101\"]\nmeta_ca = \"/etc/shardgate/ca.pem\"\n").unwrap();
        assert_eq!(c.meta_ca.as_deref(), Some(std::path::Path::new("/etc/shardgate/ca.pem")));
        assert_eq!(ProxyConfig::default().advertise, None);
        assert_eq!(
            parse("advertise = \"https://proxy-1.example:7000\"\n").unwrap().advertise.as_deref(),
            Some("https://proxy-1.example:7000")
        );

        assert_eq!(ProxyConfig::default().resp_listen, None);
        assert_eq!(
            (ProxyConfig::default().resp_frame_timeout, ProxyConfig::default().resp_idle_timeout),
            (Duration::from_secs(10), Duration::ZERO)
        );
        let c = parse("resp_frame_timeout = \"2s\"\nresp_idle_timeout = \"5m\"\n").unwrap();
        assert_eq!((c.resp_frame_timeout, c.resp_idle_timeout), (Duration::from_secs(2), Duration::from_secs(300)));
        assert_eq!(parse("resp_listen = \"127.0.0.1:7379\"\n").unwrap().resp_listen, Some(SocketAddr::from(([127, 0, 0, 1], 7379))));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("request_timeout = \"1s\"\nretries = 3\n").unwrap_err();
        assert!(e.contains("retries") && e.contains("line 2"), "{e}");
        let cases = [
            ("meta = []", "proxy.meta"),
            ("meta = [\"127.0.0.1:1\"]", "proxy.meta[0]"),
            ("meta = [\"ftp://a:1\"]", "proxy.meta[0]: \"ftp://a:1\" is not http://host:port or https://host:port"),
            ("meta_ca = \"\"", "proxy.meta_ca: must be the path"),
            ("advertise = \"10.0.0.7:7000\"", "proxy.advertise: \"10.0.0.7:7000\" is not http://host:port"),
            ("advertise = \"http://p:7000/x\"", "proxy.advertise"),
            ("request_timeout = \"0s\"", "proxy.request_timeout"),
            ("resp_frame_timeout = \"0s\"", "proxy.resp_frame_timeout"),
            ("eject_after_failures = 0", "proxy.eject_after_failures"),
            ("probe_backoff_max = \"1ms\"", "proxy.probe_backoff_max"),
            ("max_key_size = 0", "proxy.max_key_size"),
            ("write_ack = \"most\"", "write_ack"),
            ("max_connections = 0", "proxy.max_connections"),
            ("strategy = { configure_fuel = 1 }", "proxy.strategy.configure_fuel"),
            ("compiled_cache_dir = \"\"", "proxy.compiled_cache_dir"),
            ("rate_limit = { requests_per_second = 0, burst = 1 }", "proxy.rate_limit.requests_per_second"),
            ("rate_limit = { requests_per_second = 5, burst = 0 }", "proxy.rate_limit.burst"),
            ("rate_limit = { requests_per_second = 5 }", "burst"),
            ("rate_limit = { requests_per_second = 5, burst = 5, per = 1 }", "per"),
            ("tls = { cert = \"\", key = \"k.pem\" }", "proxy.tls.cert"),
            ("tls = { cert = \"c.pem\" }", "key"),
            ("resp_listen = \"127.0.0.1:7000\"", "proxy.resp_listen: 127.0.0.1:7000 is proxy.listen too"),
            ("resp_listen = \"localhost\"", "resp_listen"),
        ];
        for (line, needle) in cases {
            let e = parse(&format!("{line}\n")).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn tokens_are_checked_and_read_from_files() {
        let cases = [
            ("node_token = \"\"", "proxy.node_token"),
            ("data_token = \"has space\"", "proxy.data_token"),
            ("data_token = \"a\"\ndata_token_file = \"/x\"", "proxy.data_token"),
            ("node_token = \"a\"\nnode_token_file = \"/x\"", "proxy.node_token_file, not both"),
        ];
        for (line, needle) in cases {
            let e = parse(&format!("{line}\n")).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        let c = ProxyConfig { node_token_file: Some(file.clone()), data_token: Some("d".into()), ..Default::default() };
        c.validate().unwrap();
        assert_eq!(c.resolve_node_token().unwrap().as_deref(), Some("s3cret"));
        assert_eq!(c.resolve_data_token().unwrap().as_deref(), Some("d"));
        std::fs::write(&file, "\n").unwrap();
        let e = c.resolve_node_token().unwrap_err().to_string();
        assert!(e.contains("proxy.node_token_file") && e.contains("got 0"), "{e}");
        let missing = ProxyConfig { data_token_file: Some(dir.path().join("absent")), ..Default::default() };
        let e = missing.resolve_data_token().unwrap_err().to_string();
        assert!(e.starts_with("proxy.data_token_file") && e.contains("absent"), "{e}");
        assert_eq!(ProxyConfig::default().resolve_node_token().unwrap(), None);
    }

    #[test]
    fn ack_counts() {
        assert_eq!([1, 2, 3].map(|n| WriteAck::Quorum.needed(n)), [1, 2, 2]);
        assert_eq!(WriteAck::One.needed(3), 1);
        assert_eq!(WriteAck::All.needed(3), 3);
    }
}
