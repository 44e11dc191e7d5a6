//! The proxy's Redis protocol front (`proxy.resp_listen`): RESP2, and RESP3
//! after `HELLO 3`, for every Redis client, `redis-cli` and
//! `redis-benchmark`. The commands are in [`cmd`], the wire format in
//! [`frame`].
//!
//! Request flow: the accept loop every role shares
//! ([`shardgate_role::serve::serve_streams`]: the one `proxy.max_connections`
//! cap of the HTTP listener too, optional TLS with `proxy.tls`) -> [`serve`]
//! for the connection: read -> [`frame::parse`] every complete command in
//! the buffer (limits checked on each header; a frame that cannot be
//! resynchronised is answered `-ERR Protocol error: ...` and the connection
//! closed) -> per command: `proxy.rate_limit`, then `AUTH` when
//! `proxy.data_token` is set -> [`cmd`] -> the same routing code as the
//! HTTP front ([`crate::keys`], [`crate::batches`]: the epoch in force
//! loaded once per command, owners, replicas, `proxy.write_ack`, the
//! migration window, failure handling) -> replies written in order, every
//! reply of one read in one write.
//!
//! Pipelining: the commands of one read run concurrently in *waves*: a
//! command joins the current wave unless it writes a key that a command of
//! the wave uses, or uses a key that one writes, or acts on the connection;
//! then the wave is finished first. So a pipelined `SET k` then `GET k`
//! sees its own write, as on one Redis server, and 16 `GET`s to 16 keys go
//! out together (the reads to one node leave in one write of its pipelined
//! connection).

pub(crate) mod cmd;
pub mod frame;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use crate::context::Shared;
use crate::metrics::CommandLabels;
use cmd::{Kind, Session, Spec};
use frame::{FrameLimits, MAX_INLINE, Reply};

/// Commands taken off one read before their replies are written (bounds
/// the replies held per connection, and the commands of one connection in
/// flight at once: a wave has no cap of its own, since every node request
/// rides the node's pipes or waits for one of its bounded connections,
/// see [`crate::pipeline`]).
const MAX_COMMANDS_PER_ROUND: usize = 256;

/// Client ids, as `CLIENT ID` reports them.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// What a connection over `proxy.max_connections` is told before the close.
pub fn refusal(limit: u32) -> Arc<[u8]> {
    format!("-ERR max number of clients reached (the limit proxy.max_connections is {limit})\r\n").into_bytes().into()
}

/// The frame limits of a proxy's config.
pub(crate) fn frame_limits(shared: &Shared) -> FrameLimits {
    FrameLimits {
        max_bulk: shared.limits.max_value_size.max(shared.limits.max_key_size),
        max_args: 2 * shared.limits.max_batch_keys + 1,
        max_total: shared.limits.max_batch_size,
        max_inline: MAX_INLINE,
    }
}

/// Serves one RESP connection until the client closes it, sends `QUIT`,
/// sends a frame that cannot be resynchronised, or shutdown begins.
pub(crate) async fn serve<S>(shared: Arc<Shared>, io: S, peer: SocketAddr, mut stopping: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let limits = frame_limits(&shared);
    let mut session = Session {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        peer,
        name: None,
        resp3: false,
        authenticated: shared.client_token.is_none(),
        quit: false,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let (frame_timeout, idle_timeout) = (shared.config.resp_frame_timeout, shared.config.resp_idle_timeout);
    // When the partial command in `buf` must be complete.
    let mut frame_started: Option<tokio::time::Instant> = None;
    loop {
        let mut commands = Vec::new();
        let mut fatal = None;
        while commands.len() < MAX_COMMANDS_PER_ROUND {
            match frame::parse(&mut buf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => commands.push(args),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let full = commands.len() == MAX_COMMANDS_PER_ROUND;
        if !commands.is_empty() {
            frame_started = None; // what is left in `buf` is a new command
            run_round(&shared, &mut session, commands, &mut out).await;
        }
        if let Some(e) = &fatal {
            debug!(%peer, error = %e.0, "RESP protocol error; closing");
            shared.metrics.resp_errors.get_or_create(&CommandLabels { command: "protocol" }).inc();
            e.reply().encode(&mut out, session.resp3);
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
            if out.capacity() > 1 << 20 {
                out = Vec::with_capacity(16 * 1024);
            }
        }
        if fatal.is_some() || session.quit {
            let _ = wr.shutdown().await;
            return;
        }
        if full {
            // More complete commands may be in the buffer already.
            continue;
        }
        if *stopping.borrow() {
            return;
        }
        buf.reserve(16 * 1024);
        // A command begun must be finished within `proxy.resp_frame_timeout`
        // (from the read that brought its first bytes); with nothing
        // pending, `proxy.resp_idle_timeout` (0: never) bounds the wait.
        // Either way the close is silent, as Redis closes a timed-out client.
        let deadline = if buf.is_empty() {
            frame_started = None;
            (!idle_timeout.is_zero()).then(|| tokio::time::Instant::now() + idle_timeout)
        } else {
            Some(*frame_started.get_or_insert_with(|| tokio::time::Instant::now() + frame_timeout))
        };
        let read = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, rd.read_buf(&mut buf)).await,
                None => Ok(rd.read_buf(&mut buf).await),
            }
        };
        let timed_out = tokio::select! {
            n = read => match n {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => false,
                Err(_) => true,
            },
            _ = stopping.wait_for(|s| *s) => return,
        };
        if timed_out {
            let what = if buf.is_empty() { "idle" } else { "part of a command pending" };
            debug!(%peer, what, "RESP connection timed out; closing");
            shared.metrics.resp_errors.get_or_create(&CommandLabels { command: "timeout" }).inc();
            let _ = wr.shutdown().await;
            return;
        }
    }
}

/// One parsed command and how it is scheduled.
struct Planned {
    args: Vec<Bytes>,
    spec: Option<&'static Spec>,
}

/// Runs the commands of one read in waves (see the module docs) and
/// appends their replies to `out`, in order.
async fn run_round(shared: &Arc<Shared>, session: &mut Session, commands: Vec<Vec<Bytes>>, out: &mut Vec<u8>) {
    let mut wave: Vec<BoxFuture<'_, Reply>> = Vec::with_capacity(commands.len());
    // The keys of the wave, and whether a command of it writes the key: a
    // map, so a round of 256 commands of up to 2 x proxy.max_batch_keys
    // arguments each costs one lookup per key, not a scan of the wave.
    let mut wave_keys: HashMap<Bytes, bool> = HashMap::with_capacity(commands.len());
    for args in commands {
        let planned = Planned { spec: cmd::lookup(&args[0]), args };
        let data = planned.spec.filter(|s| s.kind == Kind::Read || s.kind == Kind::Write);
        let conflicts = match data {
            Some(spec) => {
                let write = spec.kind == Kind::Write;
                spec.key_args(&planned.args).any(|k| wave_keys.get(k).is_some_and(|wrote| write || *wrote))
            }
            None => true,
        };
        if conflicts && !wave.is_empty() {
            finish_wave(&mut wave, out, session.resp3).await;
            wave_keys.clear();
        }
        match (data, gate(shared, session, &planned)) {
            (_, Some(refused)) => wave.push(Box::pin(std::future::ready(refused))),
            (Some(spec), None) => {
                let write = spec.kind == Kind::Write;
                for k in spec.key_args(&planned.args) {
                    *wave_keys.entry(k.clone()).or_insert(false) |= write;
                }
                wave.push(Box::pin(run_counted(shared, spec, planned.args)));
            }
            (None, None) => {
                let reply = run_alone(shared, session, &planned).await;
                reply.encode(out, session.resp3);
                if session.quit {
                    return;
                }
            }
        }
    }
    finish_wave(&mut wave, out, session.resp3).await;
}

/// Awaits every command of the wave and appends their replies in order.
async fn finish_wave(wave: &mut Vec<BoxFuture<'_, Reply>>, out: &mut Vec<u8>, resp3: bool) {
    for reply in futures::future::join_all(wave.drain(..)).await {
        reply.encode(out, resp3);
    }
}

/// The refusal of a command before it runs: unknown, wrong arity,
/// `proxy.rate_limit`, or not authenticated. `None`: it may run.
fn gate(shared: &Shared, session: &Session, p: &Planned) -> Option<Reply> {
    let label = p.spec.map_or("unknown", |s| s.name);
    let refused = (|| {
        let Some(spec) = p.spec else { return Some(unknown(&p.args)) };
        if !spec.arity_ok(p.args.len()) {
            return Some(cmd::wrong_arity(spec.name));
        }
        if spec.name != "quit"
            && let Some(limit) = &shared.rate_limit
            && let Err(e) = limit.check(session.peer.ip())
        {
            shared.metrics.refuse("rate_limited");
            return Some(Reply::err(e));
        }
        if !session.authenticated && !matches!(spec.name, "auth" | "hello" | "quit") {
            shared.metrics.refuse("unauthorized");
            return Some(Reply::Error("NOAUTH Authentication required.".into()));
        }
        None
    })()?;
    match p.spec {
        Some(spec) => {
            let m = &shared.resp_metrics[spec.index()];
            m.commands.inc();
            m.errors.inc();
        }
        None => {
            shared.metrics.resp_commands.get_or_create(&CommandLabels { command: label }).inc();
            shared.metrics.resp_errors.get_or_create(&CommandLabels { command: label }).inc();
        }
    }
    Some(refused)
}

/// `ERR unknown command '<name>', with args beginning with: '<arg>' ...`.
fn unknown(args: &[Bytes]) -> Reply {
    let clip = |b: &Bytes| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned();
    let rest: String = args[1..].iter().take(8).map(|a| format!("'{}' ", clip(a))).collect();
    Reply::err(format!("unknown command '{}', with args beginning with: {rest}", clip(&args[0])))
}

/// A connection or server command, run on its own.
async fn run_alone(shared: &Arc<Shared>, session: &mut Session, p: &Planned) -> Reply {
    let spec = p.spec.expect("gate let only known commands through");
    if spec.kind == Kind::Server {
        return run_counted(shared, spec, &p.args).await;
    }
    let start = Instant::now();
    let reply = cmd::connection::run(shared, session, spec, &p.args);
    count(shared, spec, start, &reply);
    reply
}

/// A data or server command run, counted and timed under `spec`'s
/// command. `args` owned (a wave's command) or borrowed (`run_alone`): one
/// async fn either way, because an async block wrapped in a timing future
/// is one more future, and each is moved whole (kilobytes: the node
/// request's state is inside) when built and when boxed.
async fn run_counted(shared: &Shared, spec: &'static Spec, args: impl AsRef<[Bytes]>) -> Reply {
    let start = Instant::now();
    let reply = cmd::run_data(shared, spec, args.as_ref()).await;
    count(shared, spec, start, &reply);
    reply
}

fn count(shared: &Shared, spec: &'static Spec, start: Instant, reply: &Reply) {
    let m = &shared.resp_metrics[spec.index()];
    m.commands.inc();
    m.seconds.observe(start.elapsed().as_secs_f64());
    if reply.is_error() {
        m.errors.inc();
    }
}
