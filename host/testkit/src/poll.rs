//! Waiting for a condition with a deadline instead of sleeping a guessed
//! time: [`poll`] (until `Some`) and [`poll_until`] (until `true`).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const EVERY: Duration = Duration::from_millis(10);

/// Polls `check` every [`EVERY`] until it answers `Some`, or panics naming
/// `what` after `timeout`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(EVERY).await;
    }
}

/// Polls `check` every [`EVERY`] until it answers `true`, or panics naming
/// `what` after `timeout`.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(what, timeout, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}
