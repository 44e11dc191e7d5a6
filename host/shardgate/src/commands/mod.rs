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
/// `node`, `proxy`) run their roles on, with the stall watch beside it.
/// Keep the watch as long as the runtime.
pub fn serving_runtime() -> anyhow::Result<(tokio::runtime::Runtime, StallWatch)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    // Whole milliseconds: "2s 3ms", not "2s 3ms 214us 7ns".
    let ms = |d: Duration| Duration::from_millis(d.as_millis() as u64);
    let watch = StallWatch::start(runtime.handle().clone(), STALL_THRESHOLD, move |stall| match stall {
        Stall::Stuck { for_at_least } => tracing::warn!(
            stalled_ms = for_at_least.as_millis() as u64,
            "no task of the runtime ran for {}: every worker thread is blocked, requests get no answer until one is free",
            humantime::format_duration(ms(for_at_least))
        ),
        Stall::Recovered { lasted } => tracing::warn!(
            stalled_ms = lasted.as_millis() as u64,
            "the runtime runs tasks again after a stall of {}",
            humantime::format_duration(ms(lasted))
        ),
    })
    .context("starting the runtime's stall watch thread")?;
    Ok((runtime, watch))
}
