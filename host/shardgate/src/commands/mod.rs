//! Subcommand implementations: the binary's edge, where library errors get
//! `anyhow` context for the user.

pub mod ctl;
pub mod dev;
pub mod meta;
pub mod node;
pub mod probe;
pub mod proxy;
pub mod serve;
pub mod strategy;

use std::time::Duration;

use anyhow::Context;
use shardgate_role::stall::{Stall, StallWatch};

/// How long no task of a serving runtime may run before the stall watch
/// warns (every worker thread blocked: connections are accepted, nothing
/// is answered).
pub const STALL_THRESHOLD: Duration = Duration::from_secs(2);

/// The multi-threaded runtime the serving commands (`serve`, `dev`, `meta`,
/// `node`, `proxy`) run their roles on, the connection workers of the data
/// path beside it (one single-threaded runtime per core,
/// [`shardgate_role::workers`]), and a stall watch on each. Keep the
/// watches as long as the runtime.
pub fn serving_runtime() -> anyhow::Result<(tokio::runtime::Runtime, Vec<StallWatch>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = shardgate_role::workers::install(cores).context("starting the connection workers")?;
    let mut watches = vec![stall_watch(runtime.handle().clone(), "the runtime")?];
    for (i, handle) in workers.handles().iter().enumerate() {
        watches.push(stall_watch(handle.clone(), &format!("connection worker {i}"))?);
    }
    Ok((runtime, watches))
}

/// A stall watch on `handle` that logs under `what`.
fn stall_watch(handle: tokio::runtime::Handle, what: &str) -> anyhow::Result<StallWatch> {
    // Whole milliseconds: "2s 3ms", not "2s 3ms 214us 7ns".
    let ms = |d: Duration| Duration::from_millis(d.as_millis() as u64);
    let context = format!("starting the stall watch of {what}");
    let what = what.to_string();
    StallWatch::start(handle, STALL_THRESHOLD, move |stall| match stall {
        Stall::Stuck { for_at_least } => tracing::warn!(
            stalled_ms = for_at_least.as_millis() as u64,
            "no task of {what} ran for {}: every thread of it is blocked, its requests get no answer until one is free",
            humantime::format_duration(ms(for_at_least))
        ),
        Stall::Recovered { lasted } => tracing::warn!(
            stalled_ms = lasted.as_millis() as u64,
            "{what} runs tasks again after a stall of {}",
            humantime::format_duration(ms(lasted))
        ),
    })
    .context(context)
}
