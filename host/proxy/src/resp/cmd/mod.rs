//! The RESP commands: the table of every command served ([`SPECS`]: name,
//! arity, flags and key positions as `COMMAND` reports them, and whether it
//! reads, writes or acts on the connection), the per-connection
//! [`Session`], and dispatch to one module per command family, as
//! mini-redis does: [`strings`] (GET, SET and friends, INCR/DECR),
//! [`keyspace`] (DEL, EXISTS, EXPIRE, TTL, PERSIST), [`multi`] (MGET,
//! MSET, MSETNX), [`connection`] (PING, AUTH, HELLO, CLIENT, ...) and
//! [`server`] (COMMAND, INFO, DBSIZE).
//!
//! Where it sits in the request flow: the connection loop of
//! [`crate::resp`] looks each parsed command up here, runs connection
//! commands on its session and data commands through [`run_data`], which
//! loads the routing epoch once per command and calls the same routing
//! code as the HTTP front ([`crate::keys`], [`crate::batches`]).

pub mod connection;
pub mod keyspace;
pub mod multi;
pub mod server;
pub mod strings;

use std::time::Duration;

use bytes::Bytes;
use shardgate_api::ApiError;

use crate::context::Shared;
use crate::error::RequestError;
use crate::resp::frame::Reply;
use crate::upstream::UpstreamResponse;

/// What a command does, for ordering pipelined commands and for access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Acts on the connection's session: runs alone, in order.
    Connection,
    /// Reads its keys: runs beside other commands on other keys.
    Read,
    /// Writes its keys: runs beside commands on other keys.
    Write,
    /// Reads cluster-wide state (INFO, DBSIZE): runs alone.
    Server,
}

/// One command as `COMMAND` describes it.
#[derive(Debug)]
pub struct Spec {
    /// Lower case.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n`
    /// at least n.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// Key positions: first, last (-1: the last argument), step; 0 0 0 for
    /// none.
    pub keys: (i64, i64, i64),
    pub kind: Kind,
}

const fn spec(name: &'static str, arity: i64, flags: &'static [&'static str], keys: (i64, i64, i64), kind: Kind) -> Spec {
    Spec { name, arity, flags, keys, kind }
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly", "fast"];
const C: &[&str] = &["fast", "loading", "stale"];

/// Every command served, in `COMMAND`'s order.
pub static SPECS: &[Spec] = &[
    spec("get", 2, R, (1, 1, 1), Kind::Read),
    spec("set", -3, W, (1, 1, 1), Kind::Write),
    spec("setex", 4, W, (1, 1, 1), Kind::Write),
    spec("psetex", 4, W, (1, 1, 1), Kind::Write),
    spec("setnx", 3, W, (1, 1, 1), Kind::Write),
    spec("getdel", 2, W, (1, 1, 1), Kind::Write),
    spec("getex", -2, W, (1, 1, 1), Kind::Write),
    spec("del", -2, W, (1, -1, 1), Kind::Write),
    spec("unlink", -2, W, (1, -1, 1), Kind::Write),
    spec("exists", -2, R, (1, -1, 1), Kind::Read),
    spec("mget", -2, R, (1, -1, 1), Kind::Read),
    spec("mset", -3, W, (1, -1, 2), Kind::Write),
    spec("msetnx", -3, W, (1, -1, 2), Kind::Write),
    spec("incr", 2, W, (1, 1, 1), Kind::Write),
    spec("incrby", 3, W, (1, 1, 1), Kind::Write),
    spec("decr", 2, W, (1, 1, 1), Kind::Write),
    spec("decrby", 3, W, (1, 1, 1), Kind::Write),
    spec("expire", -3, W, (1, 1, 1), Kind::Write),
    spec("pexpire", -3, W, (1, 1, 1), Kind::Write),
    spec("ttl", 2, R, (1, 1, 1), Kind::Read),
    spec("pttl", 2, R, (1, 1, 1), Kind::Read),
    spec("persist", 2, W, (1, 1, 1), Kind::Write),
    spec("ping", -1, C, (0, 0, 0), Kind::Connection),
    spec("echo", 2, C, (0, 0, 0), Kind::Connection),
    spec("quit", -1, C, (0, 0, 0), Kind::Connection),
    spec("select", 2, C, (0, 0, 0), Kind::Connection),
    spec("hello", -1, C, (0, 0, 0), Kind::Connection),
    spec("auth", -2, C, (0, 0, 0), Kind::Connection),
    spec("client", -2, C, (0, 0, 0), Kind::Connection),
    spec("command", -1, C, (0, 0, 0), Kind::Connection),
    spec("info", -1, &["stale"], (0, 0, 0), Kind::Server),
    spec("dbsize", 1, &["readonly"], (0, 0, 0), Kind::Server),
];

/// The spec of the command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 16 {
        return None;
    }
    SPECS.iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

impl Spec {
    /// This command's position in [`SPECS`] (every `&'static Spec` is one
    /// of its entries: [`lookup`] hands them out).
    pub fn index(&'static self) -> usize {
        let at = (self as *const Spec as usize - SPECS.as_ptr() as usize) / std::mem::size_of::<Spec>();
        debug_assert!(std::ptr::eq(&SPECS[at], self), "a Spec outside SPECS");
        at
    }

    /// True when `args` (the name included) has this command's arity.
    pub fn arity_ok(&self, args: usize) -> bool {
        let n = args as i64;
        if self.arity >= 0 { n == self.arity } else { n >= -self.arity }
    }

    /// The key arguments of `args`.
    pub fn key_args<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> + 'a {
        let (first, last, step) = self.keys;
        let end = if last < 0 { args.len() as i64 + last } else { last.min(args.len() as i64 - 1) };
        let (first, step) = (first.max(1) as usize, step.max(1) as usize);
        let keys = if self.keys.0 == 0 { 0..0 } else { first..(end + 1).max(first as i64) as usize };
        keys.step_by(step).filter_map(move |i| args.get(i))
    }
}

/// What one connection remembers between commands.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub peer: std::net::SocketAddr,
    pub name: Option<Bytes>,
    /// RESP3 after `HELLO 3`.
    pub resp3: bool,
    /// True when `proxy.data_token` is unset or `AUTH` gave it.
    pub authenticated: bool,
    /// `QUIT` was asked: close after its reply.
    pub quit: bool,
}

/// `ERR wrong number of arguments for '<name>' command`.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// `ERR syntax error`.
pub fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// `ERR value is not an integer or out of range`.
pub fn not_an_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// An argument as a signed 64-bit integer, as Redis reads one.
pub fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg).ok().filter(|s| !s.starts_with('+') && !s.is_empty()).and_then(|s| s.parse().ok()).ok_or_else(not_an_integer)
}

/// A key argument checked like the HTTP front checks one.
pub fn check_key(shared: &Shared, key: &[u8]) -> Result<(), Reply> {
    if key.is_empty() {
        return Err(Reply::err(ApiError::EmptyKey));
    }
    let limit = shared.limits.max_key_size;
    if key.len() > limit {
        return Err(Reply::err(ApiError::KeyTooLong { size: key.len(), limit, limit_name: shared.limits.name("max_key_size") }));
    }
    Ok(())
}

/// A relative or absolute expiry argument (`EX`, `PX`, `EXAT`, `PXAT`, or
/// a command's seconds / milliseconds argument) as a TTL, checked against
/// `proxy.max_ttl`. `None`: the time is already past (the key is to be
/// deleted). `command` names the command in the error, as Redis does.
pub fn expiry(shared: &Shared, unit: ExpiryUnit, arg: &[u8], command: &str) -> Result<Option<Duration>, Reply> {
    let n = integer(arg)?;
    let invalid = || Reply::err(format!("invalid expire time in '{command}' command"));
    let ms: i64 = match unit {
        ExpiryUnit::Seconds => n.checked_mul(1000).ok_or_else(invalid)?,
        ExpiryUnit::Millis => n,
        ExpiryUnit::UnixSeconds | ExpiryUnit::UnixMillis => {
            let at = if unit == ExpiryUnit::UnixSeconds { n.checked_mul(1000).ok_or_else(invalid)? } else { n };
            if at <= 0 {
                return Err(invalid());
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let left = at - now;
            if left <= 0 {
                return Ok(None);
            }
            left
        }
    };
    if ms <= 0 {
        return Err(invalid());
    }
    let max = shared.limits.max_ttl;
    if ms as u128 > max.as_millis() {
        return Err(Reply::err(format!(
            "invalid expire time in '{command}' command: over the limit {} ({}s)",
            shared.limits.name("max_ttl"),
            max.as_secs()
        )));
    }
    Ok(Some(Duration::from_millis(ms as u64)))
}

/// How an expiry argument counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryUnit {
    Seconds,
    Millis,
    UnixSeconds,
    UnixMillis,
}

/// A routing or forwarding failure as an error reply.
pub fn request_error(e: RequestError) -> Reply {
    Reply::err(e)
}

/// A node answer the command did not expect, as an error reply (the
/// node's own message when it sent one).
pub fn node_error(r: &UpstreamResponse) -> Reply {
    let message = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {}", r.status.as_u16()));
    Reply::err(message)
}

/// Runs a data command (the arity was checked) with the routing epoch in
/// force, loaded once.
pub async fn run_data(shared: &Shared, spec: &'static Spec, args: &[Bytes]) -> Reply {
    for key in spec.key_args(args) {
        if let Err(reply) = check_key(shared, key) {
            return reply;
        }
    }
    let epoch = shared.routing.load();
    let ctx = Ctx { shared, epoch: &epoch };
    match spec.name {
        "get" => strings::get(&ctx, args).await,
        "set" => strings::set(&ctx, args).await,
        "setex" => strings::setex(&ctx, args, ExpiryUnit::Seconds).await,
        "psetex" => strings::setex(&ctx, args, ExpiryUnit::Millis).await,
        "setnx" => strings::setnx(&ctx, args).await,
        "getdel" => strings::getdel(&ctx, args).await,
        "getex" => strings::getex(&ctx, args).await,
        "incr" => strings::incr_by(&ctx, &args[1], Ok(1)).await,
        "decr" => strings::incr_by(&ctx, &args[1], Ok(-1)).await,
        "incrby" => strings::incr_by(&ctx, &args[1], integer(&args[2])).await,
        "decrby" => {
            let by = integer(&args[2]).and_then(|n| n.checked_neg().ok_or_else(|| Reply::err("decrement would overflow")));
            strings::incr_by(&ctx, &args[1], by).await
        }
        "del" | "unlink" => keyspace::del(&ctx, &args[1..]).await,
        "exists" => keyspace::exists(&ctx, &args[1..]).await,
        "expire" => keyspace::expire(&ctx, args, ExpiryUnit::Seconds).await,
        "pexpire" => keyspace::expire(&ctx, args, ExpiryUnit::Millis).await,
        "ttl" => keyspace::ttl(&ctx, &args[1], false).await,
        "pttl" => keyspace::ttl(&ctx, &args[1], true).await,
        "persist" => keyspace::persist(&ctx, &args[1]).await,
        "mget" => multi::mget(&ctx, &args[1..]).await,
        "mset" => multi::mset(&ctx, &args[1..], false).await,
        "msetnx" => multi::mset(&ctx, &args[1..], true).await,
        "info" => server::info(&ctx, args).await,
        "dbsize" => server::dbsize(&ctx).await,
        other => Reply::err(format!("unknown command '{other}'")),
    }
}

/// What a data command runs with: the proxy and the epoch it loaded.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub epoch: &'a crate::routing::RoutingEpoch,
}
