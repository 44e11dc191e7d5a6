//! `[meta]` of the Shardgate config file: identity, addresses, data
//! directory, how a new cluster forms (initial `members`, or `join` through an
//! existing member), Raft timing, snapshot policy, limits and optional TLS
//! (`tls = { cert, key, ca }`), how connections are accepted
//! (`max_connections`, `header_read_timeout`, `body_read_timeout`), how
//! much costly strategy work runs at once (`max_concurrent_previews`,
//! `max_concurrent_admissions`) and the strategies' budgets (`[meta.strategy]`).
//!
//! Read once at start by [`crate::run`]; `validate` names the offending key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use shardgate_strategy::SandboxSettings;

use crate::state::validate_member_addr;

/// A member of a new cluster, for bootstrapping.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub id: u64,
    /// The member's API address, `http://host:port` (`https://` when the
    /// members serve `meta.tls`).
    pub addr: String,
}

/// `meta.tls`: serve the API (JSON API, Raft RPCs, forwarded writes: one
/// listener) over TLS, and check the other members' certificates.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetaTlsConfig {
    /// PEM file with this member's certificate chain, leaf first; its names
    /// must cover the host of this member's address.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificate(s) that signed the members'
    /// certificates, trusted for Raft RPCs, forwarded writes and `join`.
    /// Unset: the platform's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// Raft id of this member, > 0, unique in the cluster.
    pub id: u64,
    /// Address to listen on, `ip:port` (`shardgate meta` binds it; tests
    /// pass a listener).
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// API address the other members and clients use to reach this one,
    /// `http://host:port` (`https://host:port` with `tls`); default
    /// `http://` (`https://` with `tls`) + the bound address.
    pub advertise: Option<String>,
    /// Where the Raft log, vote and snapshots live (`meta.redb`).
    pub data_dir: PathBuf,
    /// Initial voters of a NEW cluster (every initial member lists the same
    /// set); the lowest id initializes it. Ignored once the data directory
    /// holds state.
    pub members: Vec<InitialMember>,
    /// Join an existing cluster through any member (`http://host:port` or
    /// `https://host:port`):
    /// added as learner, then promoted to voter. Ignored once this member is
    /// part of a cluster.
    pub join: Option<String>,
    /// Leader heartbeat interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Election timeout T (openraft samples it from [T, 1.5T)). openraft
    /// first waits out a leader lease of 1.5T after the last heartbeat, so a
    /// follower starts an election 2.5T..3T after the leader died: the 500ms
    /// default puts failover at about 1.3-1.6 s (the bar is 2 s).
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot (for lagging followers).
    pub keep_logs: u64,
    /// Largest strategy component accepted (string like "32MiB" or bytes).
    pub max_component_size: ByteSize,
    /// Budgets of every call into a strategy (`memory`, `configure_fuel`,
    /// `control_fuel`, `route_fuel`) and the bound of the compiled-component
    /// cache kept under `data_dir` (`compiled_cache_size`).
    pub strategy: SandboxSettings,
    /// How long a write may wait for quorum and commit before the member
    /// answers 503.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Heartbeat interval of `/v1/watch` streams.
    #[serde(with = "humantime_serde")]
    pub watch_heartbeat: Duration,
    /// Keys routed (twice) when admitting a strategy activation.
    pub admission_sample_keys: usize,
    /// When set, every write (POST/PATCH/DELETE under `/v1/`, except the
    /// read-only `/v1/preview`) and every Raft RPC between members needs
    /// `Authorization: Bearer <token>`; all members of a cluster use the
    /// same token. Unset (the default): open, as for `shardgate dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// TLS on the API listener (`{ cert = "path", key = "path", ca = "path" }`,
    /// `ca` optional). Unset (the default): plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<MetaTlsConfig>,
    /// Connections served at once (clients, proxies and the other members'
    /// Raft RPCs together); one more gets a 503 naming this limit and is
    /// closed.
    pub max_connections: u32,
    /// Time a client has to send a complete request head, and with `tls`
    /// to finish the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body once its head has
    /// arrived; a slower one is answered 408 naming this key.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// `POST /v1/preview` requests computed at once on this member (each
    /// configures a strategy and routes up to 100000 keys); one more is
    /// answered 503 with `Retry-After: 1` naming this key.
    pub max_concurrent_previews: u32,
    /// Strategy uploads (compiling a component) and routing-change
    /// admissions run at once on the leader; one more upload is answered
    /// 503 with `Retry-After: 1` naming this key, a routing change waits
    /// for a place up to `write_timeout` first.
    pub max_concurrent_admissions: u32,
    /// A learner is promoted to voter only when it is at most this many log
    /// entries behind the leader (and has acknowledged the leader within
    /// `election_timeout`): a voter that cannot follow would leave the
    /// cluster without a quorum.
    pub promotion_max_lag: u64,
    /// How long adding a learner, a promotion or a removal may take before
    /// the member answers 503 `membership_timeout` (the change may still be
    /// pending: `GET /v1/raft/status` says so).
    #[serde(with = "humantime_serde")]
    pub membership_timeout: Duration,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            advertise: None,
            data_dir: PathBuf::from("data/meta"),
            members: Vec::new(),
            join: None,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            snapshot_every: 1000,
            keep_logs: 1000,
            max_component_size: ByteSize::b(shardgate_strategy::DEFAULT_MAX_COMPONENT_BYTES as u64),
            strategy: SandboxSettings::default(),
            write_timeout: Duration::from_secs(5),
            watch_heartbeat: Duration::from_secs(1),
            admission_sample_keys: 1000,
            admin_token: None,
            tls: None,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_concurrent_previews: 2,
            max_concurrent_admissions: 2,
            promotion_max_lag: 100,
            membership_timeout: Duration::from_secs(30),
        }
    }
}

/// A `[meta]` value that cannot work; `key` is the full key path.
pub use shardgate_role::config::ConfigError;

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("meta.{key}"), message)
}

/// `meta.listen` from its string form, or an error naming the key (the
/// message `validate` gave while the field was a string).
fn listen_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| serde::de::Error::custom(format!("meta.listen: {text:?} is not host:port with an IP address")))
}

pub use shardgate_auth::MAX_TOKEN_LEN;

/// Largest accepted `max_concurrent_previews` / `max_concurrent_admissions`
/// (each running one may hold a strategy instance of up to 256 MiB).
pub const MAX_CONCURRENT_WASM: u32 = 64;

/// Largest accepted `max_component_size`.
pub const MAX_COMPONENT_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

impl MetaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(err("id", "must be > 0"));
        }
        if let Some(a) = &self.advertise {
            validate_member_addr("address", a).map_err(|e| err("advertise", e.to_string()))?;
            self.check_own_scheme("advertise", a)?;
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert", Some(&tls.cert)), ("tls.key", Some(&tls.key)), ("tls.ca", tls.ca.as_ref())] {
                if path.is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(err(key, "must be the path of a PEM file"));
                }
            }
        }
        if let Some(token) = &self.admin_token {
            shardgate_auth::validate(token).map_err(|reason| err("admin_token", reason))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(err("data_dir", "must not be empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(err(&format!("members[{i}].id"), "must be > 0"));
            }
            if !seen.insert(m.id) {
                return Err(err(&format!("members[{i}].id"), format!("duplicate member id {}", m.id)));
            }
            let key = format!("members[{i}].addr");
            validate_member_addr("address", &m.addr).map_err(|e| err(&key, e.to_string()))?;
            if m.id == self.id {
                self.check_own_scheme(&key, &m.addr)?;
            }
        }
        if !self.members.is_empty() && !seen.contains(&self.id) {
            return Err(err("members", format!("must include this member (id {})", self.id)));
        }
        if let Some(j) = &self.join {
            if !self.members.is_empty() {
                return Err(err("join", "give either members (new cluster) or join (existing cluster), not both"));
            }
            validate_member_addr("address", j).map_err(|e| err("join", e.to_string()))?;
        }
        if self.heartbeat_interval < Duration::from_millis(10) {
            return Err(err("heartbeat_interval", "must be at least 10ms"));
        }
        if self.election_timeout < self.heartbeat_interval * 3 {
            return Err(err("election_timeout", "must be at least 3x heartbeat_interval"));
        }
        if self.snapshot_every == 0 {
            return Err(err("snapshot_every", "must be > 0"));
        }
        let size = self.max_component_size.as_u64();
        if size == 0 || size > MAX_COMPONENT_SIZE_LIMIT {
            return Err(err("max_component_size", format!("must be between 1 byte and 64MiB, got {}", self.max_component_size)));
        }
        if let Err((key, message)) = self.strategy.validate() {
            return Err(err(&format!("strategy.{key}"), message));
        }
        if self.write_timeout < Duration::from_millis(100) {
            return Err(err("write_timeout", "must be at least 100ms"));
        }
        if self.watch_heartbeat < Duration::from_millis(10) || self.watch_heartbeat > Duration::from_secs(60) {
            return Err(err("watch_heartbeat", "must be between 10ms and 60s"));
        }
        if self.admission_sample_keys == 0 || self.admission_sample_keys > 1_000_000 {
            return Err(err("admission_sample_keys", "must be between 1 and 1000000"));
        }
        if self.max_connections == 0 {
            return Err(err("max_connections", "must be at least 1"));
        }
        if self.header_read_timeout.is_zero() {
            return Err(err("header_read_timeout", "must be longer than 0s"));
        }
        if self.body_read_timeout.is_zero() {
            return Err(err("body_read_timeout", "must be longer than 0s"));
        }
        for (key, value) in
            [("max_concurrent_previews", self.max_concurrent_previews), ("max_concurrent_admissions", self.max_concurrent_admissions)]
        {
            if value == 0 || value > MAX_CONCURRENT_WASM {
                return Err(err(key, format!("must be between 1 and {MAX_CONCURRENT_WASM}, got {value}")));
            }
        }
        if self.membership_timeout < self.write_timeout {
            return Err(err("membership_timeout", format!("must be at least write_timeout ({:?})", self.write_timeout)));
        }
        Ok(())
    }

    /// This member's own address must use the scheme its listener speaks:
    /// `https://` with `meta.tls`, `http://` without.
    fn check_own_scheme(&self, key: &str, addr: &str) -> Result<(), ConfigError> {
        match (self.tls.is_some(), addr.starts_with("https://")) {
            (true, false) => Err(err(key, format!("{addr:?} must start with https:// because meta.tls is set"))),
            (false, true) => Err(err(key, format!("{addr:?} is https:// but meta.tls is not set (this member serves plain HTTP)"))),
            _ => Ok(()),
        }
    }

    /// openraft's `Config` for these settings.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let election_min = self.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "shardgate-meta".into(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election_min,
            election_timeout_max: election_min + election_min / 2,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            // Leaders without quorum must not hang requests: pre-vote keeps a
            // partitioned member from disrupting the cluster on rejoin.
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config.validate().map_err(|e| err("election_timeout", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_toml_strings() {
        MetaConfig::default().validate().unwrap();
        let c: MetaConfig = toml::from_str(
            r#"
            id = 2
            data_dir = "/tmp/x"
            members = [{ id = 1, addr = "http://127.0.0.1:7101" }, { id = 2, addr = "http://127.0.0.1:7102" }]
            election_timeout = "800ms"
            max_component_size = "1MiB"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.election_timeout, Duration::from_millis(800));
        assert_eq!(c.max_component_size.as_u64(), 1024 * 1024);
        let raft = c.raft_config().unwrap();
        assert_eq!((raft.election_timeout_min, raft.election_timeout_max), (800, 1200));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(&str, &str)> = vec![
            ("id = 0", "meta.id"),
            ("max_connections = 0", "meta.max_connections: must be at least 1"),
            ("header_read_timeout = \"0s\"", "meta.header_read_timeout: must be longer than 0s"),
            ("body_read_timeout = \"0s\"", "meta.body_read_timeout: must be longer than 0s"),
            ("max_concurrent_previews = 0", "meta.max_concurrent_previews: must be between 1 and 64, got 0"),
            ("max_concurrent_admissions = 65", "meta.max_concurrent_admissions: must be between 1 and 64, got 65"),
            ("members = [{ id = 2, addr = \"http://a:1\" }]", "meta.members: must include"),
            ("members = [{ id = 1, addr = \"a:1\" }]", "meta.members[0].addr"),
            ("join = \"ftp://x:1\"", "meta.join"),
            ("max_component_size = \"1GiB\"", "meta.max_component_size"),
            ("strategy = { route_fuel = 5 }", "meta.strategy.route_fuel: must be at least 1000"),
            ("strategy = { memory = \"8GiB\" }", "meta.strategy.memory: must be between 1MiB and 4GiB"),
            ("election_timeout = \"100ms\"", "meta.election_timeout"),
            ("admin_token = \"\"", "meta.admin_token: must be 1 to"),
            ("admin_token = \"two words\"", "meta.admin_token: must be visible"),
            ("tls = { cert = \"\", key = \"k.pem\" }", "meta.tls.cert: must be the path"),
            ("tls = { cert = \"c.pem\", key = \"\" }", "meta.tls.key: must be the path"),
            ("tls = { cert = \"c.pem\", key = \"k.pem\", ca = \"\" }", "meta.tls.ca: must be the path"),
            ("advertise = \"https://a:1\"", "meta.advertise: \"https://a:1\" is https:// but meta.tls is not set"),
            (
                "tls = { cert = \"c.pem\", key = \"k.pem\" }\nadvertise = \"http://a:1\"",
                "meta.advertise: \"http://a:1\" must start with https://",
            ),
            (
                "tls = { cert = \"c.pem\", key = \"k.pem\" }\nmembers = [{ id = 1, addr = \"http://a:1\" }, { id = 2, addr = \"https://b:1\" }]",
                "meta.members[0].addr: \"http://a:1\" must start with https://",
            ),
            (
                "members = [{ id = 1, addr = \"ftp://a:1\" }]",
                "meta.members[0].addr: address \"ftp://a:1\" is not http://host:port or https://host:port",
            ),
        ];
        for (text, needle) in cases {
            let c: MetaConfig = toml::from_str(text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(needle), "{text}: {e}");
        }
        let c: MetaConfig = toml::from_str("admin_token = \"s3cret-token\"").unwrap();
        c.validate().unwrap();
        let c: MetaConfig = toml::from_str(
            "tls = { cert = \"c.pem\", key = \"k.pem\", ca = \"ca.pem\" }\nadvertise = \"https://a:1\"\njoin = \"https://b:1\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.tls.unwrap().ca, Some(PathBuf::from("ca.pem")));
        for unknown in ["tls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"x\" }", "tls = { cert = \"c.pem\" }"] {
            let e = toml::from_str::<MetaConfig>(unknown).unwrap_err().to_string();
            assert!(e.contains("client_ca") || e.contains("missing field `key`"), "{unknown}: {e}");
        }
        // `listen` is a SocketAddr: a bad one fails to parse, naming the key.
        let e = toml::from_str::<MetaConfig>("listen = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("meta.listen: \"nope\" is not host:port with an IP address"), "{e}");
        let c: MetaConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\nmax_connections = 8\nheader_read_timeout = \"250ms\"\nbody_read_timeout = \"2s\"\nmax_concurrent_previews = 1\nmax_concurrent_admissions = 3",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.listen.port(), c.max_connections, c.header_read_timeout), (0, 8, Duration::from_millis(250)));
        assert_eq!((c.body_read_timeout, c.max_concurrent_previews, c.max_concurrent_admissions), (Duration::from_secs(2), 1, 3));
        let unknown = toml::from_str::<MetaConfig>("idd = 1").unwrap_err().to_string();
        assert!(unknown.contains("idd"), "{unknown}");
    }
}
